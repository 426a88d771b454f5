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

"""From an action chunk to safe, preallocated command messages.

* ``ActionSanitizer``: clamp to joint limits; a row with any NaN/inf becomes the hold position.
* ``ActionQueue``: LeRobot's ``select_action`` queue. A chunk ``[T, dof]`` contributes its first
  ``n_action_steps`` rows; the control loop pops one per tick and asks for a new inference when
  the queue is empty.
* ``Float64ArrayMessage``: ``std_msgs/Float64MultiArray``, for the command in joint order
  (ros2_control ``forward_command_controller`` ``~/commands``) and the status.
* ``TrajectoryMessage``: ``trajectory_msgs/JointTrajectory`` of the chunk
  (``joint_trajectory_controller``): point k at ``time_from_start = (k + 1) / control_rate_hz``,
  so the first point is one control period ahead, not "now". The header stamp is zero by default:
  the controller then starts the trajectory when it receives it, on its own clock (a stamp from a
  clock that differs from the controller's can put the start in the past, and it is rejected).
  Optional velocities (finite differences of the chunk) let the controller interpolate with
  splines instead of straight segments whose velocity jumps at every point.

Messages are serialized once (``SerializedMessage``); each cycle writes numbers straight into
the CDR bytes through numpy views and publishes the bytes. On the good path the only allocation
per publish is the ``bytes`` copy rclpy's raw publish takes (a few KB).
"""

from __future__ import annotations

import array
from typing import Sequence

import numpy as np
from rclpy.serialization import serialize_message
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint


class ActionSanitizer:
    """Clamps actions to ``[lower, upper]`` per joint; non-finite rows become the hold position.

    The hold position (where the arm is) is not clamped: holding must not move the arm.
    """

    def __init__(self, lower: Sequence[float], upper: Sequence[float], max_rows: int) -> None:
        self.lower = np.asarray(lower, np.float64)  # [dof] robot units
        self.upper = np.asarray(upper, np.float64)  # [dof]
        if self.lower.shape != self.upper.shape or self.lower.ndim != 1:
            raise ValueError(f'lower/upper limits differ in shape: {self.lower.shape} vs {self.upper.shape}')
        if not (np.isfinite(self.lower).all() and np.isfinite(self.upper).all()):
            raise ValueError('joint limits must be finite')
        if not (self.lower < self.upper).all():
            raise ValueError(f'every lower limit must be below its upper limit: {self.lower} vs {self.upper}')
        dof = self.lower.shape[0]
        self._lower = np.tile(self.lower, (max_rows, 1))  # [T, dof]
        self._upper = np.tile(self.upper, (max_rows, 1))  # [T, dof]
        self._finite = np.zeros((max_rows, dof), np.bool_)  # [T, dof]

    def sanitize_into(self, actions: np.ndarray, hold: np.ndarray, out: np.ndarray) -> int:
        """Write clamped ``actions`` ([rows, dof] or [dof]) into ``out`` (float64, same shape).

        Rows containing NaN/inf are replaced by ``hold`` (float64 [dof], current joint positions).
        Returns how many rows were replaced.
        """
        if actions.ndim == 1:
            return self.sanitize_into(actions[None], hold, out[None])
        rows = actions.shape[0]
        finite = self._finite[:rows]
        np.copyto(out, actions)  # float32 -> float64 first: mixed-dtype ufuncs would allocate cast buffers
        np.isfinite(out, out=finite)
        np.minimum(out, self._upper[:rows], out=out)  # same-shape operands: no broadcasting iterator
        np.maximum(out, self._lower[:rows], out=out)
        replaced = 0
        if np.count_nonzero(finite) != finite.size:  # rare: find the rows, allocating is fine here
            row_bad = ~finite.all(axis=1)
            replaced = int(np.count_nonzero(row_bad))
            out[row_bad] = hold
        return replaced


class ActionQueue:
    """The first ``n_action_steps`` rows of the latest chunk, popped one per control tick."""

    def __init__(self, n_action_steps: int, dof: int) -> None:
        if n_action_steps < 1:
            raise ValueError(f'n_action_steps must be >= 1, got {n_action_steps}')
        self.n_action_steps = n_action_steps
        self._actions = np.zeros((n_action_steps, dof), np.float64)  # [n_action_steps, dof]
        self._next = n_action_steps  # index of the next action; == n_action_steps: empty

    @property
    def remaining(self) -> int:
        return self.n_action_steps - self._next

    def load(self, chunk: np.ndarray) -> None:
        """Replace the queue with ``chunk[:n_action_steps]`` (chunk [T, dof], T >= n_action_steps)."""
        if chunk.shape[0] < self.n_action_steps:
            raise ValueError(f'chunk has {chunk.shape[0]} actions, fewer than n_action_steps={self.n_action_steps}')
        np.copyto(self._actions, chunk[:self.n_action_steps])
        self._next = 0

    def pop_into(self, out: np.ndarray) -> bool:
        """Copy the next action into ``out`` ([dof]); False (``out`` untouched) when empty."""
        if self._next >= self.n_action_steps:
            return False
        np.copyto(out, self._actions[self._next])
        self._next += 1
        return True

    def clear(self) -> None:
        self._next = self.n_action_steps


