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

"""The fleet node over real DDS (loopback): three robots, one batched tiny Pi0 on ONNX Runtime.

The fleet runs in this process (its executor thread, the robots' own) next to one "rig" node per
robot that plays that robot in its namespace: cameras, joint states and an instruction in,
commands, trajectories and status out. Each robot's commands must equal what the single-robot
path gives for its inputs and noise, and one robot's camera dropout must leave the others
commanding. Sequences and counts are checked, with generous waits; no timing is asserted.
"""

import os
from pathlib import Path
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from test_control_node import CAMERAS, expected_chunk, H, node_parameters, nothing_left_behind, Rig, W

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.fleet_node import FleetNode
from pi0_trt_ros.node.spin_thread import SpinThread
from pi0_trt_ros.testing.dds import domain_id
from pi0_trt_ros.testing.faults import InjectedFault, refused_subscription, tokenizer_failing_on
from pi0_trt_ros.testing.tiny import make_tiny_bundle, tiny_io
from pi0_trt_ros.testing.wait import wait_for

DOMAIN_ID = domain_id(52)  # this module's own DDS domain (also the context fixture's, conftest.py)
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
# A thread that dies (a callback on a closed fleet, an executor shut down under its spinning thread) fails a test.
pytestmark = pytest.mark.filterwarnings('error::pytest.PytestUnhandledThreadExceptionWarning')

ROBOTS = ('robot_a', 'robot_b', 'robot_c')
INSTRUCTIONS = {'robot_a': 'pick up the red block', 'robot_b': 'open the drawer', 'robot_c': 'stack the cups'}
REPO = Path(__file__).resolve().parents[1]
WAIT_S = 60.0  # generous: the machine is loaded; nothing is asserted about how long it took
ATOL = 1e-5  # batched rows against batch-1 calls (test_fleet_batcher measures ~1e-6)


@pytest.fixture(scope='module')
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_tiny_bundle(tmp_path_factory.mktemp('tiny'), seed=3, io=tiny_io(camera_hw=(H, W)),
                            batch_sizes=(1, 2, 4))


def fleet_parameters(bundle: Any, **overrides: Any) -> list[Parameter]:
    """Return the control node's test parameters (chunk mode, its default) and the fleet's robots and batch sizes."""
    return node_parameters(bundle, **{'inference_mode': 'chunk', 'robots': list(ROBOTS), 'batch_sizes': [1, 2, 4],
                                      **overrides})


def send_bad_set(rig: Rig) -> None:
    """Publish a set the robot must reject: a NaN joint state and frames in an unknown encoding."""
    stamp = rig.now_ns()
    rig.joints.publish(rig.joint_state(stamp, positions=[float('nan')] * 6))
    for name, pub in rig.cameras.items():
        pub.publish(rig.image(name, stamp, encoding='yuv422'))


class Running:
    """A FleetNode spinning in its own thread, one rig per robot, and a /diagnostics listener."""

    def __init__(self, context: Context, bundle: Any, robot_overrides: dict[str, list[Parameter]],
                 **overrides: Any) -> None:
        self.fleet = FleetNode(robot_overrides=robot_overrides, context=context,
                               parameter_overrides=fleet_parameters(bundle, **overrides))
        self.robots = {r.get_namespace().strip('/'): r for r in self.fleet.robots}
        self.rigs = {name: Rig(context, f'/{name}') for name in ROBOTS}
        for i, rig in enumerate(self.rigs.values()):  # each robot its own frames and joint positions
            rng = np.random.default_rng(20 + i)
            rig.frames = {name: rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for name in CAMERAS}
            rig.positions = [float(v) for v in rng.uniform(-1.0, 1.0, 6)]
        self.listener = Node('diagnostics_listener', context=context)
        self.diagnostics: list[DiagnosticArray] = []
        self.listener.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 50)
        self.spinners = [SpinThread(context, [self.fleet], 'fleet'),  # the fleet node's executor, as main()'s
                         SpinThread(context, [self.listener], 'diagnostics_listener')]
        for spinner in self.spinners:
            spinner.start()
        for rig in self.rigs.values():
            rig.wait_connected(WAIT_S)

    def latest_status(self, name: str) -> dict[str, str]:
        for msg in reversed(self.diagnostics):
            for s in msg.status:
                if s.name == name:
                    return {'level': s.level[0], 'message': s.message, **{kv.key: kv.value for kv in s.values}}
        return {}

    def instruct_all(self) -> None:
        for name, rig in self.rigs.items():
            rig.instruct(INSTRUCTIONS[name])
        wait_for(lambda: all(r.robot.instruction.version == 1 for r in self.robots.values()), WAIT_S,
                 'the instructions')

    def close(self) -> None:
        """As the fleet process ends: no callback runs once the executors have stopped, then the fleet closes."""
        for rig in self.rigs.values():
            rig.close()
        for spinner in self.spinners:
            spinner.stop()
        self.fleet.close()
        for node in (self.listener, self.fleet):
            node.destroy_node()


