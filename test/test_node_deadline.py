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

"""DeadlineMonitor figures and levels."""

import math
import tracemalloc

import numpy as np
import pytest

from pi0_trt_ros.node.deadline import DeadlineMonitor, Level

MS = 1_000_000


def test_budget_is_inclusive() -> None:
    monitor = DeadlineMonitor(20.0)
    assert monitor.record(20 * MS, 0, 0) is False
    assert monitor.record(20 * MS + 1, 0, 0) is True
    assert monitor.missed(20 * MS) is False and monitor.missed(20 * MS + 1) is True
    assert (monitor.cycles, monitor.misses) == (2, 1)


def test_stats_cover_only_the_window() -> None:
    monitor = DeadlineMonitor(20.0, window=10)
    compute = np.arange(1, 26, dtype=np.float64)  # 25 cycles: the window keeps 16..25
    for k, c in enumerate(compute):
        monitor.record(int(c * MS), int(2 * c * MS), int(0.5 * c * MS))
    kept = compute[-10:]
    s = monitor.stats('compute')
    assert s.last == 25.0 and s.max == 25.0
    assert s.mean == pytest.approx(kept.mean())
    assert s.p50 == pytest.approx(np.percentile(kept, 50)) and s.p99 == pytest.approx(np.percentile(kept, 99))
    assert monitor.stats('obs_age').max == 50.0 and monitor.stats('inference').last == 12.5
    assert monitor.cycles == 25 and monitor.misses == 5  # 21..25 ms are over 20


def test_stats_before_any_cycle_are_nan() -> None:
    s = DeadlineMonitor(20.0).stats('compute')
    assert all(math.isnan(v) for v in s)


def test_consecutive_misses_and_levels() -> None:
    monitor = DeadlineMonitor(10.0, window=1000, error_consecutive=3)
    assert monitor.level() == (Level.OK, 'no cycles yet')
    for _ in range(200):
        monitor.record(5 * MS, 0, 0)
    assert monitor.level()[0] == Level.OK
    monitor.record(11 * MS, 0, 0)
    level, message = monitor.level()
    assert level == Level.WARN and 'last one included' in message
    monitor.record(11 * MS, 0, 0)
    assert monitor.level()[0] == Level.WARN
    monitor.record(11 * MS, 0, 0)
    level, message = monitor.level()
    assert level == Level.ERROR and '3 consecutive' in message
    assert monitor.consecutive_misses == 3
    monitor.record(5 * MS, 0, 0)
    assert monitor.consecutive_misses == 0 and monitor.max_consecutive_misses == 3
    # 3 misses in 204 cycles is 1.5 % > 1 %: still WARN although the last cycle was in time
    level, message = monitor.level()
    assert level == Level.WARN and '3 of the last 204' in message
    for _ in range(200):
        monitor.record(5 * MS, 0, 0)
    assert monitor.level()[0] == Level.OK  # 3 in 404 < 1 %


def test_key_values_carry_the_figures() -> None:
    monitor = DeadlineMonitor(20.0, window=100)
    for c in (5, 30, 10):
        monitor.record(c * MS, 40 * MS, 3 * MS)
    kv = dict(monitor.key_values())
    assert kv['deadline_ms'] == '20' and kv['cycles'] == '3' and kv['deadline_misses'] == '1'
    assert kv['consecutive_misses'] == '0' and kv['max_consecutive_misses'] == '1'
    assert float(kv['compute_ms_last']) == 10.0 and float(kv['compute_ms_max']) == 30.0
    assert float(kv['compute_ms_mean']) == pytest.approx(15.0)
    assert float(kv['obs_age_ms_p50']) == 40.0 and float(kv['inference_ms_p99']) == 3.0


def test_record_allocates_nothing() -> None:
    monitor = DeadlineMonitor(20.0, window=100)
    monitor.record(1, 1, 1)
    tracemalloc.start()
    try:
        for k in range(5000):
            monitor.record(k * 1000, k * 2000, k * 500)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2048, f'{peak} bytes peak over 5000 records'


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match='budget_ms'):
        DeadlineMonitor(0.0)
    with pytest.raises(ValueError, match='window'):
        DeadlineMonitor(20.0, window=0)
    with pytest.raises(ValueError, match='error_consecutive'):
        DeadlineMonitor(20.0, error_consecutive=0)
