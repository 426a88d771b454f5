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

"""Turn a bag recorded from the control node into latency plots and a summary.

Per-cycle numbers come from the node's status topic (``~/status``, ``std_msgs/Float64MultiArray``),
whose ``data`` holds one value per name of ``STATUS_FIELDS`` (node/deadline.py), in that order
(importing this module loads neither matplotlib nor rclpy). When the bag has no status topic,
``/diagnostics`` is read instead: every ``DiagnosticStatus`` key named like a status field
(``compute_ms`` ...) is one sample.

Outputs in ``out_dir``: ``latency_hist.png``, ``latency_timeline.png`` (deadline misses
marked), ``actions.png`` (commands against joint states, when both are available),
``summary.txt`` and ``summary.json``. Besides the per-cycle latencies the summary gives the command
intervals (p50/p99/max between consecutive commands, from the times the recorder received them:
what the controller saw, a stall included) and, for a node in chunk mode, its late chunks and
control ticks without a command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pi0_trt_ros.bag.bag_io import bag_summary, read_bag
from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.deadline import STATUS_FIELDS

# Layout of the status message data: STATUS_FIELDS (cycle_index, compute_ms, ..., set_stamp_sec, ...).
STATUS_TYPE = 'std_msgs/msg/Float64MultiArray'
DIAGNOSTICS_TOPIC = '/diagnostics'
DIAGNOSTICS_TYPE = 'diagnostic_msgs/msg/DiagnosticArray'
COMMAND_TYPE = 'std_msgs/msg/Float64MultiArray'
TRAJECTORY_TYPE = 'trajectory_msgs/msg/JointTrajectory'
JOINT_STATE_TYPE = 'sensor_msgs/msg/JointState'


def _stats(values: np.ndarray) -> dict[str, float]:
    """p50/p99/max/mean of a sample (all 0.0 when empty)."""
    if values.size == 0:
        return {'p50': 0.0, 'p99': 0.0, 'max': 0.0, 'mean': 0.0}
    return {'p50': float(np.percentile(values, 50)), 'p99': float(np.percentile(values, 99)),
            'max': float(values.max()), 'mean': float(values.mean())}


def _longest_run(flags: np.ndarray) -> int:
    """Longest run of consecutive True values."""
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def _pick_topic(topics: dict[str, tuple[str, int]], given: str | None, msgtype: str, what: str,
                suffix: str = '') -> str | None:
    """Return the topic ``given``, else the single topic of ``msgtype`` (ending with ``suffix``), else None."""
    if given is not None:
        if given not in topics:
            raise Pi0Error(f'{what} topic {given!r} is not in the bag; it has {sorted(topics)}')
        return given
    found = [t for t, (ty, _) in topics.items() if ty == msgtype and t.endswith(suffix)]
    if len(found) > 1:
        raise Pi0Error(f'several {what} topics {found}: choose one')
    return found[0] if found else None


def read_cycles(recorded_bag: str | Path, status_topic: str | None = None) -> dict[str, Any]:
    """Per-cycle records of a recorded bag: ``{'source', 'topic', 't_ns', <STATUS_FIELDS>: float64 [n]}``.

    ``t_ns`` is each record's log time. Reads the status topic (``status_topic``, else the one
    Float64MultiArray topic whose name ends in '/status'), else ``/diagnostics``.
    """
    topics = bag_summary(recorded_bag).topics
    topic = _pick_topic(topics, status_topic, STATUS_TYPE, 'status', '/status')
    if topic is not None:
        rows, times = [], []
        for m in read_bag(recorded_bag, [topic]):
            data = np.asarray(m.msg.data, dtype=np.float64)
            if data.size < len(STATUS_FIELDS):
                raise Pi0Error(f'{topic}: status message has {data.size} values, expected {len(STATUS_FIELDS)} '
                               f'({", ".join(STATUS_FIELDS)})')
            rows.append(data[:len(STATUS_FIELDS)])
            times.append(m.log_time_ns)
        table = np.array(rows, dtype=np.float64).reshape(-1, len(STATUS_FIELDS))  # [cycles, fields]
        out: dict[str, Any] = {'source': 'status', 'topic': topic, 't_ns': np.array(times, dtype=np.int64)}
        out.update({name: table[:, i] for i, name in enumerate(STATUS_FIELDS)})
        return out
    if topics.get(DIAGNOSTICS_TOPIC, ('', 0))[0] != DIAGNOSTICS_TYPE:
        raise Pi0Error(f'{recorded_bag} has neither a status topic ({STATUS_TYPE} named */status) nor '
                       f'{DIAGNOSTICS_TOPIC}: record the status topic (~/status) of the node')
    samples: dict[str, list[float]] = {name: [] for name in STATUS_FIELDS}
    times = []
    for m in read_bag(recorded_bag, [DIAGNOSTICS_TOPIC]):
        for status in m.msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if 'compute_ms' not in values:
                continue
            for name in STATUS_FIELDS:
                try:
                    samples[name].append(float(values.get(name, 'nan')))
                except ValueError:
                    samples[name].append(float('nan'))
            times.append(m.log_time_ns)
    out = {'source': 'diagnostics', 'topic': DIAGNOSTICS_TOPIC, 't_ns': np.array(times, dtype=np.int64)}
    out.update({name: np.array(v, dtype=np.float64) for name, v in samples.items()})
    return out


def summarize(cycles: dict[str, Any], budget_ms: float) -> dict[str, Any]:
    """Summary numbers of ``read_cycles`` output against ``budget_ms``."""
    compute = cycles['compute_ms']
    finite = compute[np.isfinite(compute)]
    missed = compute > budget_ms
    index = cycles['cycle_index'][np.isfinite(cycles['cycle_index'])]
    t = cycles['t_ns']
    duration = (t[-1] - t[0]) / 1e9 if t.size > 1 else 0.0
    return {
        'source': cycles['source'], 'topic': cycles['topic'], 'budget_ms': budget_ms,
        'cycles': int(compute.size),
        'cycles_missing': int(index.max() - index.min() + 1 - index.size) if index.size else 0,
        'duration_s': duration,
        'cycle_rate_hz': (compute.size - 1) / duration if duration > 0 else 0.0,
        'compute_ms': _stats(finite),
        'inference_ms': _stats(cycles['inference_ms'][np.isfinite(cycles['inference_ms'])]),
        'obs_age_ms': _stats(cycles['obs_age_ms'][np.isfinite(cycles['obs_age_ms'])]),
        'queued_ms': _stats(cycles['queued_ms'][np.isfinite(cycles['queued_ms'])]),
        'deadline_misses': int(missed.sum()),
        'node_deadline_misses': int(np.nansum(cycles['deadline_missed'] > 0.5)),
        'max_consecutive_misses': _longest_run(missed),
        'chunk_mode': _chunk_figures(cycles),
    }


def _chunk_figures(cycles: dict[str, Any]) -> dict[str, Any] | None:
    """Chunk mode's deadlines from the status (None for every_set records, whose ``ticks_missed`` is NaN)."""
    ticks = cycles['ticks_missed'][np.isfinite(cycles['ticks_missed'])]
    if ticks.size == 0:
        return None
    slack = cycles['chunk_slack_ms'][np.isfinite(cycles['chunk_slack_ms'])]
    return {'chunks_late': int(np.nansum(cycles['deadline_missed'] > 0.5)), 'ticks_missed': int(ticks.max()),
            'chunk_slack_ms': {**_stats(slack), 'min': float(slack.min()) if slack.size else 0.0},
            'switch_index': _stats(cycles['switch_index'][np.isfinite(cycles['switch_index'])])}


