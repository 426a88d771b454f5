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

"""Tests of the replay report: plots, summary numbers against the bag, the diagnostics fallback."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pi0_trt_ros.bag.bag_io import jazzy_typestore, make_writer, read_bag
from pi0_trt_ros.bag.report import make_report
from pi0_trt_ros.bag.synth import DEFAULT_JOINT_NAMES, DEFAULT_START_NS, make_bag
from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.deadline import STATUS_FIELDS

STATUS = '/pi0_controller/status'
COMMANDS = '/forward_position_controller/commands'
TRAJECTORY = '/joint_trajectory_controller/joint_trajectory'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
T0 = DEFAULT_START_NS + 5 * 10**9  # the recorded bag is logged later than the input bag

STATUS_CYCLE, STATUS_COMPUTE_MS, STATUS_OBS_AGE_MS, STATUS_DEADLINE_MISSED, STATUS_INFERENCE_MS = (
    STATUS_FIELDS.index(name) for name in ('cycle_index', 'compute_ms', 'obs_age_ms', 'deadline_missed',
                                           'inference_ms'))
STATUS_SLACK_MS, STATUS_SWITCH_INDEX, STATUS_TICKS_MISSED = (
    STATUS_FIELDS.index(name) for name in ('chunk_slack_ms', 'switch_index', 'ticks_missed'))


def _status_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, len(STATUS_FIELDS)] status data: ~12 ms cycles, misses at cycles 10, 11 and 30, cycle 20 absent."""
    rows = np.zeros((n, len(STATUS_FIELDS)))
    rows[:, STATUS_CYCLE] = np.arange(n) + (np.arange(n) >= 20)  # index skips 20
    rows[:, STATUS_INFERENCE_MS] = rng.normal(10.0, 0.5, n)
    rows[:, STATUS_COMPUTE_MS] = rows[:, STATUS_INFERENCE_MS] + rng.uniform(0.5, 2.0, n)
    rows[[10, 11, 30], STATUS_COMPUTE_MS] = [25.0, 31.5, 22.0]
    rows[:, STATUS_DEADLINE_MISSED] = rows[:, STATUS_COMPUTE_MS] > 20.0
    rows[:, STATUS_OBS_AGE_MS] = rows[:, STATUS_COMPUTE_MS] + rng.uniform(5.0, 15.0, n)
    rows[:, [STATUS_SLACK_MS, STATUS_TICKS_MISSED]] = np.nan  # every_set mode: no chunk figures
    return rows


def _write_recorded(path: Path, rows: np.ndarray | None, *, commands: np.ndarray | None = None,
                    trajectory_names: tuple[str, ...] | None = None, joint_states: bool = False,
                    diagnostics: np.ndarray | None = None, extra_status: str | None = None,
                    command_times_ns: np.ndarray | None = None) -> None:
    """Write a bag as the recorder writes it from the node: one message per cycle every 20 ms from T0.

    ``command_times_ns``: log times of the commands (default 1 ns after each cycle's status).
    """
    ts = jazzy_typestore()
    F64 = ts.types['std_msgs/msg/Float64MultiArray']
    Layout = ts.types['std_msgs/msg/MultiArrayLayout']
    Header, Time = ts.types['std_msgs/msg/Header'], ts.types['builtin_interfaces/msg/Time']

    def f64(values) -> object:
        return F64(layout=Layout(dim=[], data_offset=0), data=np.asarray(values, dtype=np.float64))

    with make_writer(path) as writer:
        if rows is not None:
            status = writer.add_connection(STATUS, 'std_msgs/msg/Float64MultiArray', typestore=ts)
            for i, row in enumerate(rows):
                writer.write(status, T0 + i * 20_000_000, ts.serialize_cdr(f64(row), 'std_msgs/msg/Float64MultiArray'))
        if extra_status is not None:
            writer.add_connection(extra_status, 'std_msgs/msg/Float64MultiArray', typestore=ts)
        if commands is not None and trajectory_names is None:
            conn = writer.add_connection(COMMANDS, 'std_msgs/msg/Float64MultiArray', typestore=ts)
            for i, cmd in enumerate(commands):
                cdr = ts.serialize_cdr(f64(cmd), 'std_msgs/msg/Float64MultiArray')
                t = T0 + i * 20_000_000 + 1 if command_times_ns is None else int(command_times_ns[i])
                writer.write(conn, t, cdr)
        if commands is not None and trajectory_names is not None:
            Traj, Point = ts.types['trajectory_msgs/msg/JointTrajectory'], ts.types[
                'trajectory_msgs/msg/JointTrajectoryPoint']
            Duration = ts.types['builtin_interfaces/msg/Duration']
            conn = writer.add_connection(TRAJECTORY, 'trajectory_msgs/msg/JointTrajectory', typestore=ts)
            empty = np.zeros(0)
            for i, cmd in enumerate(commands):
                point = Point(positions=np.asarray(cmd, np.float64), velocities=empty, accelerations=empty,
                              effort=empty, time_from_start=Duration(sec=0, nanosec=20_000_000))
                msg = Traj(header=Header(stamp=Time(sec=0, nanosec=0), frame_id=''),
                           joint_names=list(trajectory_names), points=[point])
                cdr = ts.serialize_cdr(msg, 'trajectory_msgs/msg/JointTrajectory')
                writer.write(conn, T0 + i * 20_000_000 + 1, cdr)
        if joint_states:
            JointState = ts.types['sensor_msgs/msg/JointState']
            conn = writer.add_connection('/joint_states', 'sensor_msgs/msg/JointState', typestore=ts)
            for i in range(100):
                sec, nsec = divmod(T0 + i * 10_000_000, 10**9)
                msg = JointState(header=Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=''),
                                 name=list(DEFAULT_JOINT_NAMES), position=np.full(6, np.sin(i / 10.0)),
                                 velocity=np.zeros(6), effort=np.zeros(0))
                writer.write(conn, T0 + i * 10_000_000, ts.serialize_cdr(msg, 'sensor_msgs/msg/JointState'))
        if diagnostics is not None:
            Array, Status, KeyValue = (ts.types[f'diagnostic_msgs/msg/{n}']
                                       for n in ('DiagnosticArray', 'DiagnosticStatus', 'KeyValue'))
            conn = writer.add_connection('/diagnostics', 'diagnostic_msgs/msg/DiagnosticArray', typestore=ts)
            for i, row in enumerate(diagnostics):
                values = [KeyValue(key=name, value=f'{row[k]:.6f}') for k, name in enumerate(STATUS_FIELDS)]
                msg = Array(header=Header(stamp=Time(sec=0, nanosec=0), frame_id=''), status=[
                    Status(level=0, name='pi0_controller: other', message='', hardware_id='', values=[]),
                    Status(level=0, name='pi0_controller: deadline', message='OK', hardware_id='pi0',
                           values=values)])
                writer.write(conn, T0 + i * 10**9, ts.serialize_cdr(msg, 'diagnostic_msgs/msg/DiagnosticArray'))


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000, path
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 400 and img.std() > 5.0