@pytest.fixture
def start(context: Context, bundle: Any) -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def _start(robot_overrides: dict[str, list[Parameter]] | None = None, **overrides: Any) -> Running:
        running.append(Running(context, bundle, robot_overrides or {}, **overrides))
        return running[-1]

    yield _start
    for r in running:
        r.close()


def test_each_robot_commands_what_the_single_robot_path_gives(start: Callable[..., Running], bundle: Any) -> None:
    seeds = {'robot_a': 7, 'robot_b': 8, 'robot_c': 9}  # each robot its own noise, as its own node would draw
    r = start({name: [Parameter('noise_seed', value=seed)] for name, seed in seeds.items()},
              inference_mode='every_set', stale_timeout_ms=600_000.0,  # no hold while references are computed
              max_observation_age_ms=0.0,  # nor a set dropped as too old on a loaded machine
              max_wait_ms=600_000.0)  # every batch waits for the whole fleet: all three rows every time
    r.instruct_all()
    noise = {name: np.random.default_rng(seed) for name, seed in seeds.items()}  # inference k uses draw k
    for k in range(2):
        if k == 1:  # robot_b's bad inputs are rejected by robot_b alone: no set, no inference, no effect elsewhere
            faults = r.robots['robot_b'].robot.faults
            send_bad_set(r.rigs['robot_b'])
            wait_for(lambda: faults.count('joint_nonfinite') == 1 and faults.count('image_encoding') == 3, WAIT_S,
                     "robot_b's bad inputs counted")
        for i, (name, rig) in enumerate(r.rigs.items()):
            rig.positions = [p + 0.1 * (k + 1) * (i + 1) for p in rig.positions]
            rig.frames = {cam: np.roll(frame, 5 * k + 3 * i, axis=1) for cam, frame in rig.frames.items()}
            rig.send_set()
        wait_for(lambda: all(len(rig.commands) == k + 1 and len(rig.trajectories) == k + 1
                             for rig in r.rigs.values()), WAIT_S, f'command {k} of every robot')
        chunks = {}
        for name, rig in r.rigs.items():
            chunks[name] = expected_chunk(bundle, rig.frames, rig.positions,  # the single-robot path's
                                          noise[name].standard_normal((50, 32), dtype=np.float32), INSTRUCTIONS[name])
            np.testing.assert_allclose(rig.commands[k][1], chunks[name][0], rtol=0, atol=ATOL, err_msg=name)
            trajectory = np.array([list(p.positions) for p in rig.trajectories[k].points])
            np.testing.assert_allclose(trajectory, chunks[name], rtol=0, atol=ATOL, err_msg=name)
        assert np.abs(chunks['robot_a'] - chunks['robot_b']).max() > 1e-2  # the robots' chunks really differ
    assert r.fleet.batcher.stats().histogram == {3: 2}  # both rounds ran as one batch of three (padded to 4)
    for name, rig in r.rigs.items():
        wait_for(lambda: len(rig.status) == 2, WAIT_S, f'status of {name}')
        assert [s[0] for s in rig.status] == [0.0, 1.0]
        assert r.robots[name].robot.loop.holds_published == 0
        if name != 'robot_b':
            assert r.robots[name].robot.faults.counts() == {}, name


