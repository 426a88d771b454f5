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

"""Many robots on one GPU end to end: R synthetic robots into one fleet process, beside R single-robot nodes.

For each R in ``--robots`` (default 1, 2, 4, 8) the synthetic bag (3 cameras 640x480 JPEG at
30 Hz, joint states at 100 Hz, the instruction; looped) is replayed under R namespaces
(``/robot_0`` ...), one player process per robot, for ``--seconds`` into

1. ``fleet``: one fleet node (``fleet_node``) serving the R robots through one batched runner
   (``--batch-sizes``), once per ``--max-wait-ms`` value (default 0 and 5: without a wait, robots
   that stream at camera rate tend to take turns, one robot per batch, since each stages its next
   set while another's batch runs; a wait of about one staging time lets them share batches), and
2. ``independent``: R single-robot control nodes (``control_node``, one process each, in the
   robots' namespaces) sharing the device,

both with the same parameters (``every_set`` by default: one inference per synchronized set, so a
robot asks for up to 30 observations/s; backend torch with ``--backend-options``). A recorder
takes each robot's ``~/status`` and commands and ``/diagnostics``; per robot the bag report's
figures (cycles, compute p50/p99, misses against ``--budget-ms``) and the aggregate observations
per second (the sum of the robots' cycle rates) are printed as a table and written to
``fleet_gpu.json``, with the fleet's batch-size histogram from its ``/diagnostics``.

On a machine with the ROS 2 wheels unpacked by ``pip install --prefix DIR``, ``--ros-prefix DIR``
sets the library and ament paths and re-executes the script with them (as ``node_gpu.py``).

    python benchmarks/fleet_gpu.py --seconds 60 --out /tmp/fleet_gpu            # full size, H200
    python benchmarks/fleet_gpu.py --tiny --device cpu --robots 1,2 --seconds 6 (on one line)
        --backend-options '{"device": "cpu", "dtype": "fp32", "mode": "eager"}'   # a CPU check
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import shutil
import subprocess
import sys
import time
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_gpu import add_setup_arguments, REPO, set_up  # noqa: E402 (the sibling benchmark)

DOMAIN_BASE = 54  # this benchmark's base DDS domain id, shifted by the run's domain slot
NODE_START_WAIT_S = 900.0  # a full-size checkpoint loads and compiles for minutes


def namespaces(robots: int) -> list[str]:
    return [f'robot_{i}' for i in range(robots)]


def record_topics(names: list[str]) -> dict[str, str]:
    """Each robot's status and commands, and /diagnostics."""
    topics = {'/diagnostics': 'diagnostic_msgs/msg/DiagnosticArray'}
    for ns in names:
        topics[f'/{ns}/pi0_control/status'] = 'std_msgs/msg/Float64MultiArray'
        topics[f'/{ns}/forward_position_controller/commands'] = 'std_msgs/msg/Float64MultiArray'
    return topics


def play_one(bag: Path, namespace: str, seconds: float, domain_id: int) -> int:
    """Player process: replay ``bag`` under ``/namespace`` once the node's subscriptions are there."""
    import rclpy
    from rclpy.context import Context

    from pi0_trt_ros.bag.player import BagPlayer

    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    player = BagPlayer(bag, loop=True, restamp=True, prefix=f'/{namespace}', node_name=f'player_{namespace}',
                       context=context)
    try:
        lonely = player.wait_for_subscribers(NODE_START_WAIT_S)
        if lonely:
            print(f'{namespace}: no subscriber on {lonely}', flush=True)
            return 1
        stats = player.play(duration_s=seconds)
        print(f'{namespace}: {stats.summary()}', flush=True)
        return 0
    finally:
        player.destroy_node()
        context.try_shutdown()