def _expected_stats(values: np.ndarray) -> dict:
    return {'p50': float(np.percentile(values, 50)), 'p99': float(np.percentile(values, 99)),
            'max': float(values.max()), 'mean': float(values.mean())}


def test_report_numbers_equal_the_bag_and_plots_are_written(tmp_path):
    input_bag = make_bag(tmp_path / 'input', duration_s=1.0, width=16, height=8, seed=9)
    rng = np.random.default_rng(0)
    rows = _status_rows(50, rng)
    commands = np.stack([np.sin(np.arange(50) / 8.0 + k) for k in range(6)], axis=1)  # [50, 6] rad
    _write_recorded(tmp_path / 'rec', rows, commands=commands)

    summary = make_report(tmp_path / 'rec', tmp_path / 'report', budget_ms=20.0, input_bag=input_bag.path)

    # the expected numbers, from the bag as written (not from ``rows``)
    data = np.stack([m.msg.data for m in read_bag(tmp_path / 'rec', [STATUS])])
    compute = data[:, STATUS_COMPUTE_MS]
    assert summary['cycles'] == 50 and summary['cycles_missing'] == 1
    assert summary['compute_ms'] == _expected_stats(compute)
    assert summary['inference_ms'] == _expected_stats(data[:, STATUS_INFERENCE_MS])
    assert summary['obs_age_ms'] == _expected_stats(data[:, STATUS_OBS_AGE_MS])
    assert summary['deadline_misses'] == int((compute > 20.0).sum()) == 3
    assert summary['node_deadline_misses'] == 3 and summary['max_consecutive_misses'] == 2
    assert summary['duration_s'] == pytest.approx(49 * 0.02)
    assert summary['cycle_rate_hz'] == pytest.approx(50.0)
    assert summary['commands'] == {COMMANDS: 50}
    assert summary['command_interval_ms'] == {'topic': COMMANDS, 'commands': 50, **_expected_stats(np.full(49, 20.0))}
    assert summary['chunk_mode'] is None  # every_set records
    assert summary['joint_states'] == {'topic': '/joint_states',
                                       'source': 'input bag, aligned by start time + 0 s'}
    assert (summary['source'], summary['topic'], summary['budget_ms']) == ('status', STATUS, 20.0)

    out = tmp_path / 'report'
    assert json.loads((out / 'summary.json').read_text()) == summary
    assert sorted(summary['files']) == sorted(['latency_hist.png', 'latency_timeline.png', 'actions.png',
                                               'summary.txt', 'summary.json'])
    for name in ('latency_hist.png', 'latency_timeline.png', 'actions.png'):
        _assert_png(out / name)
    text = (out / 'summary.txt').read_text()
    assert f'p99 {summary["compute_ms"]["p99"]:8.3f}' in text
    assert 'deadline misses 3 over budget (3 flagged by the node, longest run 2)' in text
    assert 'cycles          50 over 0.980 s (50.00 Hz), 1 missing' in text
    assert f'command interval p50 20.000  p99 20.000  max 20.000 ms ({COMMANDS}, 50 commands as recorded)' in text
    assert 'chunk mode' not in text

    # a tighter budget counts more misses
    tight = make_report(tmp_path / 'rec', tmp_path / 'tight', budget_ms=12.0)
    assert tight['deadline_misses'] == int((compute > 12.0).sum()) > 3
    assert tight['joint_states'] is None and 'actions.png' not in tight['files']