def stream(r: Running, until: Callable[[], bool], what: str, dropped: str = '') -> None:
    """Send sets to every robot at ~20 Hz (no cameras for ``dropped``) until ``until()`` holds."""
    end = time.monotonic() + WAIT_S
    while not until():
        if time.monotonic() > end:
            raise AssertionError(f'timed out after {WAIT_S} s waiting for {what}')
        for name, rig in r.rigs.items():
            rig.send_set(skip_cameras=name == dropped)
        time.sleep(0.05)


def test_a_robots_camera_dropout_leaves_the_others_commanding(start: Callable[..., Running]) -> None:
    r = start(stale_timeout_ms=2000.0, stop_timeout_ms=500.0, control_rate_hz=50.0)  # chunk mode, the default
    r.instruct_all()
    rigs, robots = r.rigs, r.robots
    stream(r, lambda: all(len(rig.commands) >= 5 for rig in rigs.values()), 'commands of every robot')
    dropped = robots['robot_b'].robot.loop
    stream(r, lambda: dropped.stopped, 'robot_b to stop after its cameras stopped', dropped='robot_b')
    wait_for(lambda: len(rigs['robot_b'].commands) == dropped.commands_published + dropped.holds_published,
             WAIT_S, "robot_b's last commands")
    n_b = len(rigs['robot_b'].commands)
    others = {name: robots[name].robot.loop for name in ('robot_a', 'robot_c')}
    policy_commands = {name: loop.commands_published for name, loop in others.items()}
    stream(r, lambda: all(loop.commands_published > policy_commands[name] + 50 for name, loop in others.items()),
           'robot_a and robot_c to keep commanding the policy while robot_b has no cameras', dropped='robot_b')
    assert dropped.stopped and len(rigs['robot_b'].commands) == n_b  # still stopped, nothing commanded
    stream(r, lambda: len(rigs['robot_b'].commands) > n_b, 'robot_b to command again with its cameras back')

    fleet = '/pi0_fleet'
    wait_for(lambda: int(r.latest_status(f'{fleet}: batcher').get('observations', 0)) > 0, WAIT_S,
             'fleet diagnostics')
    batcher = r.latest_status(f'{fleet}: batcher')
    assert batcher['robots'] == '/robot_a,/robot_b,/robot_c' and batcher['batch_sizes'] == '1,2,4'
    assert sum(int(batcher.get(f'batch_size.{n}', 0)) * n for n in (1, 2, 3)) == int(batcher['observations'])
    for name in ROBOTS:
        assert int(batcher[f'robot.{name}.chunks']) > 0 and float(batcher[f'robot.{name}.chunk_latency_ms_p99']) > 0
    gpu = r.latest_status(f'{fleet}: gpu')
    assert gpu['message'] == 'runner on cpu: no GPU to report' and gpu['nvml'] == 'unavailable'
    assert 'utilization_percent' not in gpu  # no figure is made up
    wait_for(lambda: r.latest_status('/robot_b/pi0_control: inputs').get('level') == 0, WAIT_S,
             "robot_b's inputs OK again")
    assert int(r.latest_status('/robot_b/pi0_control: inputs')['bad_input.camera_stopped']) == 3


