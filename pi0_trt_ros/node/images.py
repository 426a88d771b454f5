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

"""Decode camera messages into a preallocated RGB staging view.

``ImageDecoder`` is bound to one camera's staging image (uint8 [H, W, 3], RGB, the runner's
buffer). It works in three steps, so that the node rejects a bad frame when it arrives (before it
takes part in synchronization), does the costly work while it waits for the rest of the set, and
only copies when the set is staged:

* ``check(msg)``: header and byte-level validation, no pixel work, nothing written.
* ``prepare(msg)``: on arrival, after ``check`` passed: what the synchronizer keeps for the frame
  until it is staged. A raw frame: the message itself (its bytes are converted in one pass at
  staging). A compressed frame: decoded now, to RGB at the staging size; one that does not decode
  is rejected here.
* ``write(frame)``: a prepared frame into staging, in one pass; it cannot fail.

``decode(msg)`` does all three. Formats:

* ``sensor_msgs/Image``: encodings rgb8, bgr8, rgba8, bgra8, mono8. The message bytes are viewed
  in place (no copy) with the row stride ``step``, so padded rows are read by striding, and
  converted by ``cv2.cvtColor(..., dst=staging)`` (rgb8: one ``np.copyto``).
* ``sensor_msgs/CompressedImage``: JPEG or PNG (``format`` as image_transport writes it, e.g.
  ``"rgb8; jpeg compressed bgr8"``, checked against the data's magic bytes and end marker),
  decoded with ``cv2.imdecode(..., IMREAD_COLOR_RGB)`` (which releases the GIL). OpenCV 5's
  ``imdecode`` takes no ``dst``, so each frame is decoded into a frame of its own, copied into
  staging by ``write``. ``check`` reads the size from the JPEG/PNG header (``image_header``)
  first: a frame whose header is unreadable or not the expected size is rejected before any
  decoding (decompression bombs).

A frame whose size differs from the staging size is a bad input unless ``resize_mismatched`` is
on; then it is resized with ``cv2.INTER_AREA`` (aspect ratio not kept: better export the policy
for the real camera size). Even then a frame more than ``MAX_RESIZE_FACTOR`` times the staging
size per side is rejected, and scratch frames are kept for at most ``MAX_SCRATCH_SIZES`` distinct
sizes (least recently used dropped first). ``is_bigendian`` has no meaning for 8-bit data: such
frames are used and reported.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import cv2
import numpy as np

from pi0_trt_ros.node.faults import BadInput
from pi0_trt_ros.node.image_header import jpeg_size, PNG_MAGIC, png_size

# encoding -> (channels, cv2 conversion code to RGB; None: already RGB, plain copy)
RAW_ENCODINGS: dict[str, tuple[int, int | None]] = {
    'rgb8': (3, None),
    'bgr8': (3, cv2.COLOR_BGR2RGB),
    'rgba8': (4, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, cv2.COLOR_BGRA2RGB),
    'mono8': (1, cv2.COLOR_GRAY2RGB),
}
TRANSPORTS = ('raw', 'compressed')
MAX_RESIZE_FACTOR = 4  # resize_mismatched: largest accepted frame side, in multiples of the staging side
MAX_SCRATCH_SIZES = 4  # resize_mismatched: distinct frame sizes whose scratch frame is kept


class ImageDecoder:
    """Writes one camera's frames into its staging image ``dst`` (uint8 [H, W, 3], RGB)."""

    def __init__(self, dst: np.ndarray, transport: str = 'raw', resize_mismatched: bool = False) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f'transport must be one of {TRANSPORTS}, got {transport!r}')
        if dst.dtype != np.uint8 or dst.ndim != 3 or dst.shape[2] != 3 or not dst.flags.c_contiguous:
            raise ValueError(f'dst must be a C-contiguous uint8 [H, W, 3] array, got {dst.dtype} {dst.shape}')
        self.dst = dst
        self.height, self.width = int(dst.shape[0]), int(dst.shape[1])
        self.transport = transport
        self.resize_mismatched = resize_mismatched
        self._scratch: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # (h, w) -> RGB [h, w, 3], LRU

    def decode(self, msg: Any) -> BadInput | None:
        """``check``, ``prepare`` then ``write``: the first rejection, else the first note, else None."""
        bad = self.check(msg)
        if bad is not None and not bad.used:
            return bad
        frame, failed = self.prepare(msg)
        if failed is not None:
            return failed
        self.write(frame)
        return bad

    def check(self, msg: Any) -> BadInput | None:
        """Validate ``msg`` without touching pixels or staging.

        Returns None when clean, a BadInput with ``used=False`` when the frame must be dropped, or
        ``used=True`` when it will be staged but is noteworthy (padding, big-endian flag, resize).
        """
        if self.transport == 'raw':
            return self._check_raw(msg)
        return self._check_compressed(msg)

    def prepare(self, msg: Any) -> tuple[Any, BadInput | None]:
        """Return what ``write`` will stage for a frame that passed ``check``, or (None, why it cannot be used).

        Raw: the message (nothing done yet, cannot fail). Compressed: the frame decoded now, RGB
        uint8 [H, W, 3] at the staging size (resized if ``check`` allowed it); rejected when the
        data does not decode or decodes to another size than its header said.
        """
        if self.transport == 'raw':
            return msg, None
        return self._decode_compressed(msg)

    def write(self, frame: Any) -> None:
        """Write a prepared frame into staging (one pass; a compressed frame was decoded by ``prepare``)."""
        if self.transport == 'raw':
            self._write_raw(frame)
        else:
            np.copyto(self.dst, frame)

    # -- sensor_msgs/Image ---------------------------------------------------------------------
    def _check_raw(self, msg: Any) -> BadInput | None:
        spec = RAW_ENCODINGS.get(msg.encoding)
        if spec is None:
            return BadInput('image_encoding', f'unsupported encoding {msg.encoding!r}; '
                            f'supported: {", ".join(RAW_ENCODINGS)} (or use a compressed jpeg/png topic)')
        channels = spec[0]
        h, w, step = msg.height, msg.width, msg.step
        if h == 0 or w == 0:
            return BadInput('image_size', f'empty image {w}x{h}')
        wrong_size = self._check_size(w, h)
        if wrong_size is not None:
            return wrong_size
        mismatched = h != self.height or w != self.width
        row = w * channels
        if step < row:
            return BadInput('image_step', f'step {step} < width*channels = {row} for {msg.encoding}')
        need = step * h
        n = len(msg.data)
        if n < need:
            return BadInput('image_truncated', f'data has {n} bytes, step*height = {need} (truncated)')
        if n > need:
            return BadInput('image_data_length', f'data has {n} bytes, step*height = {need} (inconsistent header)')
        if mismatched:
            return BadInput('image_resized', f'frame {w}x{h} resized to {self.width}x{self.height}', used=True)
        if step != row:
            return BadInput('image_row_padding', f'rows padded: step {step} > width*channels {row} '
                            '(read with strides)', used=True)
        if msg.is_bigendian:
            return BadInput('image_big_endian', f'is_bigendian set on 8-bit {msg.encoding} data '
                            '(no byte order to swap)', used=True)
        return None

    def _write_raw(self, msg: Any) -> None:
        channels, code = RAW_ENCODINGS[msg.encoding]
        h, w, step = msg.height, msg.width, msg.step
        # View the message bytes in place: rows `step` apart, pixels `channels` apart.
        if channels == 1:
            src = np.ndarray((h, w), np.uint8, buffer=msg.data, strides=(step, 1))
        else:
            src = np.ndarray((h, w, channels), np.uint8, buffer=msg.data, strides=(step, channels, 1))
        mismatched = h != self.height or w != self.width
        target = self._scratch_for(h, w) if mismatched else self.dst
        if code is None:
            np.copyto(target, src)
        else:
            cv2.cvtColor(src, code, dst=target)
        if mismatched:
            cv2.resize(target, (self.width, self.height), dst=self.dst, interpolation=cv2.INTER_AREA)

    def _check_size(self, w: int, h: int) -> BadInput | None:
        """Reject a frame that is not the staging size, unless it may be resized (bounded)."""
        if h == self.height and w == self.width:
            return None
        if not self.resize_mismatched:
            return BadInput('image_size', f'frame is {w}x{h}, expected {self.width}x{self.height} (the size the '
                            'policy was exported for); set resize_mismatched: true to resize')
        if w > MAX_RESIZE_FACTOR * self.width or h > MAX_RESIZE_FACTOR * self.height:
            return BadInput('image_size', f'frame is {w}x{h}, more than {MAX_RESIZE_FACTOR}x the expected '
                            f'{self.width}x{self.height} per side: not resized')
        return None

    def _scratch_for(self, h: int, w: int) -> np.ndarray:
        """Return the RGB [h, w, 3] frame reused for mismatched frames of that size (LRU-bounded)."""
        buf = self._scratch.get((h, w))
        if buf is None:
            if len(self._scratch) >= MAX_SCRATCH_SIZES:
                self._scratch.popitem(last=False)
            buf = self._scratch[(h, w)] = np.empty((h, w, 3), np.uint8)
        else:
            self._scratch.move_to_end((h, w))
        return buf

    # -- sensor_msgs/CompressedImage -----------------------------------------------------------
    def _check_compressed(self, msg: Any) -> BadInput | None:
        data = msg.data
        n = len(data)
        if n < 8:
            return BadInput('image_truncated', f'compressed data has only {n} bytes')
        if data[0] == 0xFF and data[1] == 0xD8:
            kind = 'jpeg'
            complete = data[n - 2] == 0xFF and data[n - 1] == 0xD9  # EOI marker
        elif bytes(data[:8]) == PNG_MAGIC:
            kind = 'png'
            complete = bytes(data[n - 8:n - 4]) == b'IEND'
        else:
            return BadInput('image_encoding', f'compressed data is neither JPEG nor PNG (format {msg.format!r})')
        declared = msg.format.lower()
        if ('png' in declared and kind != 'png') or (('jpeg' in declared or 'jpg' in declared) and kind != 'jpeg'):
            return BadInput('image_encoding', f'format {msg.format!r} but the data is {kind}')
        if not complete:
            return BadInput('image_truncated', f'{kind} data of {n} bytes ends before its end marker (truncated)')
        size = jpeg_size(data) if kind == 'jpeg' else png_size(data)
        if size is None:
            return BadInput('image_header', f'no readable {kind} header (size unknown): not decoded')
        wrong_size = self._check_size(*size)
        if wrong_size is not None:
            return wrong_size._replace(detail=f'{kind} header: {wrong_size.detail}; not decoded')
        if size != (self.width, self.height):
            return BadInput('image_resized', f'frame {size[0]}x{size[1]} resized to {self.width}x{self.height}',
                            used=True)
        return None

    def _decode_compressed(self, msg: Any) -> tuple[np.ndarray | None, BadInput | None]:
        try:
            frame = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR_RGB)
        except cv2.error as err:
            frame, why = None, f' ({str(err).strip().splitlines()[-1]})'
        else:
            why = ''
        if frame is None:
            return None, BadInput('image_decode', f'cv2.imdecode could not decode {len(msg.data)} bytes '
                                  f'({msg.format!r}){why}')
        h, w = frame.shape[:2]
        if h == self.height and w == self.width:
            return frame, None
        wrong_size = self._check_size(w, h)
        if wrong_size is not None:  # the header said otherwise (several frames in one file?)
            return None, wrong_size
        return cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA), None  # check() noted it
