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

"""Pick the configured joints, in the configured order, out of sensor_msgs/JointState.

Robots publish joint states in their own order and often with more joints than the policy
uses (grippers, a mobile base). ``JointPicker`` maps names to indices once per distinct name
list (cached: the list is the same message after message) and then gathers positions with
``np.take`` into preallocated buffers. A message missing a configured joint, naming one twice,
carrying fewer positions than names, or a NaN/inf (or a value beyond float32, the policy's state
type) in a picked position is rejected; extra joints are ignored (and reported).

With joint limits given, a picked position more than ``margin`` outside ``[lower, upper]`` is
rejected too (``joint_out_of_limits``): a finite but absurd reading (3e38 from a broken driver)
must not reach the policy's input nor become the hold target. Readings inside the margin are
used as they are (an encoder may read a little past a soft limit); commands are clamped later.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pi0_trt_ros.node.faults import BadInput

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class JointPicker:
    """Gathers ``joint_names`` (in that order) from JointState ``name``/``position`` into float32."""

    def __init__(self, joint_names: Sequence[str], lower: Sequence[float] | None = None,
                 upper: Sequence[float] | None = None, margin: float = 0.0) -> None:
        names = tuple(joint_names)
        if not names:
            raise ValueError('joint_names is empty')
        if len(set(names)) != len(names):
            raise ValueError(f'joint_names has duplicates: {list(names)}')
        if (lower is None) != (upper is None) or not margin >= 0:
            raise ValueError('give both lower and upper limits (or neither), and a margin >= 0')
        self.joint_names = names
        # [dof] accepted range, robot units: limits widened by the margin (unbounded without limits)
        self._low = np.full(len(names), -np.inf) if lower is None else np.asarray(lower, np.float64) - margin
        self._high = np.full(len(names), np.inf) if upper is None else np.asarray(upper, np.float64) + margin
        if self._low.shape != (len(names),) or self._high.shape != (len(names),):
            raise ValueError(f'limits need {len(names)} values each, one per joint')
        self._index = np.zeros(len(names), np.intp)  # [dof] position index of each configured joint
        self._scratch = np.zeros(len(names), np.float64)  # [dof] gathered positions, robot units
        self._abs = np.zeros(len(names), np.float64)  # [dof]
        self._finite = np.zeros(len(names), np.bool_)  # [dof] representable as a finite float32
        self._inside = np.zeros(len(names), np.bool_)  # [dof] within the accepted range
        self._cached_names: list[str] | None = None  # the name list _index was computed for
        self._cached_verdict: BadInput | None = None  # what that name list gives (missing/duplicate/extra)

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def pick_into(self, names: Sequence[str], positions: Sequence[float], out: np.ndarray) -> BadInput | None:
        """Write the configured joints' positions into ``out`` (float32 [dof]).

        Returns None when clean, a BadInput with ``used=True`` when written but noteworthy (extra
        joints), or ``used=False`` when rejected; ``out`` is left untouched then.
        """
        if self._cached_names is None or names != self._cached_names:
            self._cached_verdict = self._map_names(names)
        verdict = self._cached_verdict
        if verdict is not None and not verdict.used:
            return verdict
        if len(positions) != len(names):
            return BadInput('joint_positions', f'{len(positions)} positions for {len(names)} names')
        values = np.frombuffer(positions, np.float64) if _is_double_buffer(positions) \
            else np.asarray(positions, np.float64)
        np.take(values, self._index, out=self._scratch)
        np.abs(self._scratch, out=self._abs)
        np.less_equal(self._abs, _FLOAT32_MAX, out=self._finite)  # False for NaN, inf and float32 overflow
        if not self._finite.all():
            bad = [f'{self.joint_names[i]}={self._scratch[i]}' for i in np.flatnonzero(~self._finite)]
            return BadInput('joint_nonfinite', f'non-finite position: {", ".join(bad)}')
        np.greater_equal(self._scratch, self._low, out=self._inside)
        np.logical_and(self._inside, np.less_equal(self._scratch, self._high, out=self._finite), out=self._inside)
        if not self._inside.all():
            bad = [f'{self.joint_names[i]}={self._scratch[i]:.6g} (accepted [{self._low[i]:.6g}, '
                   f'{self._high[i]:.6g}])' for i in np.flatnonzero(~self._inside)]
            return BadInput('joint_out_of_limits', f'position outside the joint limits by more than the margin: '
                            f'{", ".join(bad)}; sample not used')
        np.copyto(out, self._scratch, casting='same_kind')
        return verdict

    def _map_names(self, names: Sequence[str]) -> BadInput | None:
        """Recompute the index map for a new name list; return the list's verdict."""
        self._cached_names = list(names)
        position = {}
        for i, name in enumerate(names):
            if name in position:
                return BadInput('joint_names', f'joint {name!r} appears twice in the message')
            position[name] = i
        missing = [n for n in self.joint_names if n not in position]
        if missing:
            return BadInput('joint_missing', f'missing configured joints {missing}; message has {list(names)}')
        for k, name in enumerate(self.joint_names):
            self._index[k] = position[name]
        extra = [n for n in names if n not in self.joint_names]
        if extra:
            return BadInput('joint_extra', f'ignoring joints not configured: {extra}', used=True)
        return None


def _is_double_buffer(values: object) -> bool:
    """Tell whether ``values`` is an array.array('d') (rclpy's float64[]): viewable without a copy."""
    return getattr(values, 'typecode', None) == 'd'
