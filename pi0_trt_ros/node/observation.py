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

"""The observation pipeline: camera frames and joint states in, complete observations out.

One object holds every rule between a received message and an observation ready for the
policy, so that the live node and offline replay (``pi0-trt replay --offline``) run the same code;
offline replay is the node minus DDS. Per message, with its receive time and the node's clock:

0. Bytes. Both take messages serialized (``add_serialized_*``) and read them with ``cdr.py``; a
   message whose fields do not fit its bytes is rejected (``message_malformed``).
1. Contents. A frame's header (``ImageDecoder.check``: encoding, size, row step, ...) or a joint
   state's names and positions (``JointPicker``: missing, non-finite, outside the limits). A
   rejected message stops here.
2. Stamp (``StampGate`` against ``now_ns``): zero, backwards, a camera frame's stamp repeated, or
   more than ``max_future_ns`` ahead: rejected. A jump back of a second or more means time was
   reset (a looping bag): the message is accepted and the synchronizer and joint ring start over.
3. A joint sample goes into a ring of picked rows (found by stamp through ``NearestSampleBuffer``)
   and to ``on_joint_state`` (the node's hold target); a frame is prepared
   (``ImageDecoder.prepare``: a compressed one is decoded now, and rejected if it does not decode,
   so that staging a set only copies), goes to ``on_frame`` (the node's ``FrameStager``, which
   writes it into staging now if it can) and into ``ApproximateTimeSync``.
4. A complete camera set is matched to the joint sample nearest its newest stamp (within the
   tolerance, else ``joint_state_unmatched``), its oldest stamp checked against ``max_age_ns``
   (``observation_too_old``), and it is handed over: ``hand_over(frames, state, newest_stamp_ns,
   joint_stamp_ns, t_recv)``, which returns whether it took the set.

Every finding is counted in ``FaultCounters`` under its ``BadInput`` kind. The node calls in from
its executor thread with ROS time as ``now_ns`` and hands sets to its control thread's mailbox;
offline replay calls in with each message's log time (the recorder's receive time) as both the
clock and the receive time and infers each set at once. Nothing here imports rclpy or is
thread-safe: one thread calls in.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence, TYPE_CHECKING

import numpy as np

from pi0_trt_ros.node.cdr import CdrError, parse_compressed_image, parse_image, parse_joint_state
from pi0_trt_ros.node.faults import BadInput, FaultCounters
from pi0_trt_ros.node.images import ImageDecoder
from pi0_trt_ros.node.joints import JointPicker
from pi0_trt_ros.node.stamps import StampGate
from pi0_trt_ros.node.sync import ApproximateTimeSync, exceeds_max_age, NearestSampleBuffer

if TYPE_CHECKING:  # params.py needs rclpy; this module does not
    from pi0_trt_ros.node.params import ControlParams

# hand_over(frames, state, newest_stamp_ns, joint_stamp_ns, t_recv) -> taken. frames: one prepared frame
# per camera (``ImageDecoder.prepare``), configured order; state: float32 [dof], valid during the call
# only (a row of the joint ring).
HandOver = Callable[[tuple[Any, ...], np.ndarray, int, int, int], bool]


def stamp_ns(msg: Any) -> int:
    """Return a message's ``header.stamp`` in integer nanoseconds."""
    stamp = msg.header.stamp
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _ignore(*args: Any) -> None:
    """Follow no joint sample or frame (the default ``on_joint_state`` and ``on_frame``)."""