def test_trajectory_commands_are_plotted_against_recorded_joint_states(tmp_path):
    rows = _status_rows(40, np.random.default_rng(1))
    names = tuple(reversed(DEFAULT_JOINT_NAMES))  # matched to joint states by name
    _write_recorded(tmp_path / 'rec', rows, commands=np.ones((40, 6)), trajectory_names=names, joint_states=True)
    summary = make_report(tmp_path / 'rec', tmp_path / 'report')
    assert summary['commands'] == {TRAJECTORY: 40}
    assert summary['joint_states'] == {'topic': '/joint_states', 'source': 'recorded'}
    _assert_png(tmp_path / 'report' / 'actions.png')


def test_chunk_mode_figures_and_command_intervals_come_from_the_recorded_bag(tmp_path):
    rows = _status_rows(40, np.random.default_rng(3))
    rows[:, STATUS_SLACK_MS] = np.r_[np.nan, np.full(39, 12.0)]  # the first chunk replaced nothing
    rows[[7, 8], STATUS_SLACK_MS] = [-40.0, -3.0]  # two late chunks ...
    rows[:, STATUS_DEADLINE_MISSED] = rows[:, STATUS_SLACK_MS] < 0
    rows[:, STATUS_SWITCH_INDEX] = np.arange(40) % 3 + 2
    rows[:, STATUS_TICKS_MISSED] = np.r_[np.zeros(7), np.full(33, 3.0)]  # ... starved 3 ticks
    period = 20_000_000
    ticks = np.arange(300) * period + T0
    ticks = np.delete(ticks, [100, 101, 102])  # the 3 ticks without a command: one 80 ms gap
    _write_recorded(tmp_path / 'rec', rows, commands=np.zeros((297, 6)), command_times_ns=ticks)
    summary = make_report(tmp_path / 'rec', tmp_path / 'report')
    slack = np.r_[np.full(6, 12.0), -40.0, -3.0, np.full(31, 12.0)]
    assert summary['chunk_mode'] == {
        'chunks_late': 2, 'ticks_missed': 3, 'chunk_slack_ms': {**_expected_stats(slack), 'min': -40.0},
        'switch_index': _expected_stats(rows[:, STATUS_SWITCH_INDEX])}
    gaps = np.diff(ticks) / 1e6
    assert summary['command_interval_ms'] == {'topic': COMMANDS, 'commands': 297, **_expected_stats(gaps)}
    assert summary['command_interval_ms']['max'] == 80.0
    text = (tmp_path / 'report' / 'summary.txt').read_text()
    assert 'chunk mode      2 of 40 chunks late or not executed, 3 control ticks without their command' in text
    assert 'slack before the running chunk ran out min -40.000 p50 12.000 ms; switch index p50 3' in text
    assert f'command interval p50 20.000  p99 {summary["command_interval_ms"]["p99"]:.3f}  max 80.000 ms' in text


def test_diagnostics_are_the_fallback_when_there_is_no_status_topic(tmp_path):
    rows = _status_rows(40, np.random.default_rng(2))[::5]  # one sample a second, misses at cycles 10 and 30
    _write_recorded(tmp_path / 'rec', None, diagnostics=rows)
    summary = make_report(tmp_path / 'rec', tmp_path / 'report', budget_ms=20.0)
    values = np.array([float(f'{v:.6f}') for v in rows[:, STATUS_COMPUTE_MS]])
    assert (summary['source'], summary['topic'], summary['cycles']) == ('diagnostics', '/diagnostics', 8)
    assert summary['compute_ms'] == _expected_stats(values)
    assert summary['deadline_misses'] == int((values > 20.0).sum()) == 2
    for name in ('latency_hist.png', 'latency_timeline.png'):
        _assert_png(tmp_path / 'report' / name)


def test_report_errors_say_what_is_missing(tmp_path):
    _write_recorded(tmp_path / 'empty', None, commands=np.zeros((3, 6)))
    with pytest.raises(Pi0Error, match='has neither a status topic'):
        make_report(tmp_path / 'empty', tmp_path / 'r1')
    _write_recorded(tmp_path / 'short', np.zeros((3, 2)))
    with pytest.raises(Pi0Error, match=f'status message has 2 values, expected {len(STATUS_FIELDS)}'):
        make_report(tmp_path / 'short', tmp_path / 'r2')
    _write_recorded(tmp_path / 'two', np.zeros((3, 5)), extra_status='/other/status')
    with pytest.raises(Pi0Error, match='several status topics'):
        make_report(tmp_path / 'two', tmp_path / 'r3')
    with pytest.raises(Pi0Error, match="status topic '/nope' is not in the bag"):
        make_report(tmp_path / 'two', tmp_path / 'r4', status_topic='/nope')
