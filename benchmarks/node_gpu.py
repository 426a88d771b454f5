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

"""The control node end to end on a GPU: the synthetic bag at 30 Hz into the torch fast path.

Writes a LeRobot-layout checkpoint (full-size Pi0 with random weights, or ``--tiny``), a small
tokenizer and a synthetic bag (3 cameras 640x480 JPEG at 30 Hz, joint states at 100 Hz), then
starts the node twice with the same parameters (``every_set``, backend torch, ``--backend-options``):

1. cold: an empty Triton cache (``TRITON_CACHE_DIR`` under the work directory), a short replay;
2. warm: the same cache, now filled, and the full ``--seconds`` replay.

For each run it prints the time from the node process's start to its first command (the first
message the recorder received on the command topic) and, for the warm run, the bag report
(`make_report`: cycles, deadline misses at ``--budget-ms``, compute and inference p50/p99).

On a machine with the ROS 2 wheels unpacked by ``pip install --prefix DIR`` (no ROS install),
``--ros-prefix DIR`` sets the library and ament paths and re-executes the script with them.

    python benchmarks/node_gpu.py --seconds 60 --out /tmp/node_gpu
    python benchmarks/node_gpu.py --tiny --device cpu --seconds 4 --cold-seconds 3   # a CPU check
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DOMAIN_BASE = 71  # this benchmark's base DDS domain id, shifted by the run's domain slot
SHOWN_MISSES = 20  # deadline misses printed one by one (node_gpu.json has every one)
COMMAND_TOPIC = '/forward_position_controller/commands'
_REEXEC_GUARD = 'PI0_NODE_GPU_ENV_SET'


def ros_prefix_env(prefix: Path) -> dict[str, str]:
    """Environment for ROS 2 wheels installed with ``pip install --prefix PREFIX`` (what their bootstrapper sets).

    The ROS wheels ship their Python packages and shared libraries as data files
    (``DATA/lib/python3.X/site-packages``, ``DATA/lib``) and only a placeholder module as the wheel's own
    code; rosbags and the other plain wheels go to the scheme's purelib. Where DATA and purelib are depends
    on the interpreter's install scheme: ``PREFIX`` and ``PREFIX/lib/python3.X/site-packages``, or
    ``PREFIX/local`` and ``PREFIX/local/lib/python3.X/dist-packages`` for a Debian-built Python, and pip's
    choice need not be this interpreter's. So DATA is found by the file only the real rclpy has, and every
    package directory under the prefix follows it on the path.
    """
    found = sorted(prefix.glob('**/rclpy/__init__.py'))
    if not found:
        raise SystemExit(f'no rclpy under {prefix}: install the wheels with pip install --prefix {prefix}')
    site = found[0].parents[1]  # DATA/lib/python3.X/site-packages
    root = site.parents[2]  # DATA: lib/ (the wheels' shared libraries) and share/ (ament index)
    package_dirs = [p for p in sorted(prefix.glob('**/lib/python3.*/*-packages')) if p != site]
    python_paths = [str(REPO), str(site)] + [str(p) for p in package_dirs]
    libs = [str(root / 'lib')] + sorted(str(p) for p in prefix.glob('**/ros_*.libs'))
    env = dict(os.environ)
    env['LD_LIBRARY_PATH'] = os.pathsep.join(libs + [p for p in env.get('LD_LIBRARY_PATH', '').split(os.pathsep) if p])
    env['PYTHONPATH'] = os.pathsep.join(python_paths + [p for p in env.get('PYTHONPATH', '').split(':') if p])
    env['AMENT_PREFIX_PATH'] = str(root)
    env.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    env[_REEXEC_GUARD] = '1'
    return env


def write_checkpoint(out: Path, tiny: bool, device: str) -> Path:
    """Write the policy as a LeRobot checkpoint directory (kept for the next run in ``out``); returns it."""
    from pi0_trt_ros.testing.tiny import make_tiny_checkpoint, tiny_io

    ckpt = out / ('checkpoint_tiny' if tiny else 'checkpoint')
    if (ckpt / 'config.json').exists():  # written by an earlier run in this work directory
        return ckpt
    if tiny:
        return make_tiny_checkpoint(ckpt)
    from pi0_trt_ros.bench import random_full_size_policy
    from pi0_trt_ros.checkpoint import NormStats, save_checkpoint

    io = tiny_io()  # the bag's cameras, 6 joints, 48 tokens, chunk 50
    policy = random_full_size_policy(io, device=device)  # float32, ~13 GB on disk
    stats = NormStats(*(t.cpu().numpy() for t in (policy.state_mean, policy.state_std, policy.action_mean,
                                                  policy.action_std)))
    weights = {k: v.detach().float().cpu().numpy() for k, v in policy.model.state_dict().items()}
    config = policy.model.config
    del policy
    return save_checkpoint(ckpt, config, io, weights, stats)


def first_command_ns(recorded: Path) -> int | None:
    """Receive time (system clock, ns) of the first command in the recorded bag."""
    from pi0_trt_ros.bag.bag_io import read_bag

    for m in read_bag(recorded, [COMMAND_TOPIC]):
        return m.log_time_ns
    return None


def run_node(name: str, out: Path, config: Path, bag: Path, seconds: float, env: dict[str, str],
             domain_id: int) -> dict[str, Any]:
    """Start the node, replay the bag into it, stop it; returns timings and the recorded bag."""
    from pi0_trt_ros.bag.session import DEFAULT_RECORD_TOPICS, replay_and_record
    from pi0_trt_ros.demo import stop_node

    recorded = out / f'recorded_{name}'  # an earlier run's (the work directory is kept): replaced
    shutil.rmtree(recorded, ignore_errors=True)
    log_path = out / f'node_{name}.log'
    with log_path.open('w') as log:
        start_ns = time.time_ns()
        node = subprocess.Popen([sys.executable, '-m', 'pi0_trt_ros.node.control_node', '--ros-args',
                                 '--params-file', str(config)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        session = replay_and_record(bag, record_bag=recorded, record_topics=DEFAULT_RECORD_TOPICS, loop=True,
                                    duration_s=seconds, wait_for_subscribers_s=900.0, linger_s=2.5,
                                    domain_id=domain_id, log=lambda *a: None,
                                    give_up=lambda: node.poll() is not None)  # start-up failed
        alive = node.poll() is None
    finally:
        rc = stop_node(node)
    first = first_command_ns(recorded)
    return {'name': name, 'recorded': recorded, 'node_exit_code': rc, 'node_alive_at_end': alive,
            'start_to_first_command_s': None if first is None else (first - start_ns) / 1e9, 'log': log_path,
            'replay': session.stats.summary()}


def misses(recorded: Path, budget_ms: float) -> list[dict[str, float]]:
    """Return the cycles of the recorded run whose compute exceeded ``budget_ms``: when, and where the time went."""
    import numpy as np

    from pi0_trt_ros.bag.report import read_cycles

    c = read_cycles(recorded)
    first_ns = int(c['t_ns'][0])
    return [{'cycle': int(c['cycle_index'][i]), 'after_first_s': (int(c['t_ns'][i]) - first_ns) / 1e9,
             'compute_ms': float(c['compute_ms'][i]), 'inference_ms': float(c['inference_ms'][i]),
             'obs_age_ms': float(c['obs_age_ms'][i]), 'queued_ms': float(c['queued_ms'][i])}
            for i in np.flatnonzero(c['compute_ms'] > budget_ms)]


def add_setup_arguments(parser: argparse.ArgumentParser, out: str, domain_base: int) -> None:
    """Add what both node benchmarks take: work directory, policy, budget, ROS wheels, DDS domain."""
    parser.add_argument('--out', type=Path, default=Path(out), help='work directory')
    parser.add_argument('--tiny', action='store_true', help='tiny random Pi0 instead of the full-size one')
    parser.add_argument('--device', default='cuda', help='where the random weights are built')
    parser.add_argument('--backend-options', default='{"device": "cuda", "dtype": "bf16", "fast": true}',
                        help='JSON passed to the torch runner (every node alike)')
    parser.add_argument('--budget-ms', type=float, default=20.0)
    parser.add_argument('--ros-prefix', type=Path, help='ROS 2 wheels installed with pip --prefix here')
    parser.add_argument('--domain-id', type=int, default=None,
                        help=f"ROS domain id (default: {domain_base} in this run's DDS domain slot)")


def set_up(args: argparse.Namespace, domain_base: int, compressed: bool, inference_mode: str = 'every_set',
           **params: Any) -> tuple[Path, Path, Path, dict[str, str]]:
    """Re-execute with ``--ros-prefix``'s environment if given, claim the DDS domain, write the inputs.

    The domain must be empty (no nodes a killed run left), and from here SIGTERM unwinds like an
    exception, so the nodes this run starts are stopped however it ends.

    The inputs, in ``args.out``: the checkpoint, a tokenizer, the synthetic bag (JPEG cameras if
    ``compressed``) and ``control.yaml`` (the torch backend on the checkpoint, ``params`` on top).
    Returns the work directory, the bag, the config and the nodes' environment (their own Triton cache).
    """
    if args.ros_prefix is not None and not os.environ.get(_REEXEC_GUARD):
        env = ros_prefix_env(args.ros_prefix.resolve())
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)

    import yaml

    from pi0_trt_ros.bag.synth import make_bag
    from pi0_trt_ros.demo import demo_params
    from pi0_trt_ros.testing.dds import domain_id, nodes_on_domain
    from pi0_trt_ros.testing.tiny_tokenizer import build_tiny_tokenizer_json

    if args.domain_id is None:  # claimed after the re-exec above, which would drop the slot's lock
        args.domain_id = domain_id(domain_base)
    left = nodes_on_domain(args.domain_id)
    if left:
        raise SystemExit(f'ROS nodes are already on domain {args.domain_id}: {", ".join(left)}; an earlier run, '
                         "killed, left them, and their figures would mix with this run's: stop them first")
    # A timeout's SIGTERM: unwind, so that every node this run starts is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_DOMAIN_ID=str(args.domain_id),
                      PYTHONUNBUFFERED='1')
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    ckpt = write_checkpoint(out, args.tiny, args.device)
    print(f'checkpoint {ckpt} ready in {time.monotonic() - t0:.1f} s', flush=True)
    tokenizer = build_tiny_tokenizer_json(out / 'tokenizer.json')
    bag = out / 'input_bag'
    if not bag.exists():
        make_bag(bag, duration_s=10.0, compressed=compressed)  # looped by the replay
    doc = demo_params(Path(''), Path(tokenizer), compressed, backend_options=args.backend_options, backend='torch',
                      inference_mode=inference_mode)
    doc['/**']['ros__parameters'].update(checkpoint=str(ckpt), engine_dir='', sensor_qos_depth=30, **params)
    config = out / 'control.yaml'
    config.write_text(yaml.safe_dump(doc))
    return out, bag, config, dict(os.environ, TRITON_CACHE_DIR=str(out / 'triton_cache'))


def main() -> int:
    """Write the inputs, run the node cold then warm, print the start-up times and the warm run's report."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=60.0, help='replay length of the warm run (s)')
    parser.add_argument('--cold-seconds', type=float, default=15.0,
                        help='replay length of the cold run (s); 0: no cold run (a second configuration in the same '
                             'work directory finds the Triton cache filled anyway)')
    parser.add_argument('--raw', action='store_true', help='raw rgb8 frames instead of JPEG')
    add_setup_arguments(parser, '/tmp/node_gpu', DOMAIN_BASE)
    args = parser.parse_args()
    out, bag, config, env = set_up(args, DOMAIN_BASE, compressed=not args.raw)

    from pi0_trt_ros.bag.report import make_report

    results = []
    runs = ((('cold', args.cold_seconds),) if args.cold_seconds > 0 else ()) + (('warm', args.seconds),)
    for name, seconds in runs:
        r = run_node(name, out, config, bag, seconds, env, args.domain_id)
        results.append(r)
        first = r['start_to_first_command_s']
        print(f'node {name}: start to first command {"none" if first is None else f"{first:.1f} s"}, '
              f'replay {seconds:g} s, exit code {r["node_exit_code"]}, alive at end {r["node_alive_at_end"]}',
              flush=True)
        print(f'node {name}: {r["replay"]}', flush=True)  # a late player bunches the sets it hands the node
    warm = results[-1]
    summary = make_report(warm['recorded'], out / 'report', budget_ms=args.budget_ms)
    print((out / 'report' / 'summary.txt').read_text(), end='')
    missed = misses(warm['recorded'], args.budget_ms)
    for m in missed[:SHOWN_MISSES]:
        print(f'miss: cycle {m["cycle"]} ({m["after_first_s"]:.3f} s after the first), compute '
              f'{m["compute_ms"]:.2f} ms (queued {m["queued_ms"]:.2f}), inference {m["inference_ms"]:.2f} ms, '
              f'observation age {m["obs_age_ms"]:.2f} ms')
    if len(missed) > SHOWN_MISSES:
        print(f'... and {len(missed) - SHOWN_MISSES} more misses (all in node_gpu.json)')
    figures = {'backend_options': json.loads(args.backend_options), 'tiny': args.tiny,
               'runs': [{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()} for r in results],
               'summary': {k: v for k, v in summary.items() if k != 'files'}, 'misses': missed}
    (out / 'node_gpu.json').write_text(json.dumps(figures, indent=1, default=str))
    return 0 if all(r['node_exit_code'] == 0 and r['node_alive_at_end'] for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
