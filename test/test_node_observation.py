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

"""ObservationPipeline: every input rule on real sensor_msgs messages, with injected times, no DDS."""

import array
import dataclasses
from typing import Any

import cv2
import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState

from pi0_trt_ros.node.faults import FaultCounters
from pi0_trt_ros.node.images import ImageDecoder
from pi0_trt_ros.node.joints import JointPicker
from pi0_trt_ros.node.observation import ObservationPipeline, ObservationRules

MS = 1_000_000
T0 = 1_767_225_600 * 1000 * MS  # a stamp on the node's clock (ns)
H, W = 6, 8
CAMERAS = ('base', 'wrist')
JOINTS = ('j1', 'j2')
RULES = ObservationRules(sync_queue_size=4, sync_slop_ns=10 * MS, joint_state_buffer=4, joint_tolerance_ns=20 * MS,
                         max_age_ns=500 * MS, max_future_ns=300 * MS)


def image(stamp_ns: int, value: int = 0, encoding: str = 'rgb8') -> Image:
    msg = Image(height=H, width=W, encoding=encoding, step=W * 3)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.data = array.array('B', bytes([value]) * (H * W * 3))
    return msg


def joints(stamp_ns: int, positions: tuple[float, float], names: tuple[str, ...] = JOINTS) -> JointState:
    msg = JointState(name=list(names), position=[float(p) for p in positions])
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    return msg


class Harness:
    """A pipeline whose hand-overs, hold-target updates and log lines are recorded."""

    def __init__(self, rules: ObservationRules = RULES, take: bool = True,
                 transports: tuple[str, ...] = ('raw', 'raw')) -> None:
        self.sets: list[tuple[tuple[Any, ...], np.ndarray, int, int, int]] = []
        self.holds: list[np.ndarray] = []
        self.offered: list[tuple[int, Any, int]] = []  # (camera, prepared frame, sets handed over by then)
        self.lines: list[str] = []
        self.take = take
        self.faults = FaultCounters(self.lines.append, self.lines.append, throttle_sec=0.0)
        decoders = [ImageDecoder(np.zeros((H, W, 3), np.uint8), t) for t in transports]
        picker = JointPicker(JOINTS, [-1.0, -1.0], [1.0, 1.0], margin=0.1)
        self.pipeline = ObservationPipeline(decoders, picker, rules, CAMERAS, self.faults, self.hand_over,
                                            lambda positions: self.holds.append(positions.copy()),
                                            lambda camera, frame: self.offered.append((camera, frame, len(self.sets))))

    def hand_over(self, frames: tuple[Any, ...], state: np.ndarray, newest: int, joint_stamp: int,
                  t_recv: int) -> bool:
        self.sets.append((frames, state.copy(), newest, joint_stamp, t_recv))
        return self.take

    def frame(self, camera: int, stamp_ns: int, now_ns: int | None = None, t_recv: int = 0, **kw: Any) -> bool:
        return self.pipeline.add_frame(camera, image(stamp_ns, **kw), stamp_ns if now_ns is None else now_ns, t_recv)

    def joint(self, stamp_ns: int, positions: tuple[float, float], now_ns: int | None = None, t_recv: int = 0,
              **kw: Any) -> None:
        self.pipeline.add_joint_state(joints(stamp_ns, positions, **kw), stamp_ns if now_ns is None else now_ns,
                                      t_recv)

    def stamps(self) -> list[int]:
        return [s[2] for s in self.sets]


def test_a_complete_set_is_handed_over_with_the_nearest_joint_sample() -> None:
    h = Harness()
    h.joint(T0 - 10 * MS, (0.1, 0.2), t_recv=1)
    h.joint(T0 + 1 * MS, (0.3, 0.4), t_recv=2)
    assert not h.frame(0, T0, value=7, t_recv=3)
    assert h.frame(1, T0 + 2 * MS, value=9, t_recv=4)  # completes the set: newest stamp T0 + 2 ms
    frames, state, newest, joint_stamp, t_recv = h.sets[0]
    assert [bytes(f.data)[0] for f in frames] == [7, 9]  # configured camera order
    np.testing.assert_array_equal(state, np.float32([0.3, 0.4]))
    assert (newest, joint_stamp, t_recv) == (T0 + 2 * MS, T0 + 1 * MS, 4)
    np.testing.assert_array_equal(h.holds[-1], np.float32([0.3, 0.4]))  # the hold target follows the joints
    assert h.pipeline.last_accepted == [3, 4, 2]
    assert h.faults.counts() == {} and h.lines == []


def test_each_accepted_frame_is_offered_before_its_set_is_handed_over_and_rejected_ones_are_not() -> None:
    h = Harness(transports=('compressed', 'raw'))
    h.joint(T0, (0.0, 0.0))
    assert not h.pipeline.add_frame(0, jpeg(T0, decodable=False), T0, 1)  # rejected when it does not decode
    h.frame(1, T0, encoding='yuv422')  # rejected by its header
    assert h.offered == []
    assert not h.pipeline.add_frame(0, jpeg(T0 + 1 * MS), T0 + 1 * MS, 2)
    assert h.frame(1, T0 + 1 * MS, value=4)  # completes the set
    assert [(camera, handed_over) for camera, _, handed_over in h.offered] == [(0, 0), (1, 0)]
    frames, *_ = h.sets[0]
    assert all(offered is frame for (_, offered, _), frame in zip(h.offered, frames))  # the set's own frames