def test_a_robot_whose_callback_fails_stops_alone(start: Callable[..., Running]) -> None:
    r = start(control_rate_hz=50.0)  # chunk mode, the default
    r.instruct_all()
    rigs, robots = r.rigs, r.robots
    stream(r, lambda: all(len(rig.commands) >= 5 for rig in rigs.values()), 'commands of every robot')
    failed = robots['robot_b']
    with tokenizer_failing_on('open the drawer slowly'):  # raises in robot_b's instruction callback
        rigs['robot_b'].instruct('open the drawer slowly')
        stream(r, lambda: bool(failed.failure), 'robot_b to stop after its failed callback')
    assert failed.failure == "InjectedFault: tokenizer failed on 'open the drawer slowly'"
    loop = failed.robot.loop
    wait_for(lambda: len(rigs['robot_b'].commands) == loop.commands_published + loop.holds_published, WAIT_S,
             "robot_b's last commands")
    n_b = len(rigs['robot_b'].commands)
    others = {name: robots[name].robot.loop for name in ('robot_a', 'robot_c')}
    policy_commands = {name: other.commands_published for name, other in others.items()}
    stream(r, lambda: all(other.commands_published > policy_commands[name] + 50 for name, other in others.items()),
           'robot_a and robot_c to keep commanding after robot_b stopped')
    assert len(rigs['robot_b'].commands) == n_b  # robot_b commanded nothing since, its inputs flowing all along
    wait_for(lambda: r.latest_status('/robot_b/pi0_control: stopped').get('level') == 2, WAIT_S,
             "the fleet's ERROR for robot_b")
    assert 'InjectedFault' in r.latest_status('/robot_b/pi0_control: stopped')['message']
    assert r.latest_status('/robot_a/pi0_control: stopped') == {}


@pytest.mark.parametrize('robot_overrides,overrides,match', [
    ({'robot_b': [Parameter('backend', value='torch')]}, {},
     r"/robot_b/pi0_control: backend must be the same for every robot of a fleet(.|\n)*'torch' for /robot_b"),
    ({}, {'robots': [], 'max_wait_ms': -1.0}, r'robots is empty(.|\n)*max_wait_ms must be >= 0'),
    ({'robot_z': [Parameter('noise_seed', value=1)]}, {}, r"parameters given for \['robot_z'\]"),
    ({}, {'device': 'gpu0'}, 'device must be cpu, cuda or cuda:N'),
    ({}, {'robots': ['robot a', 'robot_b']}, r"robots: '/robot a' is not a valid namespace \(namespace must not"),
    ({'robot_b': [Parameter('instruction_topic', value='say it')]}, {},
     r"/robot_b/pi0_control: invalid parameters(.|\n)*instruction_topic: 'say it' is not a valid topic name"),
])
def test_start_up_errors_say_what_to_change(context: Context, bundle: Any, robot_overrides: dict,
                                            overrides: dict, match: str) -> None:
    with pytest.raises(Pi0Error, match=match):
        FleetNode(robot_overrides=robot_overrides, context=context,
                  parameter_overrides=fleet_parameters(bundle, **overrides))


def test_a_robot_that_fails_to_start_leaves_no_thread_nor_node_behind(context: Context, bundle: Any) -> None:
    # robot_a is made (chunk mode: its inference thread runs, its sensor node exists); rclpy refuses
    # robot_b's instruction subscription; the fleet then closes robot_a, the batcher and the runner.
    with nothing_left_behind(context, ('/robot_', '/pi0_fleet')), refused_subscription('/robot_b/instruction'):
        with pytest.raises(InjectedFault, match='/robot_b/instruction'):
            FleetNode(context=context, parameter_overrides=fleet_parameters(bundle))


def test_help_and_a_failed_start_as_processes(bundle: Any) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED='1')
    done = subprocess.run([sys.executable, '-m', 'pi0_trt_ros.node.fleet_node', '--help'], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith('usage: ros2 run pi0_trt_ros fleet_node')
    assert all(f'  {name} (' in done.stdout for name in ('robots', 'batch_sizes', 'max_wait_ms', 'device'))
    failed = subprocess.run([sys.executable, '-m', 'pi0_trt_ros.node.fleet_node', '--ros-args', '-p',
                             f'engine_dir:={bundle.engine_dir}', '-p', f'tokenizer:={bundle.tokenizer}', '-p',
                             'backend:=onnxruntime'], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    out = failed.stdout + failed.stderr
    assert failed.returncode == 1 and 'start-up failed' in out and 'robots:=[robot_a, robot_b]' in out, out
    assert 'Traceback' not in out, out