@dataclasses.dataclass(frozen=True)
class ObservationRules:
    """The pipeline's limits, in nanoseconds (the node's ``*_ms`` parameters)."""

    sync_queue_size: int  # frames kept per camera while waiting for partners
    sync_slop_ns: int  # largest stamp spread of a camera set, inclusive
    joint_state_buffer: int  # joint samples kept for the nearest-stamp lookup
    joint_tolerance_ns: int  # largest |joint sample stamp - newest camera stamp| matched
    max_age_ns: int  # largest age of a set's oldest stamp at hand-over (0: not checked)
    max_future_ns: int  # largest lead of a stamp over the clock (0: not checked)

    @classmethod
    def from_params(cls, p: ControlParams) -> 'ObservationRules':
        """Take the rules from the node's parameters."""
        return cls(sync_queue_size=p.sync_queue_size, sync_slop_ns=int(round(p.sync_slop_ms * 1e6)),
                   joint_state_buffer=p.joint_state_buffer,
                   joint_tolerance_ns=int(round(p.joint_state_tolerance_ms * 1e6)),
                   max_age_ns=int(round(p.max_observation_age_ms * 1e6)),
                   max_future_ns=int(round(p.max_future_stamp_ms * 1e6)))


class ObservationPipeline:
    """Stamp acceptance, joint ring, synchronizer and hand-over of the module docstring.

    Inputs are indexed like the synchronizer's: camera ``i`` (configured order) is input ``i``,
    the joint states are input ``len(decoders)``.
    """

    def __init__(self, decoders: Sequence[ImageDecoder], picker: JointPicker, rules: ObservationRules,
                 camera_names: Sequence[str], faults: FaultCounters, hand_over: HandOver,
                 on_joint_state: Callable[[np.ndarray], object] = _ignore,
                 on_frame: Callable[[int, Any], object] = _ignore) -> None:
        if len(camera_names) != len(decoders) or not decoders:
            raise ValueError(f'need one decoder per camera and at least one camera; got {len(decoders)} decoders for '
                             f'cameras {list(camera_names)}')
        cameras = len(decoders)
        self.decoders = tuple(decoders)
        self.picker = picker
        self.rules = rules
        self.faults = faults
        self._hand_over = hand_over
        self._on_joint_state = on_joint_state
        self._on_frame = on_frame  # (camera index, prepared frame): accepted, before it goes to the synchronizer
        self.joint_input = cameras  # input index of the joint states
        self.sources = tuple(f'camera {n}' for n in camera_names) + ('joint_states',)  # per input, for logs
        self.stamps = StampGate(cameras + 1, rules.max_future_ns, repeat_ok=(self.joint_input,))
        self.sync: ApproximateTimeSync = ApproximateTimeSync(cameras, rules.sync_queue_size, rules.sync_slop_ns)
        # The joint ring: picked rows, found by stamp through joint_samples (which holds row indices and
        # evicts in the same order, so a row is overwritten only when its entry is).
        self.joint_samples: NearestSampleBuffer[int] = NearestSampleBuffer(rules.joint_state_buffer,
                                                                           rules.joint_tolerance_ns)
        self._joint_rows = np.zeros((rules.joint_state_buffer, picker.dof), np.float32)  # [buffer, dof]
        self._joint_next = 0  # ring row of the next joint sample
        self._joint_scratch = np.zeros(picker.dof, np.float32)  # [dof] the message being checked
        self.last_accepted = [0] * (cameras + 1)  # per input: receive time of its last accepted message (0: none)
        self._parsers = tuple(parse_image if d.transport == 'raw' else parse_compressed_image for d in decoders)

    @classmethod
    def from_params(cls, p: ControlParams, decoders: Sequence[ImageDecoder], faults: FaultCounters,
                    hand_over: HandOver, on_joint_state: Callable[[np.ndarray], object] = _ignore,
                    on_frame: Callable[[int, Any], object] = _ignore) -> 'ObservationPipeline':
        """Build the pipeline the node's parameters describe, around one decoder per configured camera."""
        picker = JointPicker(p.joint_names, p.joint_lower_limits, p.joint_upper_limits, p.joint_limit_margin)
        return cls(decoders, picker, ObservationRules.from_params(p), [c.name for c in p.cameras], faults,
                   hand_over, on_joint_state, on_frame)

    def add_serialized_frame(self, index: int, raw: bytes, now_ns: int, t_recv: int) -> bool:
        """Read camera ``index``'s serialized frame (Image or CompressedImage, as configured), then ``add_frame``."""
        try:
            msg = self._parsers[index](raw)
        except CdrError as err:
            self.faults.add(self.sources[index], BadInput('message_malformed', str(err)))
            return False
        return self.add_frame(index, msg, now_ns, t_recv)

    def add_serialized_joint_state(self, raw: bytes, now_ns: int, t_recv: int) -> None:
        """Read a serialized sensor_msgs/JointState, then ``add_joint_state``."""
        try:
            msg = parse_joint_state(raw)
        except CdrError as err:
            self.faults.add(self.sources[self.joint_input], BadInput('message_malformed', str(err)))
            return
        self.add_joint_state(msg, now_ns, t_recv)

    def add_frame(self, index: int, msg: Any, now_ns: int, t_recv: int) -> bool:
        """Take camera ``index``'s frame received at ``t_recv``; True when it completed a set that was taken.

        ``now_ns``: the node's clock (the stamps' clock) at arrival.
        """
        bad = self.decoders[index].check(msg)
        if bad is not None:
            self.faults.add(self.sources[index], bad)
            if not bad.used:
                return False
        stamp = stamp_ns(msg)
        if not self._accept_stamp(index, stamp, now_ns):
            return False
        frame, failed = self.decoders[index].prepare(msg)
        if failed is not None:
            self.faults.add(self.sources[index], failed)
            return False
        self.last_accepted[index] = t_recv
        self._on_frame(index, frame)
        frames = self.sync.add(index, stamp, frame)
        return frames is not None and self._complete(frames, now_ns, t_recv)

    def add_joint_state(self, msg: Any, now_ns: int, t_recv: int) -> None:
        """Take a sensor_msgs/JointState received at ``t_recv`` into the joint ring and ``on_joint_state``."""
        index = self.joint_input
        bad = self.picker.pick_into(msg.name, msg.position, self._joint_scratch)
        if bad is not None:
            self.faults.add(self.sources[index], bad)
            if not bad.used:
                return
        stamp = stamp_ns(msg)
        if not self._accept_stamp(index, stamp, now_ns):
            return
        row = self._joint_next
        np.copyto(self._joint_rows[row], self._joint_scratch)
        self.joint_samples.add(stamp, row)
        self._joint_next = (row + 1) % len(self._joint_rows)
        self._on_joint_state(self._joint_scratch)
        self.last_accepted[index] = t_recv

    def _accept_stamp(self, index: int, stamp: int, now_ns: int) -> bool:
        """Apply the StampGate rules; when time was reset, clear the synchronizer and the joint ring."""
        verdict = self.stamps.check(index, stamp, now_ns)
        if verdict.bad is not None:
            self.faults.add(self.sources[index], verdict.bad)
        if verdict.reset_sync:
            self.sync.clear()
            self.joint_samples.clear()
            self._joint_next = 0
        return verdict.accepted

    def _complete(self, frames: tuple[Any, ...], now_ns: int, t_recv: int) -> bool:
        """Match a camera set to a joint sample, check its age, and hand it over."""
        set_stamps = self.sync.last_stamps
        newest = max(set_stamps)
        entry = self.joint_samples.nearest_entry(newest)
        if entry is None:
            self.faults.add('observation', BadInput('joint_state_unmatched', 'no joint state within '
                                                    f'{self.rules.joint_tolerance_ns / 1e6:g} ms of the camera set'))
            return False
        joint_stamp, row = entry
        max_age = self.rules.max_age_ns
        if max_age and exceeds_max_age(now_ns, (*set_stamps, joint_stamp), max_age):
            age = (now_ns - min(*set_stamps, joint_stamp)) / 1e6
            self.faults.add('observation', BadInput('observation_too_old', f'oldest stamp is {age:.1f} ms old '
                                                    f'> max_observation_age_ms {max_age / 1e6:g}'))
            return False
        return self._hand_over(frames, self._joint_rows[row], newest, joint_stamp, t_recv)
