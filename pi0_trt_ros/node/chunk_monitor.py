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

"""Chunk mode's deadlines: every control tick gets its command, every chunk comes before the running one runs out.

In ``chunk`` mode the next chunk is inferred while the running one is being published, so one
cycle's compute time is not what makes a command late. ``ChunkMonitor`` watches what does:

* Ticks. Each command must be published within its control tick (``period_ms``). A tick is
  missed when its command is published one period or more after it was due, or not at all while
  a chunk is being executed (the running chunk ran out before the next one came, or the control
  thread woke a whole period late).
* Chunks. Each new chunk must be ready before the running one runs out; its slack (run-out time
  minus ready time, ms) is negative when it came late. A chunk that replaced nothing (the first
  one, or the first after stale inputs or a new instruction) has no slack (NaN) and is never late.

Per chunk it also keeps the latency the lead has to cover (from when the chunk was asked for, or
from its set's hand-over if that came later, to the chunk ready), the model call alone and the
observation age. From the latency comes the lead, how long before the running chunk runs out the
next inference starts: ``lead_ms`` when given, else the p99 latency over the window plus
``lead_margin_ms`` (before the first chunk, ``prior_latency_ms``, the warm-up calls, stands in).

Level rules, in this order: ERROR when the last ``error_consecutive`` ticks were all missed or the
last ``error_consecutive`` chunks all came late; WARN when the last tick was missed or the last
chunk came late, or more than ``warn_miss_fraction`` of the ticks or of the chunks in the window
did; else OK. Rings are preallocated: recording a tick allocates nothing; recording a chunk
computes the lead's percentile (once per chunk). ``record_*`` run in the control thread;
``level``/``key_values``/``stats`` may run in another (diagnostics timer), under a lock.
"""

from __future__ import annotations

import math
import threading
from typing import Sequence

import numpy as np

from pi0_trt_ros.node.deadline import Level, WindowStats


def warm_up_latency_ms(calls_ms: Sequence[float]) -> float:
    """p99 of the warm-up calls (ms) after the first, which pays one-time costs; NaN without calls."""
    timed = list(calls_ms[1:] if len(calls_ms) > 1 else calls_ms)
    return float(np.percentile(timed, 99.0)) if timed else math.nan


class MissWindow:
    """Figures (ms) and a missed flag per event, in a preallocated ring, with running miss counts.

    Not thread-safe: its owner locks.
    """

    def __init__(self, quantities: Sequence[str], window: int) -> None:
        if window < 1:
            raise ValueError(f'window must be >= 1, got {window}')
        self.quantities = tuple(quantities)
        self.window = int(window)
        self._values = np.full((len(self.quantities), self.window), np.nan)  # [quantity, window] ms
        self._missed = np.zeros(self.window, np.bool_)  # [window]
        self._next = 0  # ring slot of the next event
        self.filled = 0  # valid slots, <= window
        self.count = 0
        self.misses = 0
        self.consecutive = 0  # misses in a row up to the last event
        self.max_consecutive = 0

    def record(self, missed: bool, values_ms: Sequence[float], repeat: int = 1) -> None:
        """Record ``repeat`` events with the same figures (``values_ms`` in ``quantities`` order)."""
        for _ in range(min(repeat, self.window)):
            i = self._next
            for row, value in enumerate(values_ms):
                self._values[row, i] = value
            self._missed[i] = missed
            self._next = (i + 1) % self.window
        self.filled = min(self.filled + repeat, self.window)
        self.count += repeat
        if missed:
            self.misses += repeat
            self.consecutive += repeat
            self.max_consecutive = max(self.max_consecutive, self.consecutive)
        else:
            self.consecutive = 0

    def last_missed(self) -> bool:
        return self.filled > 0 and bool(self._missed[(self._next - 1) % self.window])

    def misses_in_window(self) -> int:
        return int(np.count_nonzero(self._missed[:self.filled]))

    def finite(self, quantity: str) -> np.ndarray:
        """Return a copy of the finite figures of ``quantity`` in the window, oldest slot first (ms)."""
        row = self._values[self.quantities.index(quantity), :self.filled]
        return row[np.isfinite(row)].copy()

    def stats(self, quantity: str) -> WindowStats:
        """last/mean/p50/p99/max of ``quantity``'s finite figures in the window (NaN when there are none)."""
        values = self.finite(quantity)
        if values.size == 0:
            return WindowStats(math.nan, math.nan, math.nan, math.nan, math.nan)
        last = float(self._values[self.quantities.index(quantity), (self._next - 1) % self.window])
        p50, p99 = np.percentile(values, (50.0, 99.0))
        return WindowStats(last, float(values.mean()), float(p50), float(p99), float(values.max()))


