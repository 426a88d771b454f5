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

"""What the node's deadline diagnostics report: cycle timing against the compute budget.

``DeadlineMonitor`` keeps, per control cycle, the compute time (synchronized set complete →
commands published), the observation age (newest input header stamp → publish, ROS time) and the
model call alone, in fixed-size preallocated rings; recording a cycle allocates nothing. Figures
over the window (last/mean/p50/p99/max) and the OK/WARN/ERROR level are computed when asked (the
1 Hz diagnostics timer), not per cycle.

Bad inputs are counted by ``faults.FaultCounters``.
"""

from __future__ import annotations

import enum
import math
import threading
from typing import NamedTuple

import numpy as np

# The node's compact status topic (~/status, std_msgs/Float64MultiArray): one value per name, in
# this order (the bag report reads them back by these indices).
STATUS_FIELDS = ('cycle_index', 'compute_ms', 'obs_age_ms', 'deadline_missed', 'inference_ms',
                 'set_stamp_sec', 'set_stamp_nanosec', 'joint_offset_ms', 'sets_superseded',
                 'chunk_slack_ms', 'switch_index', 'ticks_missed', 'queued_ms')
# cycle_index: running cycle counter; compute_ms: sync complete -> commands published (ms), checked
# against the budget (chunk mode: sync complete -> chunk ready); obs_age_ms: newest header stamp ->
# publish (ms); deadline_missed: 1.0 when the cycle missed (chunk mode: the chunk came after the
# running one ran out, or was not executed); inference_ms: the policy call alone (ms); set_stamp_sec,
# set_stamp_nanosec: the newest header stamp of the set this cycle used, as builtin_interfaces/Time
# splits it (two fields: float64 holds each exactly, not their sum in ns); joint_offset_ms: stamp of
# the joint sample matched to the set minus set_stamp (ms; exact to the ns within the joint
# tolerance); sets_superseded: sets replaced while the control thread was busy, so far (newest set
# wins). Chunk mode (NaN in every_set mode but switch_index, 0 there): chunk_slack_ms: run-out time of
# the running chunk minus this chunk ready (ms; < 0: late; NaN when it replaced nothing);
# switch_index: the chunk's action published first (time elapsed since its observation, in control
# periods); ticks_missed: control ticks without their command so far. queued_ms: sync complete -> the
# set's staging began (ms), the part of compute_ms it waited for the cycle before it (or, in chunk
# mode, for the inference thread).


class Level(enum.IntEnum):
    """Diagnostic level, numerically equal to diagnostic_msgs/DiagnosticStatus OK/WARN/ERROR."""

    OK = 0
    WARN = 1
    ERROR = 2


class WindowStats(NamedTuple):
    """Figures of one quantity over the monitor's window, in milliseconds (NaN before any cycle)."""

    last: float
    mean: float
    p50: float
    p99: float
    max: float  # noqa: A003 - the figure's name


_NAN_STATS = WindowStats(math.nan, math.nan, math.nan, math.nan, math.nan)


