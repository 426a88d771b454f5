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

"""Chunk mode's parts: the per-tick plan (switch index, cross-fade), the deadline monitor, the inference thread."""

import collections
import math
import threading
import time
import tracemalloc
from typing import Callable

import numpy as np
import pytest

from pi0_trt_ros.node.chunk_monitor import ChunkMonitor, warm_up_latency_ms
from pi0_trt_ros.node.chunk_plan import ChunkPlan, switch_index
from pi0_trt_ros.node.deadline import Level
from pi0_trt_ros.node.inference_worker import InferenceWorker

MS = 1_000_000


# -- ChunkPlan -----------------------------------------------------------------------------------
def test_switch_index_counts_whole_periods_since_the_observation() -> None:
    period = 20 * MS
    assert switch_index(1000 * MS, 1000 * MS, period) == 0
    assert switch_index(1000 * MS, 1000 * MS - (period - 1), period) == 0
    assert switch_index(1000 * MS, 1000 * MS - period, period) == 1
    assert switch_index(1000 * MS, 1000 * MS - 170 * MS, period) == 8
    assert switch_index(1000 * MS, 1000 * MS + 5 * MS, period) == 0  # an observation stamped after the tick


def test_a_plan_executes_n_action_steps_from_the_switch_index_and_pads_the_trajectory() -> None:
    chunk = np.arange(10.0)[:, None] * np.ones((1, 2))  # [T=10, dof=2]: row k holds k
    plan = ChunkPlan(n_action_steps=4, chunk_size=10, dof=2)
    plan.load(chunk, start_index=3)
    np.testing.assert_array_equal(plan.rows[:, 0], [3, 4, 5, 6, 7, 8, 9, 9, 9, 9])  # the rest, then the last
    out = np.zeros(2)
    got = []
    while plan.pop_into(out):
        got.append(out[0])
    assert got == [3, 4, 5, 6] and plan.remaining == 0 and not plan.pop_into(out)
    plan.load(chunk, start_index=8)  # fewer actions left than n_action_steps: the chunk's end comes first
    assert plan.length == 2
    plan.skip(1)
    assert plan.pop_into(out) and out[0] == 9 and plan.remaining == 0
    plan.clear()
    assert plan.remaining == 0 and not plan.pop_into(out)


def lerobot_select_action(chunks: list[np.ndarray], n_action_steps: int, calls: int) -> list[np.ndarray]:
    """Replay LeRobot PI0Policy.select_action's queue: refill with chunk[:n] when empty, pop one per call."""
    queue: collections.deque = collections.deque(maxlen=n_action_steps)
    source = iter(chunks)
    out = []
    for _ in range(calls):
        if not queue:
            queue.extend(next(source)[:n_action_steps])
        out.append(queue.popleft())
    return out


@pytest.mark.parametrize('n_action_steps', [1, 3, 10])
def test_chunks_switched_at_index_0_when_the_previous_runs_out_are_lerobot_select_action(n_action_steps: int) -> None:
    rng = np.random.default_rng(n_action_steps)
    chunks = [rng.normal(size=(10, 2)) for _ in range(8)]
    expected = lerobot_select_action(chunks, n_action_steps, calls=3 * n_action_steps + 1)
    plan = ChunkPlan(n_action_steps, chunk_size=10, dof=2)
    source = iter(chunks)
    got = []
    out = np.zeros(2)
    for _ in range(len(expected)):
        if plan.remaining == 0:
            plan.load(next(source), start_index=0)
        assert plan.pop_into(out)
        got.append(out.copy())
    np.testing.assert_array_equal(np.array(got), np.array(expected))