def _series(bag: str | Path, topic: str, msgtype: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(log times ns [n], values [n, dof], joint names) of a command, trajectory or joint state topic."""
    times, rows, names = [], [], []
    for m in read_bag(bag, [topic]):
        if msgtype == JOINT_STATE_TYPE:
            values, names = m.msg.position, list(m.msg.name)
        elif msgtype == TRAJECTORY_TYPE:
            if not m.msg.points:
                continue
            values, names = m.msg.points[0].positions, list(m.msg.joint_names)
        else:
            values = m.msg.data
        times.append(m.log_time_ns)
        rows.append(np.asarray(values, dtype=np.float64))
    width = min((r.size for r in rows), default=0)
    table = np.array([r[:width] for r in rows], dtype=np.float64).reshape(len(rows), width)
    return np.array(times, dtype=np.int64), table, names


def _command_intervals(bag: str | Path, topic: str) -> dict[str, Any] | None:
    """p50/p99/max/mean (ms) of the time between consecutive commands as the recorder received them."""
    times = np.array([m.log_time_ns for m in read_bag(bag, [topic])], dtype=np.int64)
    if times.size < 2:
        return None
    return {'topic': topic, 'commands': int(times.size), **_stats(np.diff(times) / 1e6)}


def _plot_latency(cycles: dict[str, Any], summary: dict[str, Any], out_dir: Path) -> list[Path]:
    from matplotlib.figure import Figure

    budget = summary['budget_ms']
    compute = cycles['compute_ms']
    t = (cycles['t_ns'] - cycles['t_ns'][0]) / 1e9 if compute.size else compute
    missed = compute > budget

    fig = Figure(figsize=(8, 4.5), layout='constrained')
    ax = fig.add_subplot()
    finite = compute[np.isfinite(compute)]
    top = max(float(finite.max()) if finite.size else 0.0, budget) * 1.1
    bins = np.linspace(0.0, top, 60)
    ax.hist(finite, bins=bins, color='tab:blue', alpha=0.8, label='compute (sync -> publish)')
    inference = cycles['inference_ms'][np.isfinite(cycles['inference_ms'])]
    if inference.size:
        ax.hist(inference, bins=bins, color='tab:green', alpha=0.5, label='inference')
    ax.axvline(budget, color='tab:red', linewidth=2, label=f'budget {budget:g} ms')
    for q, style in (('p50', ':'), ('p99', '--')):
        ax.axvline(summary['compute_ms'][q], color='k', linestyle=style,
                   label=f'compute {q} {summary["compute_ms"][q]:.2f} ms')
    ax.set_xlabel('latency per cycle (ms)')
    ax.set_ylabel('cycles')
    ax.set_title(f'{summary["cycles"]} cycles, {summary["deadline_misses"]} over budget')
    ax.legend()
    hist = out_dir / 'latency_hist.png'
    fig.savefig(hist, dpi=100)

    fig = Figure(figsize=(10, 6), layout='constrained')
    ax, ax_age = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    ax.plot(t, compute, '.-', color='tab:blue', markersize=3, linewidth=0.8, label='compute')
    if inference.size:
        ax.plot(t, cycles['inference_ms'], color='tab:green', linewidth=0.8, label='inference')
    ax.axhline(budget, color='tab:red', linewidth=1.5, label=f'budget {budget:g} ms')
    if missed.any():
        ax.plot(t[missed], compute[missed], 'x', color='tab:red', markersize=8, label=f'miss ({int(missed.sum())})')
    ax.set_ylabel('ms')
    ax.set_title(f'latency per cycle ({summary["source"]}: {summary["topic"]})')
    ax.legend(loc='upper right')
    ax_age.plot(t, cycles['obs_age_ms'], color='tab:purple', linewidth=0.8)
    ax_age.set_ylabel('observation age (ms)')
    ax_age.set_xlabel('time since first cycle (s)')
    timeline = out_dir / 'latency_timeline.png'
    fig.savefig(timeline, dpi=100)
    return [hist, timeline]


def _joint_columns(c_names: list[str], j_names: list[str], dof: int) -> list[int]:
    """Joint-state column of each command column: by name when the commands name their joints, else in order."""
    return [j_names.index(c_names[k]) if k < len(c_names) and c_names[k] in j_names else k for k in range(dof)]


def command_error(command: tuple[np.ndarray, np.ndarray, list[str]], joints: tuple[np.ndarray, np.ndarray, list[str]],
                  t0_cmd: int, t0_joint: int) -> dict[str, float] | None:
    """Mean abs difference (robot units) between each command and the joint states when it was recorded.

    Joint positions are interpolated at the commands' times (both series on the report's time
    axis); commands outside the joint record are left out. None when nothing overlaps.
    """
    c_t, c_v, c_names = command
    j_t, j_v, j_names = joints
    cols = _joint_columns(c_names, j_names, c_v.shape[1])
    if not j_t.size or max(cols) >= j_v.shape[1]:
        return None
    tc, tj = (c_t - t0_cmd) / 1e9, (j_t - t0_joint) / 1e9
    inside = (tc >= tj[0]) & (tc <= tj[-1])
    if not inside.any():
        return None
    actual = np.stack([np.interp(tc[inside], tj, j_v[:, col]) for col in cols], axis=1)
    return {'mean_abs': float(np.abs(c_v[inside] - actual).mean()), 'commands': int(inside.sum()),
            'joint_spread': float(np.ptp(j_v[:, cols], axis=0).mean())}


def _plot_actions(command: tuple[np.ndarray, np.ndarray, list[str]], joints: tuple[np.ndarray, np.ndarray, list[str]],
                  t0_cmd: int, t0_joint: int, title: str, out_dir: Path) -> Path:
    from matplotlib.figure import Figure

    c_t, c_v, c_names = command
    j_t, j_v, j_names = joints
    dof = c_v.shape[1]
    names = c_names[:dof] if len(c_names) >= dof else (list(j_names[:dof]) + [f'dof {k}' for k in range(dof)])[:dof]
    fig = Figure(figsize=(10, 2.0 * dof + 0.6), layout='constrained')
    axes = np.atleast_1d(fig.subplots(dof, 1, sharex=True))
    for k, ax in enumerate(axes):
        # commands follow the node's joint order: match joint states by name when the command names them
        col = j_names.index(names[k]) if c_names and names[k] in j_names else k
        if col < j_v.shape[1]:
            ax.plot((j_t - t0_joint) / 1e9, j_v[:, col], color='tab:gray', linewidth=1.0, label='joint state')
        ax.step((c_t - t0_cmd) / 1e9, c_v[:, k], where='post', color='tab:orange', linewidth=1.0, label='command')
        ax.set_ylabel(names[k])
    axes[0].legend(loc='upper right')
    axes[0].set_title(title)
    axes[-1].set_xlabel('time (s)')
    path = out_dir / 'actions.png'
    fig.savefig(path, dpi=100)
    return path


def _format(summary: dict[str, Any]) -> str:
    def row(name: str, s: dict[str, float]) -> str:
        return f'{name:<14} p50 {s["p50"]:8.3f}  p99 {s["p99"]:8.3f}  max {s["max"]:8.3f}  mean {s["mean"]:8.3f}'

    lines = [f'{key:<15} {value}' for key, value in summary.get('about', {}).items()]
    lines += [
        f'source          {summary["source"]} ({summary["topic"]})',
        f'cycles          {summary["cycles"]} over {summary["duration_s"]:.3f} s '
        f'({summary["cycle_rate_hz"]:.2f} Hz), {summary["cycles_missing"]} missing from the index sequence',
        f'budget          {summary["budget_ms"]:g} ms',
        f'deadline misses {summary["deadline_misses"]} over budget '
        f'({summary["node_deadline_misses"]} flagged by the node, longest run {summary["max_consecutive_misses"]})',
        'latency (ms)',
        row('  compute', summary['compute_ms']),
        row('  inference', summary['inference_ms']),
        row('  obs age', summary['obs_age_ms']),
        row('  queued', summary['queued_ms']),  # of compute: waiting for the cycle before
    ]
    chunk = summary.get('chunk_mode')
    if chunk:
        slack, index = chunk['chunk_slack_ms'], chunk['switch_index']
        lines.append(f'chunk mode      {chunk["chunks_late"]} of {summary["cycles"]} chunks late or not executed, '
                     f'{chunk["ticks_missed"]} control ticks without their command (its deadlines; compute above is '
                     'set complete -> chunk ready)')
        lines.append(f'                slack before the running chunk ran out min {slack["min"]:.3f} p50 '
                     f'{slack["p50"]:.3f} ms; switch index p50 {index["p50"]:g}')
    gaps = summary.get('command_interval_ms')
    if gaps:
        lines.append(f'command interval p50 {gaps["p50"]:.3f}  p99 {gaps["p99"]:.3f}  max {gaps["max"]:.3f} ms '
                     f'({gaps["topic"]}, {gaps["commands"]} commands as recorded)')
    for topic, count in summary.get('commands', {}).items():
        lines.append(f'commands        {topic}: {count}')
    if summary.get('command_error'):
        e = summary['command_error']
        lines.append(f'commands - joints mean abs {e["mean_abs"]:.4f} over {e["commands"]} commands, against the '
                     f'joint states when each was recorded (joints move over {e["joint_spread"]:.3f} on average)')
    lines.append(f'files           {", ".join(summary["files"])}')
    return '\n'.join(lines) + '\n'


def make_report(recorded_bag: str | Path, out_dir: str | Path, budget_ms: float = 20.0,
                input_bag: str | Path | None = None, *, status_topic: str | None = None,
                command_topic: str | None = None, joint_topic: str | None = None,
                input_offset_s: float = 0.0, about: dict[str, str] | None = None) -> dict[str, Any]:
    """Write plots, ``summary.txt`` and ``summary.json`` for ``recorded_bag`` into ``out_dir``; return the summary.

    ``about``: lines that head the summary (what ran, on what), name -> text.

    ``command_topic`` defaults to the one Float64MultiArray topic other than the status topic (else
    the one JointTrajectory topic, first point). Joint states come from ``joint_topic`` (default:
    the one JointState topic) of the recorded bag, which shares its clock; else from
    ``input_bag``, whose start is aligned with the recorded bag's start plus ``input_offset_s``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cycles = read_cycles(recorded_bag, status_topic)
    if cycles['compute_ms'].size == 0:
        raise Pi0Error(f'{recorded_bag}: no cycle records on {cycles["topic"]}')
    summary = summarize(cycles, budget_ms)
    if about:
        summary = {'about': dict(about), **summary}
    files = _plot_latency(cycles, summary, out)

    rec_info = bag_summary(recorded_bag)
    topics = rec_info.topics
    cmd_topic = command_topic
    if cmd_topic is None:
        others = {t: v for t, v in topics.items() if t != cycles['topic']}
        cmd_topic = (_pick_topic(others, None, COMMAND_TYPE, 'command')
                     or _pick_topic(others, None, TRAJECTORY_TYPE, 'trajectory'))
    elif cmd_topic not in topics:
        raise Pi0Error(f'command topic {cmd_topic!r} is not in {recorded_bag}')
    summary['commands'] = {t: c for t, (ty, c) in topics.items() if ty in (COMMAND_TYPE, TRAJECTORY_TYPE)
                           and t != cycles['topic']}
    summary['command_interval_ms'] = _command_intervals(recorded_bag, cmd_topic) if cmd_topic else None
    joints, t0_joint, joint_source, j_topic = None, 0, None, None
    if joint_topic is None or joint_topic in topics:
        j_topic = _pick_topic(topics, joint_topic, JOINT_STATE_TYPE, 'joint state')
    if j_topic is not None:
        joints, t0_joint, joint_source = _series(recorded_bag, j_topic, JOINT_STATE_TYPE), rec_info.start_ns, 'recorded'
    elif input_bag is not None:
        in_info = bag_summary(input_bag)
        j_topic = _pick_topic(in_info.topics, joint_topic, JOINT_STATE_TYPE, 'joint state')
        if j_topic is not None:
            joints = _series(input_bag, j_topic, JOINT_STATE_TYPE)
            t0_joint = in_info.start_ns - int(input_offset_s * 1e9)
            joint_source = f'input bag, aligned by start time + {input_offset_s:g} s'
    if cmd_topic is not None and joints is not None:
        command = _series(recorded_bag, cmd_topic, topics[cmd_topic][0])
        if command[1].shape[0] and command[1].shape[1]:
            title = f'{cmd_topic} against {j_topic} ({joint_source})'
            files.append(_plot_actions(command, joints, rec_info.start_ns, t0_joint, title, out))
            summary['command_error'] = command_error(command, joints, rec_info.start_ns, t0_joint)
    summary['joint_states'] = {'topic': j_topic, 'source': joint_source} if joints is not None else None
    summary['files'] = [p.name for p in files] + ['summary.txt', 'summary.json']
    (out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    (out / 'summary.txt').write_text(_format(summary))
    return summary
