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

"""JointPicker: configured joints in configured order, bad joint states rejected."""

import math
import tracemalloc

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import JointState

from pi0_trt_ros.node.joints import JointPicker

NAMES = ['shoulder', 'elbow', 'wrist']


def delivered(names: list[str], positions: list[float]) -> JointState:
    """Build a JointState as rclpy delivers it (position as array.array('d')), via a serialization round trip."""
    return deserialize_message(serialize_message(JointState(name=names, position=positions)), JointState)


def test_picks_configured_order_from_any_message_order() -> None:
    picker = JointPicker(NAMES)
    out = np.zeros(3, np.float32)
    msg = delivered(['wrist', 'shoulder', 'elbow'], [3.0, 1.0, 2.0])
    assert picker.pick_into(msg.name, msg.position, out) is None
    np.testing.assert_array_equal(out, [1.0, 2.0, 3.0])
    msg = delivered(['elbow', 'wrist', 'shoulder'], [-2.0, -3.0, -1.0])  # a new order re-maps
    assert picker.pick_into(msg.name, msg.position, out) is None
    np.testing.assert_array_equal(out, [-1.0, -2.0, -3.0])


def test_plain_lists_work_too() -> None:
    out = np.zeros(3, np.float32)
    assert JointPicker(NAMES).pick_into(['elbow', 'shoulder', 'wrist'], [0.5, 0.25, 0.125], out) is None
    np.testing.assert_array_equal(out, [0.25, 0.5, 0.125])


def test_extra_joints_are_ignored_and_reported() -> None:
    out = np.zeros(3, np.float32)
    msg = delivered(['gripper', 'wrist', 'elbow', 'base_x', 'shoulder'], [9.0, 3.0, 2.0, 8.0, 1.0])
    bad = JointPicker(NAMES).pick_into(msg.name, msg.position, out)
    assert bad is not None and bad.used and bad.counter == 'joint_extra'
    assert 'gripper' in bad.detail and 'base_x' in bad.detail
    np.testing.assert_array_equal(out, [1.0, 2.0, 3.0])


def test_missing_joint_is_rejected_and_named() -> None:
    out = np.full(3, 7.0, np.float32)
    picker = JointPicker(NAMES)
    bad = picker.pick_into(['shoulder', 'wrist'], [1.0, 3.0], out)
    assert bad is not None and not bad.used and bad.counter == 'joint_missing' and "'elbow'" in bad.detail
    assert (out == 7.0).all()
    bad = picker.pick_into(['shoulder', 'wrist'], [1.0, 3.0], out)  # cached verdict, same answer
    assert bad is not None and bad.counter == 'joint_missing'


def test_duplicate_names_are_rejected() -> None:
    names = ['shoulder', 'elbow', 'wrist', 'elbow']
    bad = JointPicker(NAMES).pick_into(names, [1.0, 2.0, 3.0, 4.0], np.zeros(3, np.float32))
    assert bad is not None and bad.counter == 'joint_names' and not bad.used


def test_fewer_positions_than_names_is_rejected() -> None:
    out = np.full(3, 7.0, np.float32)
    bad = JointPicker(NAMES).pick_into(NAMES, [1.0, 2.0], out)
    assert bad is not None and bad.counter == 'joint_positions' and not bad.used
    bad = JointPicker(NAMES).pick_into(NAMES, [], out)  # a JointState with velocities only
    assert bad is not None and bad.counter == 'joint_positions'
    assert (out == 7.0).all()


@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf, 1e39])  # 1e39 overflows float32
def test_non_finite_configured_joint_is_rejected(value: float) -> None:
    out = np.full(3, 7.0, np.float32)
    msg = delivered(NAMES, [1.0, value, 3.0])
    bad = JointPicker(NAMES).pick_into(msg.name, msg.position, out)
    assert bad is not None and bad.counter == 'joint_nonfinite' and not bad.used and 'elbow' in bad.detail
    assert (out == 7.0).all()


def test_non_finite_unconfigured_joint_does_not_matter() -> None:
    out = np.zeros(3, np.float32)
    msg = delivered(NAMES + ['gripper'], [1.0, 2.0, 3.0, math.nan])
    bad = JointPicker(NAMES).pick_into(msg.name, msg.position, out)
    assert bad is not None and bad.counter == 'joint_extra' and bad.used
    np.testing.assert_array_equal(out, [1.0, 2.0, 3.0])


def test_repeated_picks_allocate_nothing_sizable() -> None:
    picker = JointPicker(NAMES)
    out = np.zeros(3, np.float32)
    msg = delivered(['wrist', 'shoulder', 'elbow'], [3.0, 1.0, 2.0])
    picker.pick_into(msg.name, msg.position, out)
    tracemalloc.start()
    try:
        for _ in range(1000):
            picker.pick_into(msg.name, msg.position, out)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096, f'{peak} bytes peak over 1000 picks'


def test_bad_configuration_raises() -> None:
    with pytest.raises(ValueError, match='joint_names is empty'):
        JointPicker([])
    with pytest.raises(ValueError, match='duplicates'):
        JointPicker(['a', 'b', 'a'])


@pytest.mark.parametrize('value', [3.0e38, -1e6, 1.31, -1.31])
def test_position_outside_the_limits_by_more_than_the_margin_is_rejected(value: float) -> None:
    picker = JointPicker(NAMES, lower=[-1.0] * 3, upper=[1.0] * 3, margin=0.3)
    out = np.full(3, 7.0, np.float32)
    msg = delivered(NAMES, [0.0, value, 0.0])
    bad = picker.pick_into(msg.name, msg.position, out)
    assert bad is not None and not bad.used and bad.counter == 'joint_out_of_limits'
    assert 'elbow' in bad.detail
    np.testing.assert_array_equal(out, 7.0)  # untouched: neither policy input nor hold target


def test_position_within_the_margin_is_used_as_read() -> None:
    picker = JointPicker(NAMES, lower=[-1.0] * 3, upper=[1.0] * 3, margin=0.3)
    out = np.zeros(3, np.float32)
    assert picker.pick_into(NAMES, [1.29, -1.29, 1.0], out) is None
    np.testing.assert_allclose(out, [1.29, -1.29, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match='both lower and upper'):
        JointPicker(NAMES, lower=[-1.0] * 3)
    with pytest.raises(ValueError, match='one per joint'):
        JointPicker(NAMES, lower=[-1.0] * 2, upper=[1.0] * 2)
