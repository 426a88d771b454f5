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

"""Image dimensions read from a JPEG or PNG header, without decoding.

A compressed frame of a few hundred bytes can claim 65000x65000 pixels; decoding it first would
allocate gigabytes (a decompression bomb). The node reads the size from the header (a JPEG's
SOF segment, a PNG's IHDR chunk), rejects frames that are not the expected size, and decodes
only the rest. Both parsers only index bytes (no slicing copies) and give up on anything they do
not understand: None means "no readable header", never an exception.
"""

from __future__ import annotations

from typing import Sequence

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# Start-of-frame markers carry the frame size: every SOFn except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM and RSTn: no length field
_JPEG_SOS = 0xDA  # start of scan: entropy-coded data follows, no SOF can come after it
_MAX_JPEG_SEGMENTS = 64  # a real header has ~10 segments; bounds the work on crafted data


def jpeg_size(data: Sequence[int]) -> tuple[int, int] | None:
    """Return (width, height) from the first SOF segment of JPEG ``data``, or None.

    Walks the marker segments from the SOI: each is 0xFF, a marker byte (fill 0xFF bytes
    allowed), and for most markers a big-endian length that includes itself. Stops at the
    first SOF (precision, height, width follow its length) or at SOS / the end (None).
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        if i + 1 >= n or data[i] != 0xFF:
            return None
        while i + 1 < n and data[i + 1] == 0xFF:  # fill bytes before the marker
            i += 1
        if i + 1 >= n:
            return None
        marker = data[i + 1]
        i += 2
        if marker in _JPEG_STANDALONE:
            continue
        if marker == _JPEG_SOS or marker == 0xD9 or i + 1 >= n:
            return None
        length = (data[i] << 8) | data[i + 1]
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if length < 8 or i + 6 >= n:
                return None
            height = (data[i + 3] << 8) | data[i + 4]
            width = (data[i + 5] << 8) | data[i + 6]
            return width, height
        i += length
    return None


def png_size(data: Sequence[int]) -> tuple[int, int] | None:
    """Return (width, height) from the IHDR chunk of PNG ``data`` (the first chunk), or None."""
    if len(data) < 24:
        return None
    for k, byte in enumerate(PNG_MAGIC):
        if data[k] != byte:
            return None
    if (data[12], data[13], data[14], data[15]) != (0x49, 0x48, 0x44, 0x52):  # b'IHDR'
        return None
    width = (data[16] << 24) | (data[17] << 16) | (data[18] << 8) | data[19]
    height = (data[20] << 24) | (data[21] << 16) | (data[22] << 8) | data[23]
    return width, height