def test_crossfade_weights_grow_linearly_from_the_running_chunk_to_the_new_one() -> None:
    old_chunk, new_chunk = np.full((10, 1), 1.0), np.full((10, 1), 5.0)
    running = ChunkPlan(4, 10, 1, crossfade_steps=3)
    running.load(old_chunk, start_index=0)
    running.skip(1)
    plan = ChunkPlan(4, 10, 1, crossfade_steps=3)
    plan.load(new_chunk, start_index=2, previous=running)
    # new share 1/4, 2/4, 3/4, then the new chunk alone
    np.testing.assert_allclose(plan.rows[:5, 0], [2.0, 3.0, 4.0, 5.0, 5.0], rtol=0, atol=1e-15)
    # from a running chunk with rows of its own: its next rows, then its last one once it runs out
    running.load(np.arange(10.0)[:, None], start_index=0)
    running.skip(2)  # next action: 2; its last commanded action: 3 (n_action_steps 4)
    plan.load(new_chunk, start_index=0, previous=running)
    old = np.array([2.0, 3.0, 3.0])
    np.testing.assert_allclose(plan.rows[:3, 0], old + np.array([1, 2, 3]) / 4 * (5.0 - old), rtol=0, atol=1e-15)
    plan.load(new_chunk, start_index=0)  # nothing running: no blend
    np.testing.assert_array_equal(plan.rows[:, 0], new_chunk[:, 0])


def test_loading_and_popping_allocate_nothing() -> None:
    chunk = np.random.default_rng(0).normal(size=(50, 6))
    plans = [ChunkPlan(50, 50, 6, crossfade_steps=5) for _ in range(2)]
    out = np.zeros(6)
    plans[0].load(chunk, 0)
    plans[1].load(chunk, 7, previous=plans[0])
    tracemalloc.start()
    try:
        for i in range(200):
            plans[i % 2].load(chunk, i % 40, previous=plans[(i + 1) % 2])
            plans[i % 2].pop_into(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096, f'{peak} bytes peak'


def test_plan_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r'n_action_steps must be in \[1, chunk size 10\]'):
        ChunkPlan(11, 10, 1)
    with pytest.raises(ValueError, match=r'crossfade_steps must be in \[0, chunk size 10\)'):
        ChunkPlan(4, 10, 1, crossfade_steps=10)
    with pytest.raises(ValueError, match=r'start_index must be in \[0, 10\)'):
        ChunkPlan(4, 10, 1).load(np.zeros((10, 1)), start_index=10)


# -- ChunkMonitor --------------------------------------------------------------------------------
def test_a_tick_is_missed_when_its_command_is_a_whole_period_late_or_absent() -> None:
    monitor = ChunkMonitor(20.0, window=10)
    assert monitor.record_tick(20 * MS - 1) is False
    assert monitor.record_tick(20 * MS) is True
    monitor.record_missed_ticks(3)
    assert (monitor.ticks, monitor.ticks_missed) == (5, 4)
    assert monitor.stats('tick_late').max == pytest.approx(20.0) and math.isnan(monitor.stats('tick_late').last)
    monitor.record_missed_ticks(25)  # more than the window: counted, the window keeps the newest
    assert (monitor.ticks, monitor.ticks_missed) == (30, 29)
    assert dict(monitor.key_values())['ticks_missed_in_window'] == '10'


def test_levels_follow_missed_ticks_and_late_chunks() -> None:
    monitor = ChunkMonitor(20.0, window=10, error_consecutive=3)
    assert monitor.level() == (Level.OK, 'no chunk executed yet')
    for _ in range(5):
        monitor.record_tick(0)
    assert monitor.level()[0] == Level.OK
    monitor.record_missed_ticks(3)
    assert monitor.level() == (Level.ERROR, '3 consecutive control ticks without their command')
    monitor.record_tick(0)
    level, message = monitor.level()
    assert level == Level.WARN and '3 of the last 9 control ticks' in message
    for _ in range(10):
        monitor.record_tick(0)
    assert monitor.level()[0] == Level.OK
    assert monitor.record_chunk(50 * MS, math.nan, 40 * MS, 60 * MS) is False  # replaced nothing: never late
    assert monitor.record_chunk(50 * MS, 0.0, 40 * MS, 60 * MS) is False  # ready at the run-out: in time
    assert monitor.record_chunk(50 * MS, -1.0, 40 * MS, 60 * MS) is True
    level, message = monitor.level()
    assert level == Level.WARN and '1 of the last 3 chunks late (last one included)' in message
    monitor.record_chunk(50 * MS, -5.0 * MS, 40 * MS, 60 * MS)
    monitor.record_chunk(50 * MS, -5.0 * MS, 40 * MS, 60 * MS)
    assert monitor.level() == (Level.ERROR, '3 consecutive chunks came after the running one ran out')
    pairs = dict(monitor.key_values())
    assert (pairs['chunks'], pairs['chunks_late'], pairs['max_consecutive_chunks_late']) == ('5', '3', '3')
    assert pairs['chunk_slack_ms_last'] == '-5.000' and pairs['chunk_latency_ms_p50'] == '50.000'


