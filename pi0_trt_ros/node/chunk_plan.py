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

"""Which action of a chunk each control tick publishes, from the tick the chunk is switched to.

Action k of a chunk is what the policy wants k control periods after its observation. A new
chunk is switched to at a control tick, at the action that matches the time elapsed since its
observation (``switch_index``: whole periods elapsed); from there it contributes
``n_action_steps`` actions, one per tick, fewer when its end comes first. With
``crossfade_steps`` c > 0 and a chunk running, the first c ticks blend linearly from what the
running chunk would have published (its last action once it has run out) into the new chunk:
tick j (0-based) publishes ``old + w_j (new - old)`` with ``w_j = (j + 1) / (c + 1)``, so the new
chunk's share grows 1/(c+1), 2/(c+1), ... and the tick after the blend is the new chunk alone.
Both chunks are already clamped to the joint limits, so every blend is within them too.

``ChunkPlan.rows`` holds one row per tick from the switch on (``[T, dof]``: the blended head, the
rest of the chunk, then its last action repeated), which is also the JointTrajectory published at
the switch, so the controller's trajectory and the per-tick commands agree.
"""

from __future__ import annotations

import numpy as np


def switch_index(tick_ns: int, observed_ns: int, period_ns: int) -> int:
    """Index of the action due at ``tick_ns`` for a chunk observed at ``observed_ns``: whole periods elapsed."""
    return max(0, (tick_ns - observed_ns) // period_ns)


class ChunkPlan:
    """The actions one chunk contributes, one row per control tick from its switch on (module docstring)."""

    def __init__(self, n_action_steps: int, chunk_size: int, dof: int, crossfade_steps: int = 0) -> None:
        if not 1 <= n_action_steps <= chunk_size:
            raise ValueError(f'n_action_steps must be in [1, chunk size {chunk_size}], got {n_action_steps}')
        if not 0 <= crossfade_steps < chunk_size:
            raise ValueError(f'crossfade_steps must be in [0, chunk size {chunk_size}), got {crossfade_steps}')
        self.n_action_steps = n_action_steps
        self.crossfade_steps = crossfade_steps
        self.rows = np.zeros((chunk_size, dof), np.float64)  # [T, dof] row j: the action of tick j after the switch
        self._weights = np.arange(1, crossfade_steps + 1, dtype=np.float64) / (crossfade_steps + 1)  # [c] new share
        self.start_index = 0  # chunk index of row 0
        self.length = 0  # rows that are commanded; the rest pad the trajectory
        self.next = 0  # row of the next tick

    @property
    def remaining(self) -> int:
        """Ticks this plan still has an action for."""
        return self.length - self.next

    def load(self, chunk: np.ndarray, start_index: int, previous: ChunkPlan | None = None) -> None:
        """Plan ``chunk`` ([T, dof]) from action ``start_index`` (< T); blend from ``previous`` if given.

        ``previous`` is the plan running until now (not yet run out or just run out; never empty).
        """
        size = chunk.shape[0]
        if not 0 <= start_index < size:
            raise ValueError(f'start_index must be in [0, {size}), got {start_index}')
        tail = size - start_index
        np.copyto(self.rows[:tail], chunk[start_index:])
        self.rows[tail:] = chunk[size - 1]
        if previous is not None:
            for j, weight in enumerate(self._weights):
                old = previous.rows[min(previous.next + j, previous.length - 1)]
                row = self.rows[j]
                np.subtract(row, old, out=row)  # in place: no temporaries
                row *= weight
                row += old
        self.start_index = start_index
        self.length = min(self.n_action_steps, tail)
        self.next = 0

    def pop_into(self, out: np.ndarray) -> bool:
        """Copy the next tick's action into ``out`` ([dof]); False (``out`` untouched) when the plan has run out."""
        if self.next >= self.length:
            return False
        np.copyto(out, self.rows[self.next])
        self.next += 1
        return True

    def skip(self, ticks: int) -> None:
        """Pass over ``ticks`` ticks that got no command (the action index follows time)."""
        self.next = min(self.next + ticks, self.length)

    def clear(self) -> None:
        self.length = self.next = 0
