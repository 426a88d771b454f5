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

"""Soak the control node: the synthetic bag looped into it for minutes, memory and frames watched.

The node runs in its own process (tiny random Pi0 on ONNX Runtime, the demo's parameters:
``every_set``, reliable sensor QoS) while a looping `BagPlayer` feeds it three 640x480 cameras at
30 Hz and joint states at 100 Hz over DDS on loopback, restamped to the wall clock. Its status
and diagnostics are recorded. Every ``--sample-s`` seconds the node's resident set size is read
from ``/proc/<pid>/status``. At the end it prints one line per figure:

* cycles, deadline misses (status topic), sets the node formed and how each ended (a cycle,
  superseded by a newer set while the control thread was busy, rejected);
* frames published per camera against frames the node received (``camera.<name>.received``);
* RSS at 1 minute and at the end, the growth between them, and that growth less its largest
  step between two samples (goal: < 1 %). The node's heap keeps frame-sized memory for reuse
  (``tune_malloc``), so its RSS is the high-water mark of the frames in flight: a hiccup that
  holds a few more frames at once lifts it, once, by about a set of frames (2.7 MB at 640x480),
  whenever it happens. A leak grows from sample to sample, and that is what the goal is about.

    python benchmarks/soak.py --minutes 10            # after `source scripts/setup_env.sh`
    python benchmarks/soak.py --minutes 2 --json soak.json

Exit status 0 when the node ran to the end and exited cleanly; the goals are printed, not enforced
(test/test_soak.py enforces them on a 2-minute run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DOMAIN_BASE = 64  # this benchmark's base DDS domain id, shifted by the run's domain slot
STATUS_TOPIC = '/pi0_control/status'
DIAGNOSTICS_TOPIC = '/diagnostics'
RSS_GROWTH_GOAL = 0.01  # fraction, after the first minute


@dataclasses.dataclass
class RssSampler:
    """Samples a process's resident set size (bytes) every ``period_s`` on a thread of its own."""

    pid: int
    period_s: float
    samples: list[tuple[float, int]] = dataclasses.field(default_factory=list)  # (s since start, bytes)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name='rss_sampler', daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            rss = read_rss(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic() - self._t0, rss))
            if self._stop.wait(self.period_s):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, seconds: float) -> int:
        """Return the first sample taken at or after ``seconds`` (the last one if none)."""
        for t, rss in self.samples:
            if t >= seconds:
                return rss
        return self.samples[-1][1]


def steady_growth(samples: list[tuple[float, int]], after_s: float) -> float:
    """Return the RSS growth (fraction) from ``after_s`` s to the last sample, less its largest step between two."""
    rss = np.array([r for t, r in samples if t >= after_s], dtype=np.int64)
    if rss.size < 2:
        return 0.0
    return float(rss[-1] - rss[0] - max(int(np.diff(rss).max()), 0)) / float(rss[0])