def test_the_lead_is_the_given_one_or_the_p99_latency_plus_the_margin() -> None:
    assert ChunkMonitor(20.0, lead_ms=75.0, prior_latency_ms=30.0).lead_ns == 75 * MS
    monitor = ChunkMonitor(20.0, window=100, lead_margin_ms=10.0, prior_latency_ms=30.0)
    assert monitor.lead_ns == 40 * MS  # warm-up figure + margin until a chunk is measured
    for latency_ms in range(1, 101):  # 1..100 ms: p99 (linear interpolation) 99.01 ms
        monitor.record_chunk(latency_ms * MS, math.nan, 0, 0)
    assert monitor.lead_ns == int(round((np.percentile(np.arange(1, 101), 99.0) + 10.0) * 1e6))
    assert ChunkMonitor(20.0, lead_margin_ms=10.0).lead_ns == 10 * MS  # nothing measured: the margin alone
    with pytest.raises(ValueError, match='lead_ms and lead_margin_ms must be >= 0'):
        ChunkMonitor(20.0, lead_ms=-1.0)


def test_warm_up_latency_is_the_p99_of_the_calls_after_the_first() -> None:
    assert warm_up_latency_ms([900.0, 5.0, 6.0, 7.0]) == pytest.approx(np.percentile([5.0, 6.0, 7.0], 99.0))
    assert warm_up_latency_ms([9.0]) == 9.0
    assert math.isnan(warm_up_latency_ms([]))


def test_recording_a_tick_allocates_nothing() -> None:
    monitor = ChunkMonitor(20.0, window=100)
    monitor.record_tick(1)
    tracemalloc.start()
    try:
        for i in range(500):
            monitor.record_tick(i * 1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2048, f'{peak} bytes peak'


# -- InferenceWorker -----------------------------------------------------------------------------
def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.001)


def test_the_worker_runs_one_job_at_a_time_and_hands_back_its_result() -> None:
    gate = threading.Event()
    seen: list[int] = []

    def job(x: int) -> int:
        seen.append(x)
        assert gate.wait(30.0)
        return 2 * x

    worker = InferenceWorker(job)
    try:
        assert not worker.busy and worker.poll() is None
        worker.start(21)
        assert worker.busy and worker.running
        with pytest.raises(RuntimeError, match='the worker is running'):
            worker.start(1)
        wait_for(lambda: seen == [21], 'the job to start')
        assert worker.poll() is None  # still running: the caller does not wait
        gate.set()
        wait_for(lambda: not worker.running, 'the job to finish')
        assert worker.busy  # done, not yet collected
        with pytest.raises(RuntimeError, match='the worker is done'):
            worker.start(1)
        assert worker.poll() == 42 and not worker.busy and worker.poll() is None
    finally:
        gate.set()
        worker.close()


def test_an_exception_in_the_job_is_raised_by_poll_and_the_worker_goes_on() -> None:
    def job(x: int) -> int:
        if x < 0:
            raise ValueError(f'negative {x}')
        return x

    worker = InferenceWorker(job)
    try:
        worker.start(-1)
        wait_for(lambda: not worker.running, 'the job to finish')
        with pytest.raises(ValueError, match='negative -1'):
            worker.poll()
        assert not worker.busy
        worker.start(3)
        wait_for(lambda: not worker.running, 'the second job')
        assert worker.poll() == 3
    finally:
        worker.close()


def test_close_lets_the_running_job_finish_and_refuses_new_ones() -> None:
    gate = threading.Event()
    worker = InferenceWorker(lambda x: gate.wait(30.0) and x)
    worker.start(5)
    closer = threading.Thread(target=worker.close)
    closer.start()
    gate.set()
    closer.join(30.0)
    assert not closer.is_alive() and worker.poll() == 5
    with pytest.raises(RuntimeError, match='closed'):
        worker.start(6)
