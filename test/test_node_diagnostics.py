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

"""The node's diagnostics rules on plain values and a given time: input liveness, the inputs' level, key/values."""

import os
from typing import Any

import pytest

from pi0_trt_ros.node.deadline import Level
from pi0_trt_ros.node.diagnostics import diagnostic_status, input_key_values, InputLiveness, inputs_level
from pi0_trt_ros.node.faults import FaultCounters
from pi0_trt_ros.testing.dds import domain_id

DOMAIN_ID = domain_id(98)  # no DDS traffic here, but the module keeps a domain of its own
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
MS = 1_000_000  # ns
SOURCES = ('camera base', 'camera wrist', 'joint_states')


class Logged:
    """Collects log lines, per severity."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.infos: list[str] = []


def liveness(timeout_ms: float = 500.0) -> tuple[InputLiveness, FaultCounters, Logged]:
    logged = Logged()
    faults = FaultCounters(logged.warnings.append, logged.infos.append, throttle_sec=0.0)
    return InputLiveness(SOURCES, 2, timeout_ms, faults, logged.infos.append), faults, logged


def test_an_input_silent_past_the_timeout_stops_once_and_comes_back() -> None:
    alive, faults, logged = liveness(500.0)
    last = [1000 * MS, 1000 * MS, 1000 * MS]
    alive.check(1500 * MS, last)  # exactly the timeout: not yet
    assert alive.stopped == [False, False, False] and alive.stopped_names() == ''
    last[2] = 1400 * MS  # joint states keep coming
    alive.check(1501 * MS, last)
    assert alive.stopped == [True, True, False]
    assert alive.stopped_names() == 'camera base, camera wrist'
    assert faults.count('camera_stopped') == 2 and faults.count('joint_states_stopped') == 0
    assert logged.warnings == ['camera base: no message for 501 ms [camera_stopped]',
                               'camera wrist: no message for 501 ms [camera_stopped]']
    alive.check(3000 * MS, last)  # still silent: counted once
    assert faults.count('camera_stopped') == 2 and faults.count('joint_states_stopped') == 1
    last[0] = 2900 * MS
    alive.check(3000 * MS, last)
    assert alive.stopped == [False, True, True] and logged.infos == ['camera base: messages again']


def test_an_input_that_never_sent_is_not_stopped() -> None:
    alive, faults, _ = liveness(10.0)
    alive.check(10_000 * MS, [0, 0, 0])
    assert alive.stopped == [False, False, False] and faults.counts() == {}


LEVEL_CASES = [  # (overrides of the calm state, level, message): each row's condition wins over the next rows'
    ({'has_instruction': False, 'commands_stopped': True}, Level.OK, 'waiting for an instruction'),
    ({'commands_stopped': True, 'stale': True}, Level.ERROR, 'inputs stale: commands stopped'),
    ({'stale': True, 'failing': 'frame decode failed'}, Level.WARN, 'inputs stale: hold'),
    ({'failing': 'frame decode failed', 'stopped_inputs': 'camera base'}, Level.WARN,
     'sets not usable: frame decode failed'),
    ({'stopped_inputs': 'camera base', 'has_set': False}, Level.WARN, 'stopped: camera base'),
    ({'has_set': False}, Level.WARN, 'no synchronized observation yet'),
    ({}, Level.OK, 'receiving'),
]


@pytest.mark.parametrize('overrides,level,message', LEVEL_CASES)
def test_inputs_level_takes_the_first_condition_that_applies(overrides: dict[str, Any], level: Level,
                                                             message: str) -> None:
    calm = {'has_instruction': True, 'commands_stopped': False, 'stale': False, 'failing': '', 'on_stale': 'hold',
            'stopped_inputs': '', 'has_set': True}
    assert inputs_level(**{**calm, **overrides}) == (level, message)


def test_input_key_values_write_counters_ages_and_faults_in_order() -> None:
    pairs = input_key_values(
        2_000 * MS + 250_000, instruction='pick it up', inference_mode='chunk', commands_published=7,
        holds_published=2, sets_emitted=9, sets_superseded=1, sync_dropped=3, joint_lookup_misses=4,
        cameras=['base', 'wrist'], received=[10, 11, 40], last_accepted_ns=[1_990 * MS, 0, 1_999 * MS],
        faults=[('bad_input.image_encoding', '1'), ('bad_input.image_encoding.last', 'camera base: yuv422')])
    assert pairs == [
        ('instruction', 'pick it up'), ('inference_mode', 'chunk'), ('commands_published', '7'),
        ('holds_published', '2'), ('sets_emitted', '9'), ('sets_superseded', '1'), ('sync_dropped', '3'),
        ('joint_lookup_misses', '4'), ('camera.base.received', '10'), ('camera.base.age_ms', '10.2'),
        ('camera.wrist.received', '11'), ('camera.wrist.age_ms', 'never'),
        ('bad_input.image_encoding', '1'), ('bad_input.image_encoding.last', 'camera base: yuv422')]


def test_diagnostic_status_carries_level_name_message_and_values() -> None:
    status = diagnostic_status('/pi0_control: inputs', 'onnxruntime:/export', Level.ERROR, 'stale',
                               [('a', '1'), ('b', 'x')])
    assert status.level == bytes([2]) and status.name == '/pi0_control: inputs' and status.message == 'stale'
    assert status.hardware_id == 'onnxruntime:/export'
    assert [(kv.key, kv.value) for kv in status.values] == [('a', '1'), ('b', 'x')]
