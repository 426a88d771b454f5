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

"""Action sanitizing and the reused command messages."""

import math
import tracemalloc

import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from pi0_trt_ros.node.actions import ActionSanitizer, CommandWriter, Float64ArrayMessage, TrajectoryMessage

LOWER = [-1.0, -2.0, 0.0]
UPPER = [1.0, 2.0, 0.5]


def written(traj: TrajectoryMessage, chunk: np.ndarray, stamp_ns: int = 0) -> bytes:
    """Write ``chunk`` [T, dof] into the message's points as the node does (in place), return the stamped bytes."""
    np.copyto(traj.positions, chunk)
    return traj.serialized(stamp_ns)


def test_sanitizer_clamps_to_joint_limits() -> None:
    sanitizer = ActionSanitizer(LOWER, UPPER, max_rows=4)
    chunk = np.array([[0.5, 3.0, -1.0], [-5.0, 0.0, 0.25]], np.float32)
    out = np.zeros((2, 3))
    assert sanitizer.sanitize_into(chunk, np.zeros(3), out) == 0
    np.testing.assert_array_equal(out, [[0.5, 2.0, 0.0], [-1.0, 0.0, 0.25]])


@pytest.mark.parametrize('bad', [math.nan, math.inf, -math.inf])
def test_sanitizer_replaces_non_finite_rows_with_hold(bad: float) -> None:
    sanitizer = ActionSanitizer(LOWER, UPPER, max_rows=4)
    hold = np.array([0.1, 0.2, 0.3])
    chunk = np.array([[0.5, 0.5, 0.1], [0.5, bad, 0.1], [bad, bad, bad], [0.0, 0.0, 0.0]], np.float32)
    out = np.zeros((4, 3))
    assert sanitizer.sanitize_into(chunk, hold, out) == 2
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.1], hold, hold, [0.0, 0.0, 0.0]], rtol=0, atol=1e-7)
    assert np.isfinite(out).all()
    single = np.zeros(3)
    assert sanitizer.sanitize_into(np.array([bad, 0.0, 0.0], np.float32), hold, single) == 1
    np.testing.assert_array_equal(single, hold)


