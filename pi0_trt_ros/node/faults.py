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

"""Bad inputs: why a message was noteworthy (``BadInput``), and how many of each kind came (``FaultCounters``).

Every part that judges an input (frame headers, joint states, stamps, the instruction, the
policy's output) returns a ``BadInput`` instead of logging; ``FaultCounters`` counts them by kind
for ``/diagnostics`` and logs each (source, kind) at most once per throttle period, with the
number suppressed since the last line.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, NamedTuple


class BadInput(NamedTuple):
    """Why an input message was noteworthy: a counter key for diagnostics and a log detail.

    ``used`` is False when the message was rejected (not staged), True when it was used anyway
    (row padding, a big-endian flag on 8-bit data, a resized frame, extra joint names).
    """

    counter: str
    detail: str
    used: bool = False


class FaultCounters:
    """Counts bad inputs by kind; logs each (source, kind) at most once per ``throttle_sec``.

    Rejections (``used=False``) and faults such as stale inputs log as warnings, notes about
    inputs used anyway (``used=True``) as info.

    rclpy's own ``throttle_duration_sec`` throttles per call site, and one call site here reports
    every kind from every source, so one noisy camera would silence the others: the throttling is
    done here instead, per (source, kind), with the count of suppressed lines added to the next one.
    Thread-safe: subscription callbacks and the control thread both report.
    """

    def __init__(self, warn: Callable[[str], object], info: Callable[[str], object], throttle_sec: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._warn = warn
        self._info = info
        self.throttle_sec = float(throttle_sec)
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._last_detail: dict[str, str] = {}
        self._last_log: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def add(self, source: str, bad: BadInput) -> None:
        """Count ``bad`` (from ``source``, e.g. 'camera top') and log it unless throttled."""
        key = (source, bad.counter)
        now = self._clock()
        with self._lock:
            self._counts[bad.counter] = self._counts.get(bad.counter, 0) + 1
            self._last_detail[bad.counter] = f'{source}: {bad.detail}'
            last = self._last_log.get(key)
            if last is not None and now - last < self.throttle_sec:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last_log[key] = now
            suppressed = self._suppressed.pop(key, 0)
        more = f' ({suppressed} more since the last report)' if suppressed else ''
        line = f'{source}: {bad.detail} [{bad.counter}]{more}'
        # Two call sites on purpose: rclpy refuses one call site logging at two severities.
        if bad.used:
            self._info(line)
        else:
            self._warn(line)

    def count(self, counter: str) -> int:
        """How many times ``counter`` was reported (0 if never)."""
        with self._lock:
            return self._counts.get(counter, 0)

    def counts(self) -> dict[str, int]:
        """Return a copy of all counters."""
        with self._lock:
            return dict(self._counts)

    def key_values(self) -> list[tuple[str, str]]:
        """``bad_input.<kind>`` counts and ``bad_input.<kind>.last`` details, sorted by kind."""
        with self._lock:
            items = sorted(self._counts.items())
            details = dict(self._last_detail)
        pairs: list[tuple[str, str]] = []
        for counter, n in items:
            pairs.append((f'bad_input.{counter}', str(n)))
            pairs.append((f'bad_input.{counter}.last', details[counter]))
        return pairs
