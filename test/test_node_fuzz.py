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

"""Fuzzing the input decoders (hypothesis): no exception escapes, nothing out of limits comes out.

Raw images, compressed images (random bytes and mutated real JPEG/PNG files), joint states and
serialized instructions, thousands of cases in all, each through the node's own decoder.
"""

import array

import cv2
from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray

from pi0_trt_ros.node.actions import CommandWriter
from pi0_trt_ros.node.images import ImageDecoder, RAW_ENCODINGS
from pi0_trt_ros.node.instruction import decode_instruction
from pi0_trt_ros.node.joints import JointPicker

H, W = 12, 16
NAMES = ['a', 'b', 'c']
LOWER, UPPER, MARGIN = [-1.0, -2.0, 0.0], [1.0, 2.0, 0.5], 0.1
FAST = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
SEEDS = [cv2.imencode('.jpg', _rgb)[1].tobytes(), cv2.imencode('.png', _rgb)[1].tobytes()]


def judged(decoder: ImageDecoder, msg: object) -> None:
    """Decode ``msg``; a used frame must leave a fully written staging image of the right size."""
    bad = decoder.decode(msg)
    assert bad is None or isinstance(bad.counter, str)
    assert decoder.dst.shape == (H, W, 3) and decoder.dst.dtype == np.uint8


@FAST
@given(encoding=st.sampled_from([*RAW_ENCODINGS, 'yuv422', '', '16UC1']), height=st.integers(0, 2 * H),
       width=st.integers(0, 2 * W), step=st.integers(0, 8 * W), data=st.binary(max_size=8 * W * 2 * H),
       bigendian=st.integers(0, 1), resize=st.booleans())
def test_raw_images(encoding: str, height: int, width: int, step: int, data: bytes, bigendian: int,
                    resize: bool) -> None:
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=bigendian)
    msg.data = array.array('B', data)
    judged(ImageDecoder(np.zeros((H, W, 3), np.uint8), 'raw', resize), msg)


@FAST
@given(data=st.binary(max_size=512), fmt=st.sampled_from(['jpeg', 'png', 'rgb8; jpeg compressed bgr8', '']))
def test_compressed_random_bytes(data: bytes, fmt: str) -> None:
    msg = CompressedImage(format=fmt)
    msg.data = array.array('B', data)
    judged(ImageDecoder(np.zeros((H, W, 3), np.uint8), 'compressed'), msg)


@FAST
@given(seed=st.sampled_from(SEEDS), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                   max_size=8), cut=st.integers(0, 64), resize=st.booleans())
def test_compressed_mutated_files(seed: bytes, flips: list, cut: int, resize: bool) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        data[pos % len(data)] = value
    msg = CompressedImage(format='png' if seed.startswith(b'\x89PNG') else 'jpeg')
    msg.data = array.array('B', bytes(data[:len(data) - cut]))
    judged(ImageDecoder(np.zeros((H, W, 3), np.uint8), 'compressed', resize), msg)


@FAST
@given(names=st.lists(st.sampled_from(NAMES + ['x', '']), max_size=5),
       positions=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5))
def test_joint_states(names: list, positions: list) -> None:
    picker = JointPicker(NAMES, LOWER, UPPER, MARGIN)
    out = np.full(3, 0.25, np.float32)
    bad = picker.pick_into(names, array.array('d', positions), out)
    if bad is None or bad.used:  # used: finite and within the limits widened by the margin
        assert np.isfinite(out).all()
        assert (out >= np.array(LOWER, np.float32) - MARGIN - 1e-6).all()
        assert (out <= np.array(UPPER, np.float32) + MARGIN + 1e-6).all()
    else:
        np.testing.assert_array_equal(out, 0.25)  # a rejected sample writes nothing


@FAST
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3))
def test_every_command_is_finite_and_within_the_limits(values: list) -> None:
    sent: list = []
    writer = CommandWriter(LOWER, UPPER, NAMES, 2, 50.0, sent.append, sent.append)
    if writer.command(np.array(values)):
        command = np.array(deserialize_message(sent[0], Float64MultiArray).data)
        assert np.isfinite(command).all() and (command >= LOWER).all() and (command <= UPPER).all()
    else:
        assert sent == [] and not np.isfinite(values).all()


@FAST
@given(raw=st.binary(max_size=64) | st.builds(
    lambda n, body: b'\x00\x01\x00\x00' + n.to_bytes(4, 'little') + body,  # a CDR string with any length field
    st.integers(0, 2**32 - 1), st.binary(max_size=40)))
def test_instructions(raw: bytes) -> None:
    try:
        text = decode_instruction(raw)
    except (UnicodeDecodeError, ValueError):
        return
    assert isinstance(text, str) and '\x00' not in text[-1:]
