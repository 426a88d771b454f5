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

"""The node's CDR parsers read what rclpy serializes exactly as rclpy deserializes it, and refuse the rest.

Messages are built as rclpy messages, serialized by ``rclpy.serialization.serialize_message``
(the bytes a raw subscription receives), parsed by ``node/cdr.py`` and compared field by field
with ``deserialize_message`` of the same bytes. Truncated buffers and random bytes must raise
``CdrError`` and nothing else.
"""

import array
import os

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState

from pi0_trt_ros.node.cdr import CdrError, parse_compressed_image, parse_image, parse_joint_state
from pi0_trt_ros.testing.dds import domain_id

DOMAIN_ID = domain_id(95)  # no DDS traffic here, but the module keeps a domain of its own
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'

texts = st.text(alphabet=st.characters(codec='utf-8', exclude_characters='\x00'), max_size=12)
stamps = st.tuples(st.integers(-2 ** 31, 2 ** 31 - 1), st.integers(0, 2 ** 32 - 1))
floats = st.floats(allow_nan=False, width=64)


def _header(msg, stamp: tuple[int, int], frame_id: str) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id


def _same_header(view, msg) -> None:
    assert (view.header.stamp.sec, view.header.stamp.nanosec) == (msg.header.stamp.sec, msg.header.stamp.nanosec)
    assert view.header.frame_id == msg.header.frame_id


@settings(max_examples=300, deadline=None)
@given(stamp=stamps, frame_id=texts, height=st.integers(0, 2 ** 32 - 1), width=st.integers(0, 2 ** 32 - 1),
       encoding=texts, bigendian=st.integers(0, 255), step=st.integers(0, 2 ** 32 - 1), data=st.binary(max_size=70))
def test_image_matches_rclpy(stamp, frame_id, height, width, encoding, bigendian, step, data) -> None:
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=step)
    _header(msg, stamp, frame_id)
    msg.data = array.array('B', data)
    raw = serialize_message(msg)
    view, ref = parse_image(raw), deserialize_message(raw, Image)
    _same_header(view, ref)
    assert (view.height, view.width, view.encoding, view.is_bigendian, view.step) == \
        (ref.height, ref.width, ref.encoding, ref.is_bigendian, ref.step)
    assert bytes(view.data) == bytes(ref.data) == data


@settings(max_examples=300, deadline=None)
@given(stamp=stamps, frame_id=texts, fmt=texts, data=st.binary(max_size=70))
def test_compressed_image_matches_rclpy(stamp, frame_id, fmt, data) -> None:
    msg = CompressedImage(format=fmt)
    _header(msg, stamp, frame_id)
    msg.data = array.array('B', data)
    raw = serialize_message(msg)
    view, ref = parse_compressed_image(raw), deserialize_message(raw, CompressedImage)
    _same_header(view, ref)
    assert view.format == ref.format
    assert bytes(view.data) == bytes(ref.data) == data


@settings(max_examples=300, deadline=None)
@given(stamp=stamps, frame_id=texts, names=st.lists(texts, max_size=8), position=st.lists(floats, max_size=8),
       velocity=st.lists(floats, max_size=3), effort=st.lists(floats, max_size=3))
def test_joint_state_matches_rclpy(stamp, frame_id, names, position, velocity, effort) -> None:
    msg = JointState(name=names, position=position, velocity=velocity, effort=effort)
    _header(msg, stamp, frame_id)
    raw = serialize_message(msg)
    view, ref = parse_joint_state(raw), deserialize_message(raw, JointState)
    _same_header(view, ref)
    assert view.name == list(ref.name)
    np.testing.assert_array_equal(view.position, np.asarray(ref.position, np.float64))


def test_a_full_frame_is_viewed_in_place() -> None:
    msg = Image(height=480, width=640, encoding='bgr8', step=640 * 3)
    msg.data = array.array('B', np.random.default_rng(0).integers(0, 256, 480 * 640 * 3, np.uint8).tobytes())
    raw = serialize_message(msg)
    view = parse_image(raw)
    assert view.data.obj is raw  # a view of the received buffer, not a copy
    assert bytes(view.data) == msg.data.tobytes()


@pytest.mark.parametrize('parse,msg', [
    (parse_image, Image(height=2, width=2, encoding='mono8', step=2, data=array.array('B', b'abcd'))),
    (parse_compressed_image, CompressedImage(format='jpeg', data=array.array('B', b'\xff\xd8\xff\xd9'))),
    (parse_joint_state, JointState(name=['a', 'b'], position=[1.0, 2.0], velocity=[0.5], effort=[0.25])),
])
def test_every_truncation_is_refused(parse, msg) -> None:
    raw = serialize_message(msg)
    whole = parse(raw)
    # The shortest prefix that parses holds every field; any shorter one is refused.
    fits = [n for n in range(len(raw) + 1) if _parses(parse, raw[:n])]
    assert fits == list(range(fits[0], len(raw) + 1))
    assert len(raw) - fits[0] < 8  # at most alignment slack after the last field
    assert _plain(parse(raw[:fits[0]])) == _plain(whole)


def _plain(view) -> list:
    """Return the view's fields with buffers as bytes and arrays as lists (comparable by value)."""
    return [bytes(f) if isinstance(f, memoryview) else f.tolist() if isinstance(f, np.ndarray) else f for f in view]


def _parses(parse, raw: bytes) -> bool:
    try:
        parse(raw)
    except CdrError:
        return False
    return True


def test_a_length_field_beyond_the_buffer_is_refused() -> None:
    msg = Image(height=1, width=4, encoding='mono8', step=4, data=array.array('B', b'abcd'))
    raw = bytearray(serialize_message(msg))
    length_at = len(raw) - 8  # the data length field precedes the 4 bytes of data
    assert int.from_bytes(raw[length_at:length_at + 4], 'little') == 4
    raw[length_at:length_at + 4] = (1 << 31).to_bytes(4, 'little')
    with pytest.raises(CdrError, match='data'):
        parse_image(bytes(raw))


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=96))
def test_random_bytes_raise_only_cdr_error(raw: bytes) -> None:
    for parse in (parse_image, parse_compressed_image, parse_joint_state):
        try:
            parse(raw)
        except CdrError:
            pass