def read_rss(pid: int) -> int | None:
    """Return the VmRSS of ``pid`` in bytes, or None once the process is gone."""
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def inputs_statuses(recorded_bag: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Key-values of the node's ``<node>: inputs`` diagnostics: (the last one, the last one at level OK).

    The replay ends before the node does, so the last status reports the inputs stopping; the
    last OK one holds the fault counters of the run itself.
    """
    from pi0_trt_ros.bag.bag_io import read_bag

    last: dict[str, str] = {}
    last_ok: dict[str, str] = {}
    for m in read_bag(recorded_bag, [DIAGNOSTICS_TOPIC]):
        for status in m.msg.status:
            if status.name.endswith(': inputs'):
                last = {kv.key: kv.value for kv in status.values}
                level = status.level[0] if isinstance(status.level, (bytes, bytearray)) else int(status.level)
                if level == 0:
                    last_ok = last
    return last, last_ok


def run_soak(minutes: float, out_dir: Path, sample_s: float = 10.0, compressed: bool = True,
             domain_id: int | None = None) -> dict[str, Any]:
    """Run the soak; return its figures (also written to ``out_dir/soak.json``).

    ``domain_id`` None: DOMAIN_BASE in this run's DDS domain slot (inherited from a parent run, such as the
    test suite, else claimed here), so a concurrent run's player cannot feed this node.
    """
    from pi0_trt_ros.bag.report import read_cycles
    from pi0_trt_ros.bag.session import replay_and_record
    from pi0_trt_ros.bag.synth import make_bag
    from pi0_trt_ros.demo import demo_params, stop_node
    from pi0_trt_ros.testing import dds
    from pi0_trt_ros.testing.tiny import make_tiny_bundle

    if domain_id is None:
        domain_id = dds.domain_id(DOMAIN_BASE)
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_DOMAIN_ID=str(domain_id))
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = make_tiny_bundle(out_dir / 'model', precision='fp32')
    bag = out_dir / 'input_bag'
    make_bag(bag, duration_s=10.0, compressed=compressed)
    config = out_dir / 'control.yaml'
    doc = demo_params(bundle.engine_dir, bundle.tokenizer, compressed, backend_options='{"threads": 1}')
    # Lossless replay: reliable QoS (demo_params) and one second of frames of history, so a busy
    # machine that stalls the executor for a while makes frames wait, not overwrite each other.
    doc['/**']['ros__parameters']['sensor_qos_depth'] = 30
    config.write_text(yaml.safe_dump(doc))
    log_path = out_dir / 'node.log'
    with log_path.open('w') as log:
        node = subprocess.Popen([sys.executable, '-m', 'pi0_trt_ros.node.control_node', '--ros-args',
                                 '--params-file', str(config)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ), start_new_session=True)
    sampler = RssSampler(node.pid, sample_s).start()
    recorded = out_dir / 'recorded_bag'
    try:
        session = replay_and_record(bag, record_bag=recorded, loop=True, duration_s=minutes * 60.0,
                                    record_topics={STATUS_TOPIC: 'std_msgs/msg/Float64MultiArray',
                                                   DIAGNOSTICS_TOPIC: 'diagnostic_msgs/msg/DiagnosticArray'},
                                    wait_for_subscribers_s=120.0, linger_s=2.5, domain_id=domain_id)
        alive_at_end = node.poll() is None
    finally:
        sampler.stop()
        rc = stop_node(node)
    cycles = read_cycles(recorded, STATUS_TOPIC)
    inputs, inputs_ok = inputs_statuses(recorded)
    params = yaml.safe_load(config.read_text())['/**']['ros__parameters']
    frames = {}  # per camera: frames the player published, frames the node's synchronizer received
    for cam in params['cameras']:
        topic = '/' + params['camera'][cam]['topic'].lstrip('/')
        frames[cam] = {'published': session.stats.per_topic.get(topic, 0),
                       'received': int(inputs.get(f'camera.{cam}.received', -1))}
    index = cycles['cycle_index']
    bad_inputs = {k: int(v) for k, v in inputs_ok.items() if k.startswith('bad_input.') and not k.endswith('.last')}
    rss_1min = sampler.at(60.0)  # one minute after the node process started
    rss_end = sampler.samples[-1][1]
    figures = {
        'minutes': minutes, 'node_exit_code': rc, 'node_alive_at_end': alive_at_end,
        'cycles': int(index.size),
        'cycle_indices_contiguous': bool(np.array_equal(index, np.arange(index.size)
                                                        + (index[0] if index.size else 0))),
        'deadline_misses': int(cycles['deadline_missed'].sum()),
        'compute_ms_p50': float(np.percentile(cycles['compute_ms'], 50)) if index.size else 0.0,
        'compute_ms_p99': float(np.percentile(cycles['compute_ms'], 99)) if index.size else 0.0,
        'sets_emitted': int(inputs.get('sets_emitted', -1)), 'sets_superseded': int(inputs.get('sets_superseded', -1)),
        'commands_published': int(inputs.get('commands_published', -1)), 'bad_inputs': bad_inputs,
        'frames': frames, 'replay': session.stats.to_json(),
        'rss_samples': sampler.samples, 'rss_1min_bytes': rss_1min, 'rss_end_bytes': rss_end,
        'rss_growth_after_1min': (rss_end - rss_1min) / rss_1min,
        'rss_steady_growth_after_1min': steady_growth(sampler.samples, 60.0),
    }
    (out_dir / 'soak.json').write_text(json.dumps(figures, indent=1))
    return figures


def summary_lines(f: dict[str, Any]) -> list[str]:
    """Return the figures as the lines the benchmark prints."""
    dropped = f['sets_emitted'] - f['cycles']
    frames = ', '.join(f"{cam} {v['received']}/{v['published']}" for cam, v in f['frames'].items())
    accounted = all(v['received'] == v['published'] for v in f['frames'].values())
    growth, steady = f['rss_growth_after_1min'], f['rss_steady_growth_after_1min']
    return [
        f"soak {f['minutes']:g} min: {f['cycles']} cycles (indices contiguous: {f['cycle_indices_contiguous']}), "
        f"{f['deadline_misses']} deadline misses, compute p50 {f['compute_ms_p50']:.2f} ms "
        f"p99 {f['compute_ms_p99']:.2f} ms",
        f"sets: {f['sets_emitted']} formed, {f['cycles']} inferred, {dropped} dropped "
        f"({f['sets_superseded']} superseded while the control thread was busy); bad inputs {f['bad_inputs'] or 0}",
        f"frames received/published: {frames} ({'every frame accounted for' if accounted else 'FRAMES LOST'})",
        f"RSS at 1 min {f['rss_1min_bytes'] / 2**20:.1f} MiB, at the end {f['rss_end_bytes'] / 2**20:.1f} MiB: "
        f'{growth * 100:+.3f} %, less its largest step {steady * 100:+.3f} % (goal < {RSS_GROWTH_GOAL * 100:g} %) '
        f"{'OK' if steady < RSS_GROWTH_GOAL else 'FAIL'}",
        f"node exit code {f['node_exit_code']}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=float, default=10.0, help='how long the bag is looped into the node')
    parser.add_argument('--sample-s', type=float, default=10.0, help='RSS sampling period (s)')
    parser.add_argument('--raw', action='store_true', help='raw rgb8 frames instead of JPEG')
    parser.add_argument('--out', type=Path, default=None, help='work directory (default: a temporary one)')
    parser.add_argument('--json', type=Path, default=None, help='also write the figures here')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='pi0_soak_') as tmp:
        out = args.out or Path(tmp)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        figures = run_soak(args.minutes, out, sample_s=args.sample_s, compressed=not args.raw)
        for line in summary_lines(figures):
            print(line, flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=1))
    return 0 if figures['node_exit_code'] == 0 and figures['node_alive_at_end'] else 1


if __name__ == '__main__':
    sys.exit(main())