def test_rejected_frames_and_joint_states_are_counted_and_never_used() -> None:
    h = Harness()
    h.joint(T0, (0.0, 0.0))
    h.joint(T0 + 1 * MS, (5.0, 0.0))  # far outside [-1.1, 1.1]: not in the ring, not the hold target
    h.joint(T0 + 2 * MS, (0.0, 0.0), names=('j1',))
    h.frame(0, T0, encoding='yuv422')
    assert not h.frame(1, T0)  # its partner was rejected: no set
    assert h.faults.counts() == {'joint_out_of_limits': 1, 'joint_missing': 1, 'image_encoding': 1}
    assert len(h.holds) == 1 and h.sets == []
    assert h.frame(0, T0 + 1 * MS)  # a good frame completes the set, with the one good joint sample
    assert h.sets[0][3] == T0


def test_a_noted_frame_is_used_and_counted() -> None:
    h = Harness()
    h.joint(T0, (0.0, 0.0))
    h.frame(0, T0)
    msg = image(T0)
    msg.is_bigendian = 1  # meaningless on 8-bit data: used, noted
    assert h.pipeline.add_frame(1, msg, T0, 0)
    assert h.faults.counts() == {'image_big_endian': 1}


def jpeg(stamp_ns: int, decodable: bool = True) -> CompressedImage:
    data = cv2.imencode('.jpg', np.full((H, W, 3), 90, np.uint8))[1].tobytes()
    if not decodable:  # a real header (right size), garbage entropy-coded data: only decoding can tell
        data = data[:data.index(b'\xff\xda')] + bytes(range(256)) * 4 + b'\xff\xd9'
    msg = CompressedImage(format='jpeg')
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.data = array.array('B', data)
    return msg


def test_a_compressed_frame_that_does_not_decode_is_rejected_on_arrival_and_joins_no_set() -> None:
    h = Harness(transports=('compressed', 'raw'))
    h.joint(T0, (0.0, 0.0), t_recv=1)
    assert not h.pipeline.add_frame(0, jpeg(T0, decodable=False), T0, 2)
    assert not h.frame(1, T0, t_recv=3)  # its partner never joined the synchronizer: no set
    assert h.faults.counts() == {'image_decode': 1} and h.sets == []
    assert h.pipeline.last_accepted == [0, 3, 1]  # the camera has not delivered a usable frame
    assert h.pipeline.sync.pending(0) == 0
    assert h.pipeline.add_frame(0, jpeg(T0 + 1 * MS), T0 + 1 * MS, 4)  # the next good frame completes the set
    frames, *_ = h.sets[0]
    assert isinstance(frames[0], np.ndarray) and frames[0].shape == (H, W, 3)  # decoded on arrival, RGB
    assert frames[1].encoding == 'rgb8'  # a raw frame waits as its message, converted when staged


def test_serialized_messages_are_read_and_those_that_do_not_fit_their_bytes_are_counted() -> None:
    h = Harness()
    joint = serialize_message(joints(T0, (0.1, 0.2)))
    h.pipeline.add_serialized_joint_state(joint[:len(joint) - 9], T0, 1)  # the positions run past the end
    frame = serialize_message(image(T0, value=5))
    assert not h.pipeline.add_serialized_frame(0, frame[:40], T0, 2)
    assert h.faults.counts() == {'message_malformed': 2} and h.pipeline.last_accepted == [0, 0, 0]
    assert 'joint_states: ' in h.lines[0] and 'camera base: ' in h.lines[1]
    h.pipeline.add_serialized_joint_state(joint, T0, 3)
    assert not h.pipeline.add_serialized_frame(0, frame, T0, 4)
    assert h.pipeline.add_serialized_frame(1, serialize_message(image(T0, value=6)), T0, 5)
    frames, state, *_ = h.sets[0]
    assert [bytes(f.data)[0] for f in frames] == [5, 6]  # views of the serialized bytes
    np.testing.assert_array_equal(state, np.float32([0.1, 0.2]))


def test_stamps_zero_backwards_and_ahead_of_the_clock_are_rejected() -> None:
    h = Harness()
    h.joint(T0, (0.0, 0.0))
    h.frame(0, 0, now_ns=T0)
    h.frame(0, T0 + 400 * MS, now_ns=T0)  # 400 ms ahead of the clock, bound 300 ms
    h.frame(0, T0, now_ns=T0)
    h.frame(0, T0 - 5 * MS, now_ns=T0)
    assert h.faults.counts() == {'stamp_zero': 1, 'stamp_future': 1, 'stamp_backwards': 1}
    assert h.frame(1, T0 + 250 * MS, now_ns=T0) is False  # ahead within the bound: accepted, too far from T0
    assert h.frame(1, T0 + 1 * MS, now_ns=T0 + 400 * MS) is False  # backwards of T0 + 250 ms on its input
    assert h.pipeline.sync.pending(1) == 1 and h.sets == []


