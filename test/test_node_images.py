# Copyright 2026 The pi0_trt_ros Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""ImageDecoder: every supported encoding into RGB staging, and every bad frame rejected or noted."""

import array
import tracemalloc

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from pi0_trt_ros.node.image_header import jpeg_size, PNG_MAGIC, png_size
from pi0_trt_ros.node.images import ImageDecoder, MAX_SCRATCH_SIZES, RAW_ENCODINGS

H, W = 48, 64


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def raw_msg(pixels: np.ndarray, encoding: str, pad: int = 0, fill: int = 0xAB) -> Image:
    """Build an Image of ``pixels`` ([h, w, c] or [h, w]) with ``pad`` garbage bytes after every row."""
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    padded = np.full((h, rows.shape[1] + pad), fill, np.uint8)
    padded[:, :rows.shape[1]] = rows
    msg = Image(height=h, width=w, encoding=encoding, step=padded.shape[1])
    msg.data = array.array('B', padded.tobytes())
    return msg


def as_encoding(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixels in ``encoding``, the RGB frame the decoder must produce from them)."""
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    if encoding == 'rgb8':
        return rgb, rgb
    if encoding == 'bgr8':
        return rgb[..., ::-1].copy(), rgb
    if encoding == 'rgba8':
        return np.concatenate([rgb, alpha], axis=2), rgb
    if encoding == 'bgra8':
        return np.concatenate([rgb[..., ::-1], alpha], axis=2), rgb
    gray = rgb[..., 0].copy()
    return gray, np.repeat(gray[..., None], 3, axis=2)


def compressed_msg(rgb: np.ndarray, ext: str, fmt: str | None = None) -> CompressedImage:
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]))  # cv2 encodes BGR
    assert ok
    msg = CompressedImage(format=fmt if fmt is not None else f'rgb8; {ext[1:]} compressed bgr8')
    msg.data = array.array('B', buf.tobytes())
    return msg


@pytest.mark.parametrize('encoding', sorted(RAW_ENCODINGS))
def test_every_raw_encoding_decodes_to_rgb_in_place(rgb: np.ndarray, encoding: str) -> None:
    staging = np.zeros((H, W, 3), np.uint8)
    pixels, expected = as_encoding(rgb, encoding)
    assert ImageDecoder(staging).decode(raw_msg(pixels, encoding)) is None
    np.testing.assert_array_equal(staging, expected)


@pytest.mark.parametrize('encoding', sorted(RAW_ENCODINGS))
def test_row_padding_is_read_by_striding_and_reported(rgb: np.ndarray, encoding: str) -> None:
    staging = np.zeros((H, W, 3), np.uint8)
    pixels, expected = as_encoding(rgb, encoding)
    bad = ImageDecoder(staging).decode(raw_msg(pixels, encoding, pad=13))
    assert bad is not None and bad.used and bad.counter == 'image_row_padding'
    np.testing.assert_array_equal(staging, expected)


def test_big_endian_flag_on_8_bit_data_is_used_and_reported(rgb: np.ndarray) -> None:
    staging = np.zeros((H, W, 3), np.uint8)
    msg = raw_msg(rgb, 'rgb8')
    msg.is_bigendian = 1
    bad = ImageDecoder(staging).decode(msg)
    assert bad is not None and bad.used and bad.counter == 'image_big_endian'
    np.testing.assert_array_equal(staging, rgb)


@pytest.mark.parametrize('encoding', ['yuv422', '16UC1', 'rgb16', '32FC1', 'bayer_rggb8', ''])
def test_unsupported_encoding_is_rejected_without_touching_staging(rgb: np.ndarray, encoding: str) -> None:
    staging = np.full((H, W, 3), 7, np.uint8)
    msg = raw_msg(rgb, 'rgb8')
    msg.encoding = encoding
    bad = ImageDecoder(staging).decode(msg)
    assert bad is not None and not bad.used and bad.counter == 'image_encoding'
    assert 'rgb8' in bad.detail  # says what is supported
    assert (staging == 7).all()


def test_wrong_size_is_rejected_unless_resizing_is_on(rgb: np.ndarray) -> None:
    staging = np.full((H, W, 3), 7, np.uint8)
    big = cv2.resize(rgb, (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST)
    bad = ImageDecoder(staging).decode(raw_msg(big, 'rgb8'))
    assert bad is not None and not bad.used and bad.counter == 'image_size'
    assert f'{2 * W}x{2 * H}' in bad.detail and f'{W}x{H}' in bad.detail and 'resize_mismatched' in bad.detail
    assert (staging == 7).all()
    bad = ImageDecoder(staging, resize_mismatched=True).decode(raw_msg(big[..., ::-1].copy(), 'bgr8'))
    assert bad is not None and bad.used and bad.counter == 'image_resized'
    np.testing.assert_array_equal(staging, cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA))


def test_truncated_and_overlong_data_are_rejected(rgb: np.ndarray) -> None:
    staging = np.full((H, W, 3), 7, np.uint8)
    decoder = ImageDecoder(staging)
    msg = raw_msg(rgb, 'rgb8')
    msg.data = msg.data[:-1]
    bad = decoder.decode(msg)
    assert bad is not None and bad.counter == 'image_truncated' and not bad.used
    msg = raw_msg(rgb, 'rgb8')
    msg.data.extend(b'\x00' * 5)
    bad = decoder.decode(msg)
    assert bad is not None and bad.counter == 'image_data_length' and not bad.used
    assert (staging == 7).all()


def test_step_smaller_than_a_row_is_rejected(rgb: np.ndarray) -> None:
    staging = np.zeros((H, W, 3), np.uint8)
    msg = raw_msg(rgb, 'rgb8')
    msg.step = W * 3 - 1
    bad = ImageDecoder(staging).decode(msg)
    assert bad is not None and bad.counter == 'image_step' and not bad.used


def test_empty_image_is_rejected(rgb: np.ndarray) -> None:
    msg = Image(height=0, width=0, encoding='rgb8', step=0)
    bad = ImageDecoder(np.zeros((H, W, 3), np.uint8)).decode(msg)
    assert bad is not None and bad.counter == 'image_size'


def test_check_validates_without_writing(rgb: np.ndarray) -> None:
    staging = np.full((H, W, 3), 7, np.uint8)
    decoder = ImageDecoder(staging)
    msg = raw_msg(rgb, 'rgb8')
    assert decoder.check(msg) is None
    assert (staging == 7).all()
    decoder.write(msg)
    np.testing.assert_array_equal(staging, rgb)


def test_png_is_decoded_exactly_and_jpeg_closely(rgb: np.ndarray) -> None:
    staging = np.zeros((H, W, 3), np.uint8)
    decoder = ImageDecoder(staging, 'compressed')
    assert decoder.decode(compressed_msg(rgb, '.png')) is None
    np.testing.assert_array_equal(staging, rgb)
    smooth = cv2.GaussianBlur(rgb, (9, 9), 3)
    assert decoder.decode(compressed_msg(smooth, '.jpg', fmt='jpeg')) is None
    assert np.abs(staging.astype(int) - smooth).mean() < 4.0
    # channel order survives: a pure red frame stays red
    red = np.zeros_like(rgb)
    red[..., 0] = 255
    assert decoder.decode(compressed_msg(red, '.png', fmt='')) is None
    assert (staging[..., 0] == 255).all() and (staging[..., 1:] == 0).all()


def test_mono_jpeg_becomes_three_equal_channels(rgb: np.ndarray) -> None:
    staging = np.zeros((H, W, 3), np.uint8)
    gray = cv2.GaussianBlur(rgb[..., 0], (9, 9), 3)
    ok, buf = cv2.imencode('.jpg', gray)
    msg = CompressedImage(format='mono8; jpeg compressed mono8')
    msg.data = array.array('B', buf.tobytes())
    assert ImageDecoder(staging, 'compressed').decode(msg) is None
    assert (staging[..., 0] == staging[..., 1]).all() and (staging[..., 1] == staging[..., 2]).all()


@pytest.mark.parametrize('ext', ['.jpg', '.png'])
def test_truncated_compressed_data_is_rejected(rgb: np.ndarray, ext: str) -> None:
    staging = np.full((H, W, 3), 7, np.uint8)
    msg = compressed_msg(rgb, ext)
    msg.data = msg.data[:len(msg.data) // 2]
    bad = ImageDecoder(staging, 'compressed').decode(msg)
    assert bad is not None and bad.counter == 'image_truncated' and not bad.used
    assert (staging == 7).all()


def test_compressed_format_and_data_must_agree(rgb: np.ndarray) -> None:
    decoder = ImageDecoder(np.zeros((H, W, 3), np.uint8), 'compressed')
    bad = decoder.decode(compressed_msg(rgb, '.png', fmt='rgb8; jpeg compressed bgr8'))
    assert bad is not None and bad.counter == 'image_encoding' and 'png' in bad.detail
    msg = CompressedImage(format='jpeg')
    msg.data = array.array('B', b'GIF89a' + bytes(100))
    bad = decoder.decode(msg)
    assert bad is not None and bad.counter == 'image_encoding'


def test_corrupt_jpeg_with_valid_markers_fails_to_decode(rgb: np.ndarray) -> None:
    staging = np.full((H, W, 3), 7, np.uint8)
    header = bytes(compressed_msg(rgb, '.jpg').data)
    msg = CompressedImage(format='jpeg')  # a real header (right size), garbage entropy-coded data
    msg.data = array.array('B', header[:header.index(b'\xff\xda')] + bytes(range(256)) * 4 + b'\xff\xd9')
    decoder = ImageDecoder(staging, 'compressed')
    assert decoder.check(msg) is None  # passes the header check: only decoding can tell
    frame, bad = decoder.prepare(msg)
    assert frame is None and bad is not None and bad.counter == 'image_decode' and not bad.used
    assert (staging == 7).all()


def test_jpeg_without_a_readable_header_is_rejected_before_decoding() -> None:
    msg = CompressedImage(format='jpeg')
    msg.data = array.array('B', b'\xff\xd8' + bytes(range(256)) * 4 + b'\xff\xd9')
    bad = ImageDecoder(np.zeros((H, W, 3), np.uint8), 'compressed').check(msg)
    assert bad is not None and bad.counter == 'image_header' and not bad.used


def test_header_parsers_read_the_encoded_size(rgb: np.ndarray) -> None:
    for ext, parse in (('.jpg', jpeg_size), ('.png', png_size)):
        data = bytes(compressed_msg(rgb, ext).data)
        assert parse(data) == (W, H)
        for cut in range(0, 40):  # any prefix: a size or None, never an exception
            assert parse(data[:cut]) in (None, (W, H))
    assert jpeg_size(b'\xff\xd8\xff\xda\x00\x02') is None and png_size(b'GIF89a' + bytes(30)) is None


def bomb(kind: str, width: int, height: int) -> CompressedImage:
    """Build a few hundred bytes whose header claims ``width`` x ``height`` pixels."""
    msg = CompressedImage(format=kind)
    if kind == 'jpeg':
        sof = b'\xff\xc0\x00\x11\x08' + height.to_bytes(2, 'big') + width.to_bytes(2, 'big') + b'\x03' + bytes(9)
        msg.data = array.array('B', b'\xff\xd8\xff\xe0\x00\x10JFIF\x00' + bytes(9) + sof + bytes(600) + b'\xff\xd9')
    else:
        ihdr = b'\x00\x00\x00\x0dIHDR' + width.to_bytes(4, 'big') + height.to_bytes(4, 'big') + b'\x08\x02' + bytes(7)
        msg.data = array.array('B', PNG_MAGIC + ihdr + bytes(600) + b'IEND\xaeB`\x82')
    return msg


@pytest.mark.parametrize('kind', ['jpeg', 'png'])
@pytest.mark.parametrize('side', [20000, 65000])
def test_decompression_bomb_is_rejected_from_its_header(kind: str, side: int) -> None:
    staging = np.full((H, W, 3), 7, np.uint8)
    for resize in (False, True):  # resizing accepts other sizes, but not absurd ones
        decoder = ImageDecoder(staging, 'compressed', resize_mismatched=resize)
        msg = bomb(kind, side, side)
        tracemalloc.start()
        try:
            bad = decoder.check(msg)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert bad is not None and bad.counter == 'image_size' and not bad.used, bad
        assert f'{side}x{side}' in bad.detail and 'not decoded' in bad.detail
        assert peak < 64 * 1024  # nothing of the claimed size was allocated
    assert (staging == 7).all()


def test_resize_scratch_frames_are_bounded(rgb: np.ndarray) -> None:
    staging = np.zeros((H, W, 3), np.uint8)
    decoder = ImageDecoder(staging, resize_mismatched=True)
    for k in range(3 * MAX_SCRATCH_SIZES):
        frame = cv2.resize(rgb, (W + 2 * k + 2, H + k + 1))
        assert decoder.decode(raw_msg(frame, 'rgb8')).counter == 'image_resized'
        np.testing.assert_array_equal(staging, cv2.resize(frame, (W, H), interpolation=cv2.INTER_AREA))
    assert len(decoder._scratch) == MAX_SCRATCH_SIZES


def test_compressed_wrong_size_is_rejected_unless_resizing_is_on(rgb: np.ndarray) -> None:
    staging = np.full((H, W, 3), 7, np.uint8)
    small = cv2.resize(rgb, (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
    msg = compressed_msg(small, '.png')
    bad = ImageDecoder(staging, 'compressed').decode(msg)
    assert bad is not None and bad.counter == 'image_size' and not bad.used
    assert (staging == 7).all()
    bad = ImageDecoder(staging, 'compressed', resize_mismatched=True).decode(msg)
    assert bad is not None and bad.counter == 'image_resized' and bad.used
    np.testing.assert_array_equal(staging, cv2.resize(small, (W, H), interpolation=cv2.INTER_AREA))


def test_raw_decode_allocates_no_frame_buffer() -> None:
    """A 640x480 bgr8 frame is converted into staging with no numpy allocation of its size."""
    staging = np.zeros((480, 640, 3), np.uint8)
    decoder = ImageDecoder(staging)
    msg = raw_msg(np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8), 'bgr8', pad=64)
    decoder.decode(msg)  # warm caches
    tracemalloc.start()
    try:
        for _ in range(5):
            decoder.decode(msg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f'peak {peak} bytes traced while decoding'


def test_bad_construction_arguments_raise() -> None:
    with pytest.raises(ValueError, match='transport must be one of'):
        ImageDecoder(np.zeros((H, W, 3), np.uint8), 'theora')
    with pytest.raises(ValueError, match='C-contiguous uint8'):
        ImageDecoder(np.zeros((H, W, 3), np.float32))
    with pytest.raises(ValueError, match='C-contiguous uint8'):
        ImageDecoder(np.zeros((H, W * 2, 3), np.uint8)[:, ::2])


def test_a_compressed_frame_is_decoded_when_prepared_and_staging_only_copies_it(rgb: np.ndarray) -> None:
    staging = np.full((H, W, 3), 7, np.uint8)
    decoder = ImageDecoder(staging, 'compressed')
    msg = compressed_msg(rgb, '.png')  # lossless: staging must equal the picture
    frame, bad = decoder.prepare(msg)
    assert bad is None and frame.shape == (H, W, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, rgb)  # decoded on arrival, RGB, staging untouched so far
    assert (staging == 7).all()
    msg.data = array.array('B', bytes(len(msg.data)))  # the message may go: the frame is what gets staged
    decoder.write(frame)
    np.testing.assert_array_equal(staging, rgb)


def test_a_raw_frame_is_prepared_as_is_and_converted_when_written(rgb: np.ndarray) -> None:
    staging = np.full((H, W, 3), 7, np.uint8)
    decoder = ImageDecoder(staging)
    msg = raw_msg(rgb, 'bgr8')
    frame, bad = decoder.prepare(msg)
    assert frame is msg and bad is None and (staging == 7).all()  # one pass, at staging
    decoder.write(frame)
    np.testing.assert_array_equal(staging, rgb[..., ::-1])