class DeadlineMonitor:
    """Per-cycle timing against a compute budget, over a fixed ring window.

    Level rules (``level()``), checked in this order:

    * ERROR: the last ``error_consecutive`` cycles (default 3) all missed the budget.
    * WARN: the last cycle missed, or more than ``warn_miss_fraction`` (default 1 %) of the cycles
      in the window missed.
    * OK: otherwise, including before the first cycle.

    ``record`` is called by one thread (the control loop); ``level``/``stats``/``key_values`` may
    run in another (diagnostics timer): they read a snapshot under a lock.
    """

    QUANTITIES = ('compute', 'obs_age', 'inference')

    def __init__(self, budget_ms: float, window: int = 1000, warn_miss_fraction: float = 0.01,
                 error_consecutive: int = 3) -> None:
        if not budget_ms > 0:
            raise ValueError(f'budget_ms must be > 0, got {budget_ms}')
        if window < 1:
            raise ValueError(f'window must be >= 1, got {window}')
        if error_consecutive < 1:
            raise ValueError(f'error_consecutive must be >= 1, got {error_consecutive}')
        self.budget_ms = float(budget_ms)
        self.budget_ns = int(round(budget_ms * 1e6))
        self.window = int(window)
        self.warn_miss_fraction = float(warn_miss_fraction)
        self.error_consecutive = int(error_consecutive)
        self._ring = np.zeros((len(self.QUANTITIES), self.window), np.float64)  # [quantity, window] ms
        self._missed = np.zeros(self.window, np.bool_)  # [window]
        self._next = 0  # ring slot the next cycle goes to
        self._filled = 0  # valid slots, <= window
        self.cycles = 0
        self.misses = 0
        self.consecutive_misses = 0
        self.max_consecutive_misses = 0
        self._lock = threading.Lock()

    def missed(self, compute_ns: int) -> bool:
        """Whether ``compute_ns`` so far is already over budget (used before publishing)."""
        return compute_ns > self.budget_ns

    def record(self, compute_ns: int, obs_age_ns: int, inference_ns: int) -> bool:
        """Record one cycle; return whether it missed the budget. Allocates nothing."""
        missed = compute_ns > self.budget_ns
        with self._lock:
            i = self._next
            self._ring[0, i] = compute_ns * 1e-6
            self._ring[1, i] = obs_age_ns * 1e-6
            self._ring[2, i] = inference_ns * 1e-6
            self._missed[i] = missed
            self._next = (i + 1) % self.window
            if self._filled < self.window:
                self._filled += 1
            self.cycles += 1
            if missed:
                self.misses += 1
                self.consecutive_misses += 1
                if self.consecutive_misses > self.max_consecutive_misses:
                    self.max_consecutive_misses = self.consecutive_misses
            else:
                self.consecutive_misses = 0
        return missed

    def stats(self, quantity: str) -> WindowStats:
        """last/mean/p50/p99/max of 'compute', 'obs_age' or 'inference' over the window, ms."""
        row = self.QUANTITIES.index(quantity)
        with self._lock:
            if self._filled == 0:
                return _NAN_STATS
            last = float(self._ring[row, (self._next - 1) % self.window])
            values = self._ring[row, :self._filled].copy()
        p50, p99 = np.percentile(values, (50.0, 99.0))
        return WindowStats(last, float(values.mean()), float(p50), float(p99), float(values.max()))

    def window_misses(self) -> int:
        """Misses among the cycles currently in the window."""
        with self._lock:
            return int(np.count_nonzero(self._missed[:self._filled]))

    def level(self) -> tuple[Level, str]:
        """Level and a one-line message, following the rules in the class docstring."""
        with self._lock:
            filled, consecutive = self._filled, self.consecutive_misses
            last_missed = filled > 0 and bool(self._missed[(self._next - 1) % self.window])
        if filled == 0:
            return Level.OK, 'no cycles yet'
        in_window = self.window_misses()
        fraction = in_window / filled
        if consecutive >= self.error_consecutive:
            return Level.ERROR, f'{consecutive} consecutive cycles over the {self.budget_ms:g} ms budget'
        if last_missed or fraction > self.warn_miss_fraction:
            return Level.WARN, (f'{in_window} of the last {filled} cycles over the {self.budget_ms:g} ms budget'
                                f'{" (last one included)" if last_missed else ""}')
        return Level.OK, f'{filled - in_window} of the last {filled} cycles within the {self.budget_ms:g} ms budget'

    def key_values(self) -> list[tuple[str, str]]:
        """Figures for diagnostic_msgs/KeyValue pairs: budget, counts, and stats of each quantity."""
        pairs = [
            ('deadline_ms', f'{self.budget_ms:g}'),
            ('cycles', str(self.cycles)),
            ('deadline_misses', str(self.misses)),
            ('deadline_misses_in_window', str(self.window_misses())),
            ('consecutive_misses', str(self.consecutive_misses)),
            ('max_consecutive_misses', str(self.max_consecutive_misses)),
            ('window', str(min(self._filled, self.window))),
        ]
        for quantity in self.QUANTITIES:
            s = self.stats(quantity)
            for field, value in zip(WindowStats._fields, s):
                pairs.append((f'{quantity}_ms_{field}', f'{value:.3f}'))
        return pairs