def run_case(case: str, mode: str, names: list[str], out: Path, config: Path, fleet_config: Path, bag: Path,
             seconds: float, env: dict[str, str], domain_id: int) -> dict[str, Any]:
    """Start the node(s) of ``mode``, replay the bag under every robot's namespace, record, stop."""
    import rclpy
    from rclpy.context import Context

    from pi0_trt_ros.bag.recorder import BagRecorder
    from pi0_trt_ros.demo import stop_node

    recorded = out / f'recorded_{case}'
    if recorded.exists():  # an earlier run's, in this work directory
        shutil.rmtree(recorded)
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    recorder = BagRecorder(recorded, record_topics(names), context=context).start()
    logs = []
    nodes = []
    if mode == 'fleet':
        cmds = [[sys.executable, '-m', 'pi0_trt_ros.node.fleet_node', '--ros-args', '--params-file', str(config),
                 '--params-file', str(fleet_config)]]
    else:
        cmds = [[sys.executable, '-m', 'pi0_trt_ros.node.control_node', '--ros-args', '--params-file', str(config),
                 '-r', f'__ns:=/{ns}'] for ns in names]
    players: list[subprocess.Popen] = []
    played = []
    try:
        for i, cmd in enumerate(cmds):
            log = (out / f'node_{case}_{i}.log').open('w')
            logs.append(log)
            nodes.append(subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))
        players = [subprocess.Popen([sys.executable, __file__, '--play', str(bag), '--namespace', ns, '--seconds',
                                     str(seconds), '--domain-id', str(domain_id)], cwd=REPO, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                   for ns in names]
        for player in players:
            while player.poll() is None:
                if any(n.poll() is not None for n in nodes):  # a node died (start-up failed): stop waiting
                    player.kill()
                time.sleep(0.2)
            played.append(player.communicate()[0].strip())
        alive = all(n.poll() is None for n in nodes)
        time.sleep(2.5)  # the last commands and diagnostics
    finally:
        for player in players:
            if player.poll() is None:
                player.kill()
        codes = [stop_node(n, 30.0) for n in nodes]  # SIGINT: each node's clean shutdown
        for log in logs:
            log.close()
        recorder.close()
        recorder.destroy_node()
        context.try_shutdown()
    return {'case': case, 'mode': mode, 'robots': len(names), 'recorded': recorded, 'node_exit_codes': codes,
            'nodes_alive_at_end': alive, 'players': played}


def robot_figures(recorded: Path, ns: str, budget_ms: float) -> dict[str, Any]:
    """Return the bag report's per-cycle figures of one robot (its ``~/status``)."""
    from pi0_trt_ros.bag.report import read_cycles, summarize

    try:
        cycles = read_cycles(recorded, status_topic=f'/{ns}/pi0_control/status')
    except Exception as err:  # no status recorded: the robot never commanded
        return {'robot': ns, 'cycles': 0, 'error': str(err)}
    s = summarize(cycles, budget_ms)
    return {'robot': ns, 'cycles': s['cycles'], 'cycle_rate_hz': s['cycle_rate_hz'],
            'compute_ms_p50': s['compute_ms']['p50'], 'compute_ms_p99': s['compute_ms']['p99'],
            'inference_ms_p50': s['inference_ms']['p50'], 'deadline_misses': s['deadline_misses']}


def fleet_histogram(recorded: Path) -> dict[str, str]:
    """Return the batch-size histogram and throughput of the fleet's last ``/pi0_fleet: batcher`` status."""
    from pi0_trt_ros.bag.bag_io import read_bag

    last: dict[str, str] = {}
    for m in read_bag(recorded, ['/diagnostics']):
        for status in m.msg.status:
            if status.name == '/pi0_fleet: batcher':
                last = {kv.key: kv.value for kv in status.values}
    return {k: v for k, v in last.items() if k.startswith('batch_size.') or k in (
        'observations', 'observations_per_s_since_start', 'batches', 'failed_batches')}


def summarize_case(run: dict[str, Any], names: list[str], budget_ms: float) -> dict[str, Any]:
    robots = [robot_figures(run['recorded'], ns, budget_ms) for ns in names]
    served = [r for r in robots if r['cycles'] > 1]
    p50 = [r['compute_ms_p50'] for r in served]
    p99 = [r['compute_ms_p99'] for r in served]
    summary = {'mode': run['label'], 'robots': run['robots'], 'robots_commanding': len(served),
               'compute_ms_p50': [min(p50), max(p50)] if p50 else None,
               'compute_ms_p99': [min(p99), max(p99)] if p99 else None,
               'deadline_misses': int(sum(r.get('deadline_misses', 0) for r in robots)),
               'cycles': int(sum(r['cycles'] for r in robots)),
               'observations_per_s': float(sum(r['cycle_rate_hz'] for r in served)),
               'per_robot': robots, 'node_exit_codes': run['node_exit_codes'],
               'nodes_alive_at_end': run['nodes_alive_at_end']}
    if run['mode'] == 'fleet':
        summary['max_wait_ms'] = run['max_wait_ms']
        summary['batcher'] = fleet_histogram(run['recorded'])
    return summary


def format_table(rows: list[dict[str, Any]], budget_ms: float) -> str:
    """One line per (mode, R): robots commanding, compute p50/p99 (min-max over robots), misses, observations/s."""
    lines = [f'{"mode":<14} {"R":>2} {"cmd":>3} {"compute p50 ms":>15} {"compute p99 ms":>15} '
             f'{f"misses>{budget_ms:g}ms":>12} {"cycles":>7} {"obs/s":>8}  batches (size:count)']
    for r in rows:
        def span(v: list[float] | None) -> str:
            return '-' if v is None else f'{v[0]:.1f}-{v[1]:.1f}'
        batches = ' '.join(f'{k.split(".")[1]}:{v}' for k, v in r.get('batcher', {}).items()
                           if k.startswith('batch_size.') and not k.endswith('mean_ms'))
        lines.append(f'{r["mode"]:<14} {r["robots"]:>2} {r["robots_commanding"]:>3} {span(r["compute_ms_p50"]):>15} '
                     f'{span(r["compute_ms_p99"]):>15} {r["deadline_misses"]:>12} {r["cycles"]:>7} '
                     f'{r["observations_per_s"]:>8.1f}  {batches}')
    return '\n'.join(lines)


def main() -> int:
    """Write the inputs, run every (mode, R) case, print the table, write fleet_gpu.json."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--robots', default='1,2,4,8', help='robot counts R, comma-separated')
    parser.add_argument('--seconds', type=float, default=60.0, help='replay length of each case (s)')
    parser.add_argument('--gpu', default='', help="the fleet's device parameter (cuda:N); '': from backend options")
    parser.add_argument('--batch-sizes', default='1,2,4,8', help="the fleet runner's batch sizes")
    parser.add_argument('--max-wait-ms', default='0,5',
                        help="the fleet's wait for more robots (ms), comma-separated: one fleet case per value")
    parser.add_argument('--inference-mode', default='every_set', choices=('every_set', 'chunk'))
    parser.add_argument('--modes', default='fleet,independent', help='which cases to run')
    add_setup_arguments(parser, '/tmp/fleet_gpu', DOMAIN_BASE)
    parser.add_argument('--play', type=Path, help=argparse.SUPPRESS)  # player process: bag
    parser.add_argument('--namespace', help=argparse.SUPPRESS)  # player process: robot namespace
    args = parser.parse_args()
    if args.play is not None:
        return play_one(args.play, args.namespace, args.seconds, args.domain_id)
    out, bag, config, env = set_up(args, DOMAIN_BASE, compressed=True, inference_mode=args.inference_mode,
                                   deadline_ms=args.budget_ms)

    import yaml

    rows = []
    modes = args.modes.split(',')
    cases = ([('fleet', float(w)) for w in args.max_wait_ms.split(',')] if 'fleet' in modes else []) + (
        [('independent', None)] if 'independent' in modes else [])
    for robots in [int(r) for r in args.robots.split(',')]:
        names = namespaces(robots)
        for mode, wait in cases:
            label = mode if wait is None else f'fleet w{wait:g}ms'
            case = f'{label.replace(" ", "_")}_{robots}'
            fleet_config = out / f'{case}.yaml'
            fleet_config.write_text(yaml.safe_dump({'/pi0_fleet': {'ros__parameters': {
                'robots': names, 'batch_sizes': [int(b) for b in args.batch_sizes.split(',')],
                'max_wait_ms': wait or 0.0, 'device': args.gpu}}}))
            run = run_case(case, mode, names, out, config, fleet_config, bag, args.seconds, env, args.domain_id)
            run.update(label=label, max_wait_ms=wait)
            row = summarize_case(run, names, args.budget_ms)
            rows.append(row)
            print(f'{case}: {row["robots_commanding"]}/{robots} robots commanding, '
                  f'{row["observations_per_s"]:.1f} observations/s, exit codes {row["node_exit_codes"]}', flush=True)
    table = format_table(rows, args.budget_ms)
    print(table)
    (out / 'fleet_gpu.json').write_text(json.dumps({'backend_options': json.loads(args.backend_options),
                                                    'tiny': args.tiny, 'seconds': args.seconds,
                                                    'inference_mode': args.inference_mode, 'rows': rows},
                                                   indent=1, default=str))
    ok = all(r['nodes_alive_at_end'] and all(c == 0 for c in r['node_exit_codes']) for r in rows)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
