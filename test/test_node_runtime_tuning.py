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

"""The node's interpreter settings, applied for real and restored: switch interval, malloc, GC mode."""

import gc
import os
import sys
from typing import Iterator
import weakref

import pytest

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