class ChunkMonitor:
    """Ticks against the control period, chunks against the running chunk's end (module docstring)."""

    TICK_QUANTITIES = ('tick_late',)  # ms from a tick's due time to its command published
    CHUNK_QUANTITIES = ('chunk_slack', 'chunk_latency', 'inference', 'obs_age')  # ms

    def __init__(self, period_ms: float, window: int = 1000, warn_miss_fraction: float = 0.01,
                 error_consecutive: int = 3, lead_ms: float = 0.0, lead_margin_ms: float = 10.0,
                 prior_latency_ms: float = math.nan) -> None:
        if not period_ms > 0:
            raise ValueError(f'period_ms must be > 0, got {period_ms}')
        if error_consecutive < 1:
            raise ValueError(f'error_consecutive must be >= 1, got {error_consecutive}')
        if not (lead_ms >= 0 and lead_margin_ms >= 0):
            raise ValueError(f'lead_ms and lead_margin_ms must be >= 0, got {lead_ms} and {lead_margin_ms}')
        self.period_ms = float(period_ms)
        self.period_ns = int(round(period_ms * 1e6))
        self.warn_miss_fraction = float(warn_miss_fraction)
        self.error_consecutive = int(error_consecutive)
        self.lead_ms = float(lead_ms)  # 0: from the measured latency
        self.lead_margin_ms = float(lead_margin_ms)
        self._ticks = MissWindow(self.TICK_QUANTITIES, window)
        self._chunks = MissWindow(self.CHUNK_QUANTITIES, window)
        self._lock = threading.Lock()
        self.lead_ns = self._lead_ns(prior_latency_ms)

    # -- recording (control thread) ------------------------------------------------------------
    def record_tick(self, late_ns: int) -> bool:
        """Record a tick whose command was published ``late_ns`` after it was due; return whether it missed."""
        missed = late_ns >= self.period_ns
        with self._lock:
            self._ticks.record(missed, (late_ns * 1e-6,))
        return missed

    def record_missed_ticks(self, n: int = 1) -> None:
        """Record ``n`` ticks that got no command."""
        if n > 0:
            with self._lock:
                self._ticks.record(True, (math.nan,), repeat=n)

    def record_chunk(self, latency_ns: int, slack_ns: float, inference_ns: int, obs_age_ns: int) -> bool:
        """Record a chunk (``slack_ns`` NaN: it replaced nothing); update the lead; return whether it came late."""
        late = slack_ns < 0
        with self._lock:
            self._chunks.record(late, (slack_ns * 1e-6, latency_ns * 1e-6, inference_ns * 1e-6, obs_age_ns * 1e-6))
            latencies = self._chunks.finite('chunk_latency')
        self.lead_ns = self._lead_ns(float(np.percentile(latencies, 99.0)) if latencies.size else math.nan)
        return late

    def _lead_ns(self, latency_p99_ms: float) -> int:
        if self.lead_ms > 0:
            return int(round(self.lead_ms * 1e6))
        measured = latency_p99_ms if math.isfinite(latency_p99_ms) else 0.0
        return int(round((measured + self.lead_margin_ms) * 1e6))

    # -- figures (any thread) ------------------------------------------------------------------
    @property
    def ticks(self) -> int:
        return self._ticks.count

    @property
    def ticks_missed(self) -> int:
        return self._ticks.misses

    @property
    def chunks(self) -> int:
        return self._chunks.count

    @property
    def chunks_late(self) -> int:
        return self._chunks.misses

    def stats(self, quantity: str) -> WindowStats:
        """last/mean/p50/p99/max over the window of a quantity of ``TICK_QUANTITIES`` or ``CHUNK_QUANTITIES``, ms."""
        with self._lock:
            ring = self._ticks if quantity in self.TICK_QUANTITIES else self._chunks
            return ring.stats(quantity)

    def level(self) -> tuple[Level, str]:
        """Level and a one-line message, following the rules in the module docstring."""
        n = self.error_consecutive
        with self._lock:
            ticks, chunks = self._ticks, self._chunks
            if ticks.consecutive >= n:
                return Level.ERROR, f'{ticks.consecutive} consecutive control ticks without their command'
            if chunks.consecutive >= n:
                return Level.ERROR, f'{chunks.consecutive} consecutive chunks came after the running one ran out'
            tick_misses, chunk_misses = ticks.misses_in_window(), chunks.misses_in_window()
            problems = []
            if ticks.last_missed() or tick_misses > self.warn_miss_fraction * ticks.filled:
                problems.append(f'{tick_misses} of the last {ticks.filled} control ticks without their command'
                                f'{" (last one included)" if ticks.last_missed() else ""}')
            if chunks.last_missed() or chunk_misses > self.warn_miss_fraction * chunks.filled:
                problems.append(f'{chunk_misses} of the last {chunks.filled} chunks late'
                                f'{" (last one included)" if chunks.last_missed() else ""}')
            if problems:
                return Level.WARN, '; '.join(problems)
            if ticks.filled == 0:
                return Level.OK, 'no chunk executed yet'
            return Level.OK, (f'the last {ticks.filled} control ticks within their {self.period_ms:g} ms, the last '
                              f'{chunks.filled} chunks before the running one ran out '
                              f'(lead {self.lead_ns / 1e6:.1f} ms)')

    def key_values(self) -> list[tuple[str, str]]:
        """Figures for diagnostic_msgs/KeyValue pairs: period and lead, tick and chunk counts, and stats."""
        with self._lock:
            ticks, chunks = self._ticks, self._chunks
            pairs = [
                ('control_period_ms', f'{self.period_ms:g}'),
                ('chunk_lead_ms', f'{self.lead_ns / 1e6:.3f}'),
                ('ticks', str(ticks.count)),
                ('ticks_missed', str(ticks.misses)),
                ('ticks_missed_in_window', str(ticks.misses_in_window())),
                ('consecutive_ticks_missed', str(ticks.consecutive)),
                ('max_consecutive_ticks_missed', str(ticks.max_consecutive)),
                ('chunks', str(chunks.count)),
                ('chunks_late', str(chunks.misses)),
                ('chunks_late_in_window', str(chunks.misses_in_window())),
                ('consecutive_chunks_late', str(chunks.consecutive)),
                ('max_consecutive_chunks_late', str(chunks.max_consecutive)),
                ('window', str(ticks.window)),
            ]
            for ring in (ticks, chunks):
                for quantity in ring.quantities:
                    for field, value in zip(WindowStats._fields, ring.stats(quantity)):
                        pairs.append((f'{quantity}_ms_{field}', f'{value:.3f}'))
        return pairs
