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

"""The node's process settings, applied for real and restored: switch interval, malloc, GC mode, scheduling."""

import gc
import os
import sys
import threading
from typing import Iterator
import weakref

import pytest

from pi0_trt_ros.node.param_specs import SPECS
from pi0_trt_ros.node.runtime_tuning import RuntimeTuning, tune_malloc
from pi0_trt_ros.testing.dds import domain_id

DOMAIN_ID = domain_id(99)  # no DDS traffic here, but the module keeps a domain of its own
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'


class Cyclic:
    """An object that refers to itself."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def interpreter_restored() -> Iterator[None]:
    """Put the switch interval and the collector back as they were, whatever a test did."""
    interval, enabled = sys.getswitchinterval(), gc.isenabled()
    yield
    sys.setswitchinterval(interval)
    gc.unfreeze()
    (gc.enable if enabled else gc.disable)()


def test_tuned_mode_sets_the_interval_freezes_and_disables_gc_until_release() -> None:
    tuning = RuntimeTuning('tuned', switch_interval_ms=0.5, malloc=False)
    assert tuning.apply() == []
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert not gc.isenabled() and gc.get_freeze_count() > 0
    cycle = Cyclic()
    alive = weakref.ref(cycle)
    del cycle
    assert alive() is not None  # a reference cycle: only a collection frees it, and automatic GC is off
    tuning.after_cycle(1)  # generation 0 collected in the control thread's idle time
    assert alive() is None
    tuning.release()
    assert gc.isenabled()
    tuning.release()  # idempotent
    assert gc.isenabled()


def test_default_mode_and_zero_interval_leave_the_interpreter_alone() -> None:
    sys.setswitchinterval(0.004)
    gc.enable()
    tuning = RuntimeTuning('default', switch_interval_ms=0.0, malloc=False)
    tuning.apply()
    tuning.after_cycle(64)
    tuning.between_diagnostics()
    assert sys.getswitchinterval() == pytest.approx(0.004) and gc.isenabled() and gc.get_freeze_count() == 0
    tuning.release()
    assert gc.isenabled()


def test_release_before_apply_leaves_gc_disabled_if_it_was() -> None:
    gc.disable()
    RuntimeTuning('tuned', switch_interval_ms=0.5, malloc=False).release()
    assert not gc.isenabled()


@pytest.mark.skipif(sys.platform != 'linux', reason='mallopt is glibc')
def test_malloc_tuning_takes_effect_on_glibc() -> None:
    assert tune_malloc()
    assert RuntimeTuning('default', switch_interval_ms=0.0, malloc=True).apply() == []


def test_unknown_gc_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="gc_mode must be 'tuned' or 'default'"):
        RuntimeTuning('aggressive', switch_interval_ms=0.5, malloc=False)


@pytest.mark.skipif(not hasattr(os, 'sched_getscheduler'), reason='Linux scheduling calls')
def test_realtime_priority_makes_the_threads_sched_fifo_or_says_why_not() -> None:
    done = threading.Event()
    threads = [threading.Thread(target=done.wait, name=f'worker_{i}') for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert RuntimeTuning('default', 0.0, False, realtime_priority=0).realtime(threads) == []
        assert [os.sched_getscheduler(t.native_id) for t in threads] == [os.SCHED_OTHER] * 2
        warnings = RuntimeTuning('default', 0.0, False, realtime_priority=10).realtime(threads)
        policies = [os.sched_getscheduler(t.native_id) for t in threads]
        if warnings:  # no CAP_SYS_NICE nor rtprio limit here: said so, and nothing changed
            assert warnings[0].startswith('realtime_priority 10: the OS refused SCHED_FIFO for thread worker_0')
            assert 'rtprio' in warnings[0] and policies == [os.SCHED_OTHER] * 2
        else:
            assert policies == [os.SCHED_FIFO] * 2
            assert [os.sched_getparam(t.native_id).sched_priority for t in threads] == [10, 10]
    finally:
        done.set()
        for thread in threads:
            thread.join()


def test_realtime_priority_is_a_sched_fifo_priority_or_zero() -> None:
    spec = SPECS['realtime_priority']
    assert spec.problem(0) is None and spec.problem(98) is None
    assert spec.problem(99) == 'realtime_priority must be 0 to 98 (0: leave their scheduling alone), got 99'
    assert spec.problem(-1) == 'realtime_priority must be 0 to 98 (0: leave their scheduling alone), got -1'