class SerializedMessage:
    """A message serialized once whose numbers are then rewritten in place in its CDR bytes.

    rclpy converts a Python message to C on every publish (a 50-point JointTrajectory: 0.06 ms
    idle, 0.17 ms on a busy 2-core machine); publishing the bytes (``Publisher.publish(bytes)``)
    skips that. Fields are found by serializing unique sentinel values and locating their bytes;
    the layout cannot change as long as no sequence or string changes length, which is the case
    for every message here (fixed joint count and chunk size).
    """

    def __init__(self, msg: object) -> None:
        self._raw = bytearray(serialize_message(msg))
        self._order = '<' if self._raw[1] & 1 else '>'  # CDR encapsulation: odd id = little-endian

    def view(self, sentinel: np.ndarray, what: str, dtype: str = 'f8') -> np.ndarray:
        """Return a writable array over the bytes where ``sentinel`` (unique) was serialized."""
        pattern = sentinel.astype(self._order + dtype).tobytes()
        offset = self._raw.find(pattern)
        if offset < 0 or self._raw.find(pattern, offset + 1) >= 0:
            raise ValueError(f'cannot locate {what} in the serialized message')
        return np.ndarray(sentinel.shape, self._order + dtype, buffer=self._raw, offset=offset)

    def serialized(self) -> bytes:
        """Return the current bytes, for ``Publisher.publish``."""
        return bytes(self._raw)


class Float64ArrayMessage:
    """A std_msgs/Float64MultiArray of ``size`` values, published as reused serialized bytes."""

    def __init__(self, size: int, label: str = '') -> None:
        msg = Float64MultiArray()
        if label:  # self-describing for `ros2 topic echo`; empty for ros2_control commands
            msg.layout.dim = [MultiArrayDimension(label=label, size=size, stride=size)]
        sentinel = 1e9 + np.arange(size, dtype=np.float64) + 0.5
        msg.data = array.array('d', sentinel.tobytes())
        self._serialized = SerializedMessage(msg)
        self.values = self._serialized.view(sentinel, 'data')  # [size] writable, in the CDR bytes
        self.values[:] = 0.0

    def fill(self, values: np.ndarray) -> bytes:
        """Write ``values`` ([size]) and return the serialized message."""
        np.copyto(self.values, values)
        return self._serialized.serialized()


class TrajectoryMessage:
    """A JointTrajectory of ``num_points`` points spaced ``1 / control_rate_hz`` apart, as reused bytes.

    ``velocities``: also fill ``JointTrajectoryPoint.velocities`` with the chunk's finite
    differences (central inside, one-sided at both ends), in robot units per second.
    """

    def __init__(self, joint_names: Sequence[str], num_points: int, control_rate_hz: float,
                 frame_id: str = '', velocities: bool = False) -> None:
        if not control_rate_hz > 0:
            raise ValueError(f'control_rate_hz must be > 0, got {control_rate_hz}')
        if velocities and num_points < 2:
            raise ValueError(f'velocities need at least 2 points, got {num_points}')
        dof = len(joint_names)
        msg = JointTrajectory()
        msg.header.frame_id = frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = _STAMP_SENTINEL
        msg.joint_names = list(joint_names)
        sentinels = 1e9 + 1000.0 * np.arange(num_points)[:, None] + np.arange(dof)[None, :] + 0.5  # [T, dof]
        velocity_sentinels = sentinels + 1e9  # [T, dof], distinct from every position sentinel
        period_ns = int(round(1e9 / control_rate_hz))
        points = []
        for k in range(num_points):
            point = JointTrajectoryPoint()
            point.positions = array.array('d', sentinels[k].tobytes())
            if velocities:
                point.velocities = array.array('d', velocity_sentinels[k].tobytes())
            point.time_from_start.sec, point.time_from_start.nanosec = divmod((k + 1) * period_ns, 1_000_000_000)
            points.append(point)
        msg.points = points
        self.num_points = num_points
        self._serialized = SerializedMessage(msg)
        # Points need not be evenly spaced in CDR (alignment padding): one [dof] view per point.
        self._rows = [self._serialized.view(row, f'point {k}') for k, row in enumerate(sentinels)]
        self._velocity_rows = [self._serialized.view(row, f'point {k} velocities')
                               for k, row in enumerate(velocity_sentinels)] if velocities else []
        for row in self._rows + self._velocity_rows:
            row[:] = 0.0
        self._rate_hz = 1e9 / period_ns  # the point spacing actually written, in Hz
        self._velocity = np.zeros((num_points, dof), np.float64)  # [T, dof] rad/s (or m/s)
        stamp = self._serialized.view(np.array(_STAMP_SENTINEL, np.int64), 'header.stamp', 'u4')
        self._sec, self._nanosec = stamp[0:1], stamp[1:2]  # int32 sec < 2**31 reads the same as uint32

    def fill(self, chunk: np.ndarray, stamp_ns: int = 0) -> bytes:
        """Write ``chunk`` ([T, dof], float64, already sanitized) and the header stamp (ns); return the bytes.

        ``stamp_ns`` 0 (the default) writes the zero stamp: "start when received".
        """
        if chunk.shape[0] != self.num_points:
            raise ValueError(f'chunk has {chunk.shape[0]} rows, the trajectory {self.num_points} points')
        for view, row in zip(self._rows, chunk):
            np.copyto(view, row)
        if self._velocity_rows:
            self._finite_differences(chunk)
            for view, row in zip(self._velocity_rows, self._velocity):
                np.copyto(view, row)
        self._sec[0], self._nanosec[0] = divmod(stamp_ns, 1_000_000_000)
        return self._serialized.serialized()

    def _finite_differences(self, chunk: np.ndarray) -> None:
        """Velocities of ``chunk`` at its points into ``self._velocity`` (no allocation)."""
        v = self._velocity
        np.subtract(chunk[2:], chunk[:-2], out=v[1:-1])
        v[1:-1] *= 0.5 * self._rate_hz
        np.subtract(chunk[1], chunk[0], out=v[0])
        np.subtract(chunk[-1], chunk[-2], out=v[-1])
        v[0] *= self._rate_hz
        v[-1] *= self._rate_hz


_STAMP_SENTINEL = (1_589_706_734, 987_654_321)  # (sec, nanosec) unlikely to occur elsewhere in the bytes