def test_sanitizer_clamps_the_hold_position_too() -> None:
    sanitizer = ActionSanitizer(LOWER, UPPER, max_rows=2)
    out = np.zeros((2, 3))
    chunk = np.array([[math.nan, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    assert sanitizer.sanitize_into(chunk, np.array([3.0e38, -2.5, 0.6]), out) == 1
    np.testing.assert_array_equal(out[0], [1.0, -2.0, 0.5])


def writer_and_outputs(chunk_size: int = 4) -> tuple[CommandWriter, list, list]:
    commands: list = []
    trajectories: list = []
    writer = CommandWriter(LOWER, UPPER, ['a', 'b', 'c'], chunk_size, 50.0, commands.append, trajectories.append)
    return writer, commands, trajectories


def test_command_writer_clamps_every_command_and_trajectory() -> None:
    writer, commands, trajectories = writer_and_outputs()
    assert writer.command(np.array([3.0e38, -7.0, 0.25]))
    assert list(deserialize_message(commands[0], Float64MultiArray).data) == [1.0, -2.0, 0.25]
    chunk = np.array([[5.0, 5.0, 5.0], [-5.0, -5.0, -5.0], [0.0, 0.0, 0.0], [1e300, 0.1, -1e300]])
    assert writer.trajectory(chunk, 123)
    points = [list(p.positions) for p in deserialize_message(trajectories[0], JointTrajectory).points]
    assert points == [[1.0, 2.0, 0.5], [-1.0, -2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.1, 0.0]]


@pytest.mark.parametrize('bad', [math.nan, math.inf, -math.inf])
def test_command_writer_refuses_non_finite_values(bad: float) -> None:
    writer, commands, trajectories = writer_and_outputs()
    assert not writer.command(np.array([0.0, bad, 0.0]))
    chunk = np.zeros((4, 3))
    chunk[3, 2] = bad
    assert not writer.trajectory(chunk, 0)
    assert commands == [] and trajectories == [] and writer.refused == 2


def test_sanitizer_rejects_bad_limits() -> None:
    with pytest.raises(ValueError, match='below its upper'):
        ActionSanitizer([0.0, 1.0], [1.0, 1.0], 2)
    with pytest.raises(ValueError, match='finite'):
        ActionSanitizer([-math.inf], [1.0], 2)
    with pytest.raises(ValueError, match='differ in shape'):
        ActionSanitizer([0.0], [1.0, 2.0], 2)


def test_sanitizer_allocates_nothing_sizable() -> None:
    sanitizer = ActionSanitizer([-1.0] * 6, [1.0] * 6, max_rows=50)
    chunk = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    out, hold = np.zeros((50, 6)), np.zeros(6)
    sanitizer.sanitize_into(chunk, hold, out)
    tracemalloc.start()
    try:
        for _ in range(200):
            sanitizer.sanitize_into(chunk, hold, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096, f'{peak} bytes peak'


def test_float64_array_message_serializes_the_values_it_is_given() -> None:
    command = Float64ArrayMessage(3)
    back = deserialize_message(command.fill(np.array([0.5, -1.25, 3.0])), Float64MultiArray)
    assert list(back.data) == [0.5, -1.25, 3.0] and back.layout.dim == []
    back = deserialize_message(command.fill(np.array([1e9 + 0.5, 0.0, -0.0])), Float64MultiArray)
    assert list(back.data) == [1e9 + 0.5, 0.0, -0.0]  # the sentinel value itself is an ordinary value
    status = Float64ArrayMessage(2, label='a,b')
    back = deserialize_message(status.fill(np.array([1.0, 2.0])), Float64MultiArray)
    assert back.layout.dim[0].label == 'a,b' and back.layout.dim[0].size == 2 and list(back.data) == [1.0, 2.0]


def test_trajectory_points_are_timed_at_the_control_rate() -> None:
    names = ['a', 'b']
    traj = TrajectoryMessage(names, num_points=4, control_rate_hz=30.0, frame_id='base_link')
    chunk = np.arange(8, dtype=np.float64).reshape(4, 2)
    back = deserialize_message(written(traj, chunk, stamp_ns=12_345_000_000_123), JointTrajectory)
    assert back.joint_names == names and back.header.frame_id == 'base_link'
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == (12_345, 123)
    times = [p.time_from_start.sec * 10**9 + p.time_from_start.nanosec for p in back.points]
    assert times == [33_333_333, 66_666_666, 99_999_999, 133_333_332]
    np.testing.assert_array_equal([list(p.positions) for p in back.points], chunk)
    back = deserialize_message(written(traj, chunk + 1.0, 0), JointTrajectory)  # reused: new numbers, same layout
    assert list(back.points[3].positions) == [7.0, 8.0] and (back.header.stamp.sec, back.header.stamp.nanosec) == (0, 0)
    assert [p.time_from_start.nanosec for p in back.points] == times
    with pytest.raises(ValueError, match='control_rate_hz'):
        TrajectoryMessage(names, 4, 0.0)


@pytest.mark.parametrize('dof,frame_id', [(1, ''), (3, 'a'), (6, ''), (6, 'base'), (7, 'xyz')])
def test_trajectory_bytes_are_right_whatever_the_alignment(dof: int, frame_id: str) -> None:
    names = [f'joint_{i}' * (i + 1) for i in range(dof)]  # name lengths shift the CDR alignment
    traj = TrajectoryMessage(names, num_points=5, control_rate_hz=50.0, frame_id=frame_id)
    chunk = np.random.default_rng(dof).normal(size=(5, dof))
    back = deserialize_message(written(traj, chunk, 7), JointTrajectory)
    np.testing.assert_array_equal([list(p.positions) for p in back.points], chunk)
    assert back.joint_names == names and back.header.frame_id == frame_id and back.header.stamp.nanosec == 7


def test_trajectory_stamp_is_zero_unless_given() -> None:
    """Zero stamp: joint_trajectory_controller starts the trajectory on receipt, whatever its clock."""
    traj = TrajectoryMessage(['a'], num_points=2, control_rate_hz=50.0)
    back = deserialize_message(written(traj, np.array([[0.1], [0.2]])), JointTrajectory)
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == (0, 0)
    back = deserialize_message(written(traj, np.array([[0.1], [0.2]]), stamp_ns=5_000_000_007), JointTrajectory)
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == (5, 7)
    assert all(list(p.velocities) == [] for p in back.points)  # position-only unless asked


def test_trajectory_velocities_are_finite_differences_at_the_control_rate() -> None:
    rate = 50.0
    t = np.arange(1, 7) / rate  # [6] point times, s
    chunk = np.stack([np.sin(t), 2.0 * t, t ** 2], axis=1)  # [6, 3]
    traj = TrajectoryMessage(['a', 'b', 'c'], num_points=6, control_rate_hz=rate, velocities=True)
    back = deserialize_message(written(traj, chunk), JointTrajectory)
    got = np.array([list(p.velocities) for p in back.points])
    np.testing.assert_allclose(got, np.gradient(chunk, 1.0 / rate, axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[:, 1], 2.0, rtol=1e-12)  # a straight line has its slope everywhere
    np.testing.assert_array_equal([list(p.positions) for p in back.points], chunk)
    back = deserialize_message(written(traj, np.zeros((6, 3))), JointTrajectory)  # reused: velocities rewritten
    assert all(list(p.velocities) == [0.0, 0.0, 0.0] for p in back.points)
    with pytest.raises(ValueError, match='at least 2 points'):
        TrajectoryMessage(['a'], 1, rate, velocities=True)


def test_trajectory_velocities_allocate_nothing_sizable() -> None:
    traj = TrajectoryMessage([f'j{i}' for i in range(6)], num_points=50, control_rate_hz=50.0, velocities=True)
    chunk = np.random.default_rng(1).normal(size=(50, 6))
    written(traj, chunk)
    tracemalloc.start()
    try:
        for _ in range(100):
            written(traj, chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(written(traj, chunk)), f'{peak} bytes peak'  # the bytes copy handed to rclpy, no more


def test_trajectory_messages_are_built_whatever_stale_bytes_the_serialized_buffer_ends_with() -> None:
    """The buffer rmw serializes into can end in slack holding an earlier message's bytes, sentinels included."""
    names = [f'joint_{i}' for i in range(1, 7)]
    for k in range(100):  # each build serializes into a buffer that may reuse the last one's memory
        Float64ArrayMessage(6)
        chunk = np.random.default_rng(k).normal(size=(50, 6))
        traj = TrajectoryMessage(names, num_points=50, control_rate_hz=50.0, velocities=True)
        back = deserialize_message(written(traj, chunk), JointTrajectory)
        np.testing.assert_array_equal([list(p.positions) for p in back.points], chunk)


def test_the_numbers_are_written_through_aligned_views() -> None:
    """Unaligned views (CDR doubles sit 4 bytes off an 8-byte boundary) make numpy's loops several times slower."""
    traj = TrajectoryMessage(['a', 'b', 'c'], num_points=4, control_rate_hz=50.0, velocities=True)
    assert traj.positions.flags.aligned and traj.positions.shape == (4, 3)
    assert Float64ArrayMessage(3).values.flags.aligned