def test_a_camera_frame_sent_again_is_rejected_and_forms_no_second_set() -> None:
    h = Harness()
    h.joint(T0, (0.0, 0.0))
    h.joint(T0 + 20 * MS, (0.0, 0.0))
    h.frame(0, T0)
    assert h.frame(1, T0)
    h.frame(1, T0)  # the frame that completed the set, sent again
    assert not h.frame(0, T0 + 9 * MS)  # would pair with the copy (within 10 ms slop) were it queued
    assert h.faults.counts() == {'stamp_repeated': 1}
    assert h.stamps() == [T0] and h.pipeline.sync.pending(1) == 0
    assert h.frame(1, T0 + 12 * MS)  # the stream goes on


def test_a_joint_state_with_a_repeated_stamp_is_accepted_and_the_later_reading_wins() -> None:
    h = Harness()
    h.joint(T0, (0.1, 0.1))
    h.joint(T0, (0.2, 0.2))
    h.frame(0, T0)
    h.frame(1, T0)
    np.testing.assert_array_equal(h.sets[0][1], np.float32([0.2, 0.2]))
    assert h.faults.counts() == {} and len(h.holds) == 2


def test_a_backward_clock_jump_clears_queued_frames_and_joint_samples() -> None:
    h = Harness()
    h.joint(T0, (0.1, 0.1))
    h.frame(0, T0)  # waits for camera 1 when time is reset
    jump = T0 - 60_000 * MS
    h.joint(jump, (0.5, 0.5))  # a minute back: the bag looped
    assert h.faults.counts() == {'clock_jump': 1}
    assert h.pipeline.sync.pending(0) == 0 and len(h.pipeline.joint_samples) == 1
    assert not h.frame(1, T0 + 1 * MS)  # a late pre-jump frame: nothing to pair with
    # camera 1's first post-jump frame jumps back from that late frame: everything starts over again
    assert not h.frame(1, jump)
    assert h.faults.counts() == {'clock_jump': 2}
    h.joint(jump + 1 * MS, (0.6, 0.6))
    assert h.frame(0, jump + 1 * MS)
    frames, state, newest, joint_stamp, _ = h.sets[0]
    assert (newest, joint_stamp) == (jump + 1 * MS, jump + 1 * MS)  # post-jump samples only
    np.testing.assert_array_equal(state, np.float32([0.6, 0.6]))
    assert h.pipeline.sync.counters.dropped_cleared == [1, 1]


def test_a_set_without_a_joint_sample_in_tolerance_is_counted_not_handed_over() -> None:
    h = Harness()
    h.joint(T0 - 25 * MS, (0.0, 0.0))  # 25 ms from the set, tolerance 20 ms
    h.frame(0, T0)
    assert not h.frame(1, T0)
    assert h.faults.counts() == {'joint_state_unmatched': 1} and h.sets == []
    assert h.pipeline.joint_samples.misses == 1


def test_a_set_older_than_the_age_limit_at_its_arrival_is_counted() -> None:
    h = Harness()
    late = T0 + 501 * MS  # the clock when the frames arrive: the oldest stamp is 501 ms old
    h.joint(T0, (0.0, 0.0), now_ns=late)
    h.frame(0, T0 + 1 * MS, now_ns=late)
    assert not h.frame(1, T0 + 1 * MS, now_ns=late)
    assert h.faults.counts() == {'observation_too_old': 1}
    assert '501.0 ms old' in h.lines[-1]
    off = Harness(dataclasses.replace(RULES, max_age_ns=0))  # 0: not checked
    off.joint(T0, (0.0, 0.0), now_ns=late)
    off.frame(0, T0, now_ns=late)
    assert off.frame(1, T0, now_ns=late)


def test_a_declined_hand_over_returns_false() -> None:
    h = Harness(take=False)
    h.joint(T0, (0.0, 0.0))
    h.frame(0, T0)
    assert not h.frame(1, T0) and len(h.sets) == 1  # offered, not taken (no instruction yet)


def test_the_joint_ring_keeps_the_newest_samples_in_its_rows() -> None:
    h = Harness()
    for k in range(6):  # a ring of 4: samples 2..5 stay, in the rows of 0..1 and 2..3
        h.joint(T0 + k * 10 * MS, (k / 10, -k / 10))
    assert len(h.pipeline.joint_samples) == 4
    for stamp, k in ((T0 + 5 * MS, 2), (T0 + 21 * MS, 2), (T0 + 49 * MS, 5)):  # sample 0 is gone
        h.frame(0, stamp)
        assert h.frame(1, stamp)
        assert h.sets[-1][3] == T0 + k * 10 * MS
        np.testing.assert_allclose(h.sets[-1][1], [k / 10, -k / 10], rtol=1e-6)


def test_bad_arguments_raise() -> None:
    faults = FaultCounters(print, print)
    picker = JointPicker(JOINTS)
    with pytest.raises(ValueError, match='one decoder per camera'):
        ObservationPipeline([ImageDecoder(np.zeros((H, W, 3), np.uint8))], picker, RULES, CAMERAS, faults,
                            lambda *a: True)
