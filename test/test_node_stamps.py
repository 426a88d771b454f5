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

"""StampGate: zero, backwards, future and clock-jump stamps, judged against an explicit node time."""

import pytest

from pi0_trt_ros.node.stamps import StampGate

MS = 1_000_000
NOW = 1_700_000_000 * 1000 * MS


def test_increasing_stamps_are_accepted() -> None:
    gate = StampGate(2, max_future_ns=300 * MS)
    for k in range(5):
        v = gate.check(0, NOW - 100 * MS + k * MS, NOW)
        assert v.accepted and not v.reset_sync and v.bad is None
    assert gate.check(1, NOW - 500 * MS, NOW).accepted  # inputs are independent


def test_zero_and_backward_stamps_are_rejected() -> None:
    gate = StampGate(1, max_future_ns=300 * MS)
    assert gate.check(0, 0, NOW).bad.counter == 'stamp_zero'
    assert gate.check(0, NOW, NOW).accepted
    v = gate.check(0, NOW - 10 * MS, NOW)
    assert not v.accepted and v.bad.counter == 'stamp_backwards' and '10.000 ms' in v.bad.detail


def test_one_future_stamp_is_rejected_and_does_not_poison_the_input() -> None:
    gate = StampGate(1, max_future_ns=300 * MS)
    assert gate.check(0, NOW - 20 * MS, NOW).accepted
    v = gate.check(0, NOW + 900 * MS, NOW)
    assert not v.accepted and v.bad.counter == 'stamp_future' and '900.0 ms ahead' in v.bad.detail
    for k in range(1, 4):  # the good messages after it are not "backwards"
        assert gate.check(0, NOW - 20 * MS + k * MS, NOW + k * MS).bad is None
    assert gate.check(0, NOW + 250 * MS, NOW).accepted  # within the bound: a clock a little ahead


def test_every_message_far_in_the_future_is_rejected_and_zero_disables_the_bound() -> None:
    gate = StampGate(1, max_future_ns=300 * MS)
    assert all(gate.check(0, NOW + 10_000 * MS + k, NOW).bad.counter == 'stamp_future' for k in range(10))
    assert StampGate(1, max_future_ns=0).check(0, NOW + 10_000 * MS, NOW).accepted


def test_a_large_backward_jump_resets_every_input() -> None:
    gate = StampGate(2, max_future_ns=300 * MS)
    gate.check(0, NOW, NOW)
    gate.check(1, NOW, NOW)
    v = gate.check(0, NOW - 5000 * MS, NOW)
    assert v.accepted and v.reset_sync and v.bad.counter == 'clock_jump' and v.bad.used
    assert gate.check(1, NOW - 4999 * MS, NOW).accepted  # the other input starts over too


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        StampGate(0, 1)
    with pytest.raises(ValueError):
        StampGate(1, -1)


def test_a_repeated_stamp_is_rejected_unless_the_input_may_repeat() -> None:
    gate = StampGate(2, max_future_ns=300 * MS, repeat_ok=(1,))
    for index in (0, 1):
        assert gate.check(index, NOW - 20 * MS, NOW).accepted
    v = gate.check(0, NOW - 20 * MS, NOW)  # a camera frame sent again
    assert not v.accepted and v.bad.counter == 'stamp_repeated'
    assert gate.check(1, NOW - 20 * MS, NOW) == (True, False, None)  # joint states: the later reading wins
    assert gate.check(0, NOW - 19 * MS, NOW).accepted  # the stream goes on
    with pytest.raises(ValueError, match='repeat_ok'):
        StampGate(2, 1, repeat_ok=(2,))
