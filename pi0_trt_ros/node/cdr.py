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

"""Read serialized sensor_msgs (Image, CompressedImage, JointState) without building rclpy messages.

rclpy's deserialization of a 640x480 frame copies its 0.9 MB into an ``array.array`` and builds
a message object per field; the node needs only a few header fields and a view of the bytes.
These parsers read the CDR that rmw hands over (a raw subscription's ``bytes``) and return
small read-only views with the same field names as the rclpy messages, the pixel or JPEG bytes
as a ``memoryview`` into the serialized buffer (no copy).

CDR (XCDR1, as rmw_fastrtps and rmw_cyclonedds write ROS 2 messages): a 4-byte encapsulation
header (byte 1 odd: little-endian, even: big-endian), then the fields in declaration order,
each primitive aligned to its size relative to the byte after the header; a string is a uint32
length that counts a terminating NUL, then its bytes; a sequence is a uint32 element count,
then its elements. Every length is checked against the buffer: a message whose fields do not
fit raises ``CdrError`` (rmw would have dropped it silently), never reads out of bounds. Bytes
after the last field are ignored, as rmw's deserializers do (serialized buffers may carry slack).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

_ORIGIN = 4  # alignment is counted from the byte after the encapsulation header
_U32 = {True: struct.Struct('<I'), False: struct.Struct('>I')}  # little-endian? -> uint32
_STAMP = {True: struct.Struct('<iI'), False: struct.Struct('>iI')}  # builtin_interfaces/Time: sec, nanosec
_F64 = {True: np.dtype('<f8'), False: np.dtype('>f8')}


class CdrError(ValueError):
    """The buffer is not a well-formed serialized message of the expected type."""


class Stamp(NamedTuple):
    """builtin_interfaces/Time."""

    sec: int
    nanosec: int


class Header(NamedTuple):
    """std_msgs/Header."""

    stamp: Stamp
    frame_id: str


class ImageView(NamedTuple):
    """sensor_msgs/Image; ``data`` views the serialized buffer (step * height bytes if consistent)."""

    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


class CompressedImageView(NamedTuple):
    """sensor_msgs/CompressedImage; ``data`` views the serialized buffer."""

    header: Header
    format: str  # noqa: A003 (the message's field name)
    data: memoryview


class JointStateView(NamedTuple):
    """sensor_msgs/JointState's names and positions (velocity and effort are checked, not kept)."""

    header: Header
    name: list[str]
    position: np.ndarray  # float64 [len(position)], read-only view of the serialized buffer


class _Reader:
    """A bounds-checked cursor over one serialized message."""

    __slots__ = ('buf', 'pos', 'end', 'little', 'u32')

    def __init__(self, raw: bytes | memoryview, what: str) -> None:
        self.buf = memoryview(raw)
        self.end = len(self.buf)
        if self.end < _ORIGIN or self.buf[0] != 0 or self.buf[1] > 1:
            raise CdrError(f'{self.end}-byte buffer has no CDR encapsulation header: not a serialized {what}')
        self.little = bool(self.buf[1] & 1)
        self.u32 = _U32[self.little]
        self.pos = _ORIGIN

    def _align(self, size: int) -> None:
        self.pos += -(self.pos - _ORIGIN) % size

    def _need(self, n: int, field: str) -> int:
        """Reserve ``n`` bytes for ``field``; return where they start."""
        start = self.pos
        if n < 0 or start + n > self.end:
            raise CdrError(f'{field}: {n} bytes at offset {start} do not fit the {self.end}-byte message (truncated '
                           'or a wrong length field)')
        self.pos = start + n
        return start

    def uint32(self, field: str) -> int:
        self._align(4)
        return self.u32.unpack_from(self.buf, self._need(4, field))[0]

    def uint8(self, field: str) -> int:
        return self.buf[self._need(1, field)]

    def string(self, field: str) -> str:
        n = self.uint32(field)
        start = self._need(n, field)
        if n and self.buf[start + n - 1] == 0:
            n -= 1  # the terminating NUL
        return bytes(self.buf[start:start + n]).decode('utf-8', errors='replace')

    def header(self) -> Header:
        self._align(4)
        sec, nanosec = _STAMP[self.little].unpack_from(self.buf, self._need(8, 'header.stamp'))
        return Header(Stamp(sec, nanosec), self.string('header.frame_id'))

    def bytes_sequence(self, field: str) -> memoryview:
        n = self.uint32(field)
        start = self._need(n, field)
        return self.buf[start:start + n]

    def string_sequence(self, field: str) -> list[str]:
        n = self.uint32(field)
        if n * 4 > self.end - self.pos:  # each string takes at least its length field
            raise CdrError(f'{field}: {n} strings do not fit the {self.end}-byte message')
        return [self.string(field) for _ in range(n)]

    def float64_sequence(self, field: str) -> np.ndarray:
        n = self.uint32(field)
        if n:
            self._align(8)
        start = self._need(8 * n, field)
        return np.frombuffer(self.buf, _F64[self.little], n, start)


def parse_image(raw: bytes | memoryview) -> ImageView:
    """Read a serialized sensor_msgs/Image; raise CdrError when malformed."""
    r = _Reader(raw, 'sensor_msgs/Image')
    header = r.header()
    height, width = r.uint32('height'), r.uint32('width')
    encoding = r.string('encoding')
    is_bigendian = r.uint8('is_bigendian')
    step = r.uint32('step')
    data = r.bytes_sequence('data')
    return ImageView(header, height, width, encoding, is_bigendian, step, data)


def parse_compressed_image(raw: bytes | memoryview) -> CompressedImageView:
    """Read a serialized sensor_msgs/CompressedImage; raise CdrError when malformed."""
    r = _Reader(raw, 'sensor_msgs/CompressedImage')
    header = r.header()
    fmt = r.string('format')
    data = r.bytes_sequence('data')
    return CompressedImageView(header, fmt, data)


def parse_joint_state(raw: bytes | memoryview) -> JointStateView:
    """Read a serialized sensor_msgs/JointState; raise CdrError when malformed."""
    r = _Reader(raw, 'sensor_msgs/JointState')
    header = r.header()
    names = r.string_sequence('name')
    position = r.float64_sequence('position')
    r.float64_sequence('velocity')
    r.float64_sequence('effort')
    return JointStateView(header, names, position)
