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

"""The control node over real DDS (loopback) with a tiny random Pi0 on ONNX Runtime.

Each test starts the node in this process (its own executor thread) next to a "rig" node that
plays the robot: three cameras, joint states and the instruction in, commands, trajectories,
status and diagnostics out.
"""

import array
import contextlib
import logging
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import serialize_message
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.control_node import ControlNode
from pi0_trt_ros.node.instruction import decode_instruction
from pi0_trt_ros.node.ros_logging import PACKAGE_LOGGER
from pi0_trt_ros.node.spin_thread import SpinThread
from pi0_trt_ros.testing.dds import domain_id
from pi0_trt_ros.testing.faults import InjectedFault, refused_subscription
from pi0_trt_ros.testing.tiny import CAMERA_KEYS, JOINT_NAMES, make_tiny_bundle, tiny_io
from pi0_trt_ros.testing.wait import wait_for

DOMAIN_ID = domain_id(75)  # this module's own DDS domain (also the context fixture's, conftest.py)
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)  # set before any rclpy.init (fixtures, child processes)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'

H, W = 96, 128
# Camera names in an order different from the policy's keys, so the key mapping is exercised.
CAMERAS = {'left_wrist': CAMERA_KEYS[1], 'base': CAMERA_KEYS[0], 'right_wrist': CAMERA_KEYS[2]}
INSTRUCTION = 'pick up the red block'
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_tiny_bundle(tmp_path_factory.mktemp('tiny'), seed=3, io=tiny_io(camera_hw=(H, W)))


def node_parameters(bundle: Any, **overrides: Any) -> list[Parameter]:
    values = {
        'engine_dir': str(bundle.engine_dir), 'tokenizer': str(bundle.tokenizer), 'backend': 'onnxruntime',
        'sensor_qos_reliability': 'reliable', 'inference_mode': 'every_set', 'warmup_iterations': 1,
        'joint_lower_limits': [-100.0] * 6, 'joint_upper_limits': [100.0] * 6, 'cameras': list(CAMERAS),
        'diagnostics_period_sec': 0.5,
    }
    for name, key in CAMERAS.items():
        values[f'camera.{name}.topic'] = f'{name}/image_raw'
        values[f'camera.{name}.key'] = key
    values.update(overrides)
    return [Parameter(k, value=v) for k, v in values.items()]


class Rig:
    """The robot side: publishes cameras, joint states and instructions; records the node's outputs."""

    def __init__(self, context: Context, namespace: str) -> None:
        self.node = Node('rig', namespace=namespace, context=context)
        self.cameras = {name: self.node.create_publisher(Image, f'{name}/image_raw', 10) for name in CAMERAS}
        self.joints = self.node.create_publisher(JointState, 'joint_states', 50)
        self.instruction = self.node.create_publisher(String, 'instruction', 10)
        self.commands: list[tuple[float, list[float]]] = []  # (monotonic s, data)
        self.trajectories: list[JointTrajectory] = []
        self.status: list[list[float]] = []
        self.diagnostics: list[DiagnosticArray] = []
        node_name = f'{namespace}/pi0_control'
        self._subs = [
            self.node.create_subscription(Float64MultiArray, 'forward_position_controller/commands',
                                          lambda m: self.commands.append((time.monotonic(), list(m.data))), 100),
            self.node.create_subscription(JointTrajectory, 'joint_trajectory_controller/joint_trajectory',
                                          self.trajectories.append, 100),
            self.node.create_subscription(Float64MultiArray, f'{node_name}/status',
                                          lambda m: self.status.append(list(m.data)), 100),
            self.node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics, 10),
        ]
        self._node_name = node_name
        self.spinner = SpinThread(context, [self.node], name=f'rig{namespace}')
        self.spinner.start()
        rng = np.random.default_rng(11)
        self.frames = {name: rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for name in CAMERAS}
        self.positions = [0.1, -0.2, 0.3, -0.4, 0.5, -0.6]

    def _diagnostics(self, msg: DiagnosticArray) -> None:
        if any(s.name.startswith(self._node_name + ':') for s in msg.status):
            self.diagnostics.append(msg)

    def wait_connected(self, timeout: float = 10.0) -> None:
        pubs = list(self.cameras.values()) + [self.joints, self.instruction]
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs)
                 and all(s.get_publisher_count() > 0 for s in self._subs[:3]), timeout, 'discovery')

    def image(self, name: str, stamp_ns: int, frame: np.ndarray | None = None, encoding: str = 'rgb8') -> Image:
        frame = self.frames[name] if frame is None else frame
        msg = Image(height=frame.shape[0], width=frame.shape[1], encoding=encoding,
                    step=frame.shape[1] * (frame.shape[2] if frame.ndim == 3 else 1))
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        msg.data = array.array('B', frame.tobytes())
        return msg

    def joint_state(self, stamp_ns: int, positions: list[float] | None = None,
                    names: list[str] | None = None) -> JointState:
        msg = JointState(name=list(JOINT_NAMES) if names is None else names,
                         position=self.positions if positions is None else positions)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        return msg

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def send_set(self, stamp_ns: int | None = None, skip_cameras: bool = False, skip_joints: bool = False,
                 skip_camera: str = '', stamp_offset_ns: int = 0) -> int:
        """Publish joint states and one frame per camera (unless skipped), all with one stamp."""
        stamp = (self.now_ns() if stamp_ns is None else stamp_ns) + stamp_offset_ns
        if not skip_joints:
            self.joints.publish(self.joint_state(stamp))
        if not skip_cameras:
            for name, pub in self.cameras.items():
                if name != skip_camera:
                    pub.publish(self.image(name, stamp))
        return stamp

    def stream(self, seconds: float, rate_hz: float = 20.0, **kwargs: Any) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.send_set(**kwargs)
            time.sleep(1.0 / rate_hz)

    def stream_until(self, predicate: Callable[[], bool], timeout: float, what: str, rate_hz: float = 20.0,
                     **kwargs: Any) -> None:
        """Keep sending sets until ``predicate()`` holds (however long the machine takes, up to ``timeout``)."""
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f'timed out after {timeout} s waiting for {what}')
            self.send_set(**kwargs)
            time.sleep(1.0 / rate_hz)

    def instruct(self, text: str = INSTRUCTION) -> None:
        self.instruction.publish(String(data=text))

    def latest_status(self, suffix: str) -> dict[str, str]:
        for msg in reversed(self.diagnostics):
            for s in msg.status:
                if s.name.endswith(suffix):
                    return {'level': s.level[0], 'message': s.message, **{kv.key: kv.value for kv in s.values}}
        return {}

    def close(self) -> None:
        self.spinner.stop()
        self.node.destroy_node()


class Running:
    """A ControlNode spinning in its own thread, plus a rig in the same namespace."""

    def all_delivered(self) -> bool:
        """Whether the rig has received every command the node published so far (policy and holds)."""
        loop = self.node.loop
        return len(self.rig.commands) == loop.commands_published + loop.holds_published

    def __init__(self, context: Context, bundle: Any, namespace: str, **overrides: Any) -> None:
        self.node = ControlNode(context=context, namespace=namespace,
                                parameter_overrides=node_parameters(bundle, **overrides))
        self.spinner = SpinThread(context, [self.node], name='control_node')  # its executor, as main()'s
        self.spinner.start()
        self.rig = Rig(context, namespace)
        self.rig.wait_connected()

    def close(self) -> None:
        """As the node's process ends: the executor stops, then the node closes (``run_node``)."""
        self.rig.close()
        self.spinner.stop()
        self.node.close()
        self.node.destroy_node()


@pytest.fixture
def start(context: Context, bundle: Any) -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def _start(namespace: str, **overrides: Any) -> Running:
        running.append(Running(context, bundle, namespace, **overrides))
        return running[-1]

    yield _start
    for r in running:
        r.close()


def expected_chunk(bundle: Any, frames: dict[str, np.ndarray], positions: list[float], noise: np.ndarray,
                   text: str = INSTRUCTION) -> np.ndarray:
    """Compute what the policy gives for this observation, with a runner of our own."""
    from pi0_trt_ros.runners import make_runner
    from pi0_trt_ros.tokenizer import Pi0Tokenizer

    with make_runner('onnxruntime', engine_dir=bundle.engine_dir) as runner:
        staging = runner.staging
        for name, key in CAMERAS.items():
            np.copyto(staging.images[runner.io.camera_keys.index(key)], frames[name])
        staging.state[:] = np.asarray(positions, np.float32)
        Pi0Tokenizer.from_path(bundle.tokenizer, runner.io.token_len).encode_into(text, staging.tokens,
                                                                                  staging.token_mask)
        np.copyto(staging.noise, noise)
        return runner.infer().astype(np.float64)


# -- instruction decoding ------------------------------------------------------------------------
def test_decode_instruction_is_strict_utf8() -> None:
    assert decode_instruction(serialize_message(String(data='grasp the cup ☕'))) == 'grasp the cup ☕'
    big_endian = b'\x00\x00\x00\x00' + (4).to_bytes(4, 'big') + b'abc\x00'
    assert decode_instruction(big_endian) == 'abc'
    bad = bytearray(serialize_message(String(data='hello')))
    bad[8] = 0xFF
    with pytest.raises(UnicodeDecodeError):
        decode_instruction(bytes(bad))
    with pytest.raises(ValueError, match='too short'):
        decode_instruction(b'\x00\x01\x00\x00')
    with pytest.raises(ValueError, match='does not fit'):
        decode_instruction(b'\x00\x01\x00\x00' + (100).to_bytes(4, 'little') + b'abc\x00')


# -- behaviour ---------------------------------------------------------------------------------
def test_commands_start_with_the_instruction_and_equal_the_policy_output(
        start: Callable[..., Running], bundle: Any) -> None:
    r = start('/parity', noise_seed=7, stale_timeout_ms=600_000.0,  # no hold while the reference is computed
              max_observation_age_ms=0.0)  # nor a set dropped as too old on a loaded machine
    rig = r.rig
    for _ in range(3):
        rig.send_set()
        time.sleep(0.05)
    time.sleep(0.5)
    assert rig.commands == [] and rig.trajectories == [] and rig.status == []  # no instruction yet
    rig.instruct()
    wait_for(lambda: r.node.instruction.version == 1, 5.0, 'the instruction')
    noise_rng = np.random.default_rng(7)  # the documented seeding: inference k uses draw k
    for k, positions in enumerate([[0.1, -0.2, 0.3, -0.4, 0.5, -0.6], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]]):
        rig.positions = positions
        rig.frames = {name: np.roll(frame, 7 * k, axis=1) for name, frame in rig.frames.items()}
        rig.send_set()
        wait_for(lambda: len(rig.commands) == k + 1 and len(rig.trajectories) == k + 1, 10.0, f'command {k}')
        chunk = expected_chunk(bundle, rig.frames, positions, noise_rng.standard_normal((50, 32), dtype=np.float32))
        np.testing.assert_allclose(rig.commands[k][1], chunk[0], rtol=0, atol=1e-5)
        traj = np.array([list(p.positions) for p in rig.trajectories[k].points])
        np.testing.assert_allclose(traj, chunk, rtol=0, atol=1e-5)
        assert list(rig.trajectories[k].joint_names) == list(JOINT_NAMES)
    wait_for(lambda: len(rig.status) == 2, 5.0, 'status')
    assert r.node.loop.holds_published == 0 and len(rig.commands) == 2
    for k, (cycle, compute_ms, obs_age_ms, missed, inference_ms, *_) in enumerate(rig.status):
        assert cycle == k and 0 < inference_ms <= compute_ms and obs_age_ms > 0 and missed in (0.0, 1.0)


def test_commands_equal_pi0_trt_infer_with_the_same_seed(
        start: Callable[..., Running], bundle: Any, tmp_path: Path) -> None:
    from pi0_trt_ros.cli import main as pi0_trt

    r = start('/cli', noise_seed=5, fixed_noise=True, stale_timeout_ms=600_000.0, max_observation_age_ms=0.0)
    rig = r.rig
    rig.instruct()
    wait_for(lambda: r.node.instruction.version == 1, 5.0, 'the instruction')
    for k in range(2):  # fixed noise: every inference uses draw 0, i.e. `pi0-trt infer --seed 5`
        rig.send_set()
        wait_for(lambda: len(rig.commands) == k + 1, 10.0, f'command {k}')
    order = {key: name for name, key in CAMERAS.items()}
    obs = tmp_path / 'obs.npz'
    np.savez(obs, state=np.asarray(rig.positions, np.float32),
             **{f'image.{i}': rig.frames[order[key]] for i, key in enumerate(CAMERA_KEYS)})
    out = tmp_path / 'actions.npz'
    assert pi0_trt(['infer', '--backend', 'onnxruntime', '--engine-dir', str(bundle.engine_dir), '--obs', str(obs),
                    '--seed', '5', '--instruction', INSTRUCTION, '--tokenizer', str(bundle.tokenizer),
                    '--out', str(out)]) == 0
    actions = np.load(out)['actions']
    assert r.node.loop.holds_published == 0 and len(rig.commands) == 2
    for _, command in rig.commands:
        np.testing.assert_allclose(command, actions[0], rtol=0, atol=1e-5)


def test_chunk_mode_keeps_commands_flowing_across_chunk_boundaries(start: Callable[..., Running]) -> None:
    """The sequence over DDS; tick timing, switch index and lead are test_node_control_loop's (fake clock)."""
    r = start('/chunk', inference_mode='chunk', n_action_steps=4, control_rate_hz=50.0, stale_timeout_ms=600_000.0)
    rig = r.rig
    rig.instruct()
    wait_for(lambda: r.node.instruction.version == 1, 5.0, 'the instruction')
    rig.stream_until(lambda: len(rig.trajectories) >= 5, 60.0, '5 chunks')
    loop = r.node.loop
    wait_for(lambda: loop.plan.remaining == 0 and not loop.worker.busy and r.all_delivered()
             and len(rig.trajectories) == r.node.cycles, 20.0, 'the last chunk to run out')
    trajectories = [[list(p.positions) for p in t.points] for t in rig.trajectories]
    commands = [c for _, c in rig.commands]
    # Every command is an action of a published chunk, chunks are commanded in the order they were
    # published (a chunk superseded before its first tick, possible on a loaded machine, is skipped),
    # and each commanded chunk starts at its trajectory's first point: commands flowed across the
    # boundaries with no hold in between.
    owner = []
    for n, command in enumerate(commands):
        later = [k for k, points in enumerate(trajectories) if k >= (owner[-1] if owner else 0) and command in points]
        assert later, f'command {n} is no action of a chunk published at or after the current one'
        owner.append(later[0])
    starts = [n for n in range(len(owner)) if n == 0 or owner[n] != owner[n - 1]]
    for n in starts:
        assert commands[n] == trajectories[owner[n]][0], f'chunk {owner[n]} starts with its first point'
    assert len(starts) >= 4 and loop.holds_published == 0


def test_diagnostics_carry_deadline_figures(start: Callable[..., Running]) -> None:
    r = start('/diag', deadline_ms=20, max_observation_age_ms=0.0)  # an integer for a double parameter is accepted
    rig = r.rig
    wait_for(lambda: rig.latest_status(': inputs').get('message') == 'waiting for an instruction', 5.0,
             'waiting status')
    rig.instruct()
    rig.stream_until(lambda: int(rig.latest_status(': deadline').get('cycles', 0)) >= 10, 60.0,
                     'diagnostics with cycles')
    deadline = rig.latest_status(': deadline')
    assert deadline['deadline_ms'] == '20'
    for key in ('compute_ms_last', 'compute_ms_mean', 'compute_ms_p50', 'compute_ms_p99', 'compute_ms_max',
                'obs_age_ms_p99', 'inference_ms_p50'):
        assert float(deadline[key]) > 0.0, key
    assert float(deadline['inference_ms_p50']) <= float(deadline['compute_ms_p50'])
    assert int(deadline['deadline_misses']) >= 0 and deadline['level'] in (0, 1, 2)
    inputs = rig.latest_status(': inputs')
    assert inputs['instruction'] == INSTRUCTION and int(inputs['commands_published']) >= 10
    assert rig.diagnostics[-1].status[0].hardware_id.startswith('onnxruntime:')


@pytest.mark.parametrize('policy', ['hold', 'drop'])
def test_deadline_miss_policy(start: Callable[..., Running], policy: str) -> None:
    r = start(f'/miss_{policy}', deadline_ms=0.001, on_deadline_miss=policy)
    rig = r.rig
    rig.instruct()
    rig.stream(1.0)
    wait_for(lambda: len(rig.status) >= 5, 5.0, 'status')
    assert all(s[3] == 1.0 for s in rig.status)  # every cycle missed the 1 µs budget
    assert rig.trajectories == []
    if policy == 'hold':
        assert len(rig.commands) >= 5
        assert all(np.allclose(c, rig.positions, atol=1e-6) for _, c in rig.commands)
    else:
        assert rig.commands == []
    wait_for(lambda: rig.latest_status(': deadline').get('level') == 2, 5.0, 'ERROR level')
    assert 'consecutive' in rig.latest_status(': deadline')['message']


def test_stale_cameras_hold_then_stop_the_commands_and_recover(start: Callable[..., Running]) -> None:
    """The sequence over DDS; how long each phase lasts is test_node_control_loop's (fake clock)."""
    r = start('/stale', stale_timeout_ms=1000.0, stop_timeout_ms=500.0, control_rate_hz=50.0)
    rig, loop = r.rig, r.node.loop
    rig.instruct()
    rig.stream_until(lambda: len(rig.commands) >= 5, 30.0, 'commands')
    hold = [0.25, 0.25, -0.25, -0.25, 0.5, -0.5]
    rig.positions = hold
    n_before = len(rig.commands)
    rig.stream_until(lambda: loop.stopped, 30.0, 'the stop', rate_hz=50.0, skip_cameras=True)  # cameras stopped
    wait_for(r.all_delivered, 10.0, 'every command')
    after = [c for _, c in rig.commands[n_before:]]
    first_hold = next(i for i, c in enumerate(after) if np.allclose(c, hold, atol=1e-6))
    assert loop.holds_published == len(after) - first_hold >= 1  # policy commands in flight, then only holds
    n_stopped = len(rig.commands)
    rig.stream(0.5, rate_hz=50.0, skip_cameras=True)
    assert len(rig.commands) == n_stopped  # stopped commanding
    wait_for(lambda: rig.latest_status(': inputs').get('message') == 'inputs stale: commands stopped', 5.0,
             'stopped status')
    inputs = rig.latest_status(': inputs')
    assert inputs['level'] == 2 and int(inputs['bad_input.camera_stopped']) == 3
    assert int(inputs['bad_input.inputs_stale']) == 1
    rig.stream_until(lambda: len(rig.commands) > n_stopped, 30.0, 'commands after recovery')  # cameras back
    wait_for(lambda: rig.latest_status(': inputs').get('level') == 0, 10.0, 'OK after recovery')


# -- bad inputs: each is logged, counted, and the node keeps commanding --------------------------
@pytest.fixture(scope='module')
def bad_rig(context: Context, bundle: Any) -> Iterator[Running]:
    running = Running(context, bundle, '/bad', max_instruction_chars=100, log_throttle_sec=0.0)
    running.rig.instruct()
    wait_for(lambda: running.node.instruction.version == 1, 5.0, 'the instruction')
    yield running
    running.close()


def publish_camera(rig: Rig, name: str, msg: Image) -> None:
    rig.cameras[name].publish(msg)


def bad_frame(**fields: Any) -> Callable[[Rig], None]:
    def send(rig: Rig) -> None:
        stamp = rig.now_ns()
        rig.joints.publish(rig.joint_state(stamp))
        msg = rig.image('base', stamp, frame=fields.pop('frame', None), encoding=fields.pop('encoding', 'rgb8'))
        for key, value in fields.items():
            setattr(msg, key, value)
        rig.cameras['left_wrist'].publish(rig.image('left_wrist', stamp))
        rig.cameras['right_wrist'].publish(rig.image('right_wrist', stamp))
        rig.cameras['base'].publish(msg)
    return send


def padded_frame(rig: Rig) -> None:
    stamp = rig.now_ns()
    rig.joints.publish(rig.joint_state(stamp))
    msg = rig.image('base', stamp)
    rows = np.frombuffer(msg.data, np.uint8).reshape(H, W * 3)
    padded = np.concatenate([rows, np.full((H, 32), 0xEE, np.uint8)], axis=1)
    msg.step, msg.data = W * 3 + 32, array.array('B', padded.tobytes())
    rig.cameras['left_wrist'].publish(rig.image('left_wrist', stamp))
    rig.cameras['right_wrist'].publish(rig.image('right_wrist', stamp))
    rig.cameras['base'].publish(msg)


def truncated_frame(rig: Rig) -> None:
    stamp = rig.now_ns()
    msg = rig.image('base', stamp)
    msg.data = msg.data[:-W]
    rig.cameras['base'].publish(msg)


def joints_with(names: list[str], positions: list[float]) -> Callable[[Rig], None]:
    def send(rig: Rig) -> None:
        stamp = rig.now_ns()
        rig.joints.publish(rig.joint_state(stamp, positions, names))
        for name, pub in rig.cameras.items():
            pub.publish(rig.image(name, stamp))
    return send


def camera_stamp(offset_ns: int | None) -> Callable[[Rig], None]:
    def send(rig: Rig) -> None:
        if offset_ns is None:
            stamp = 0
        else:
            last = r_last_stamp(rig)
            stamp = last - offset_ns
        rig.cameras['base'].publish(rig.image('base', stamp))
    return send


def r_last_stamp(rig: Rig) -> int:
    stamp = rig.send_set()
    time.sleep(0.05)
    return stamp


def non_utf8(rig: Rig) -> None:
    raw = bytearray(serialize_message(String(data='pick up the cube')))
    raw[9] = 0xC3  # a lead byte followed by ASCII: invalid UTF-8
    rig.instruction.publish(bytes(raw))


BAD_INPUTS = [
    ('image_encoding', bad_frame(encoding='yuv422'), False),
    ('image_size', bad_frame(frame=np.zeros((H // 2, W // 2, 3), np.uint8)), False),
    ('image_row_padding', padded_frame, True),
    ('image_big_endian', bad_frame(is_bigendian=1), True),
    ('image_truncated', truncated_frame, False),
    ('joint_missing', joints_with(list(JOINT_NAMES[:5]), [0.0] * 5), False),
    ('joint_extra', joints_with(list(JOINT_NAMES) + ['gripper'], [0.0] * 7), True),
    ('joint_nonfinite', joints_with(list(JOINT_NAMES), [0.0, float('nan'), 0.0, 0.0, 0.0, 0.0]), False),
    ('stamp_zero', camera_stamp(None), False),
    ('stamp_backwards', camera_stamp(10_000_000), False),
    ('instruction_empty', lambda rig: rig.instruct('   '), False),
    ('instruction_too_long', lambda rig: rig.instruct('x' * 101), False),
    ('instruction_not_utf8', non_utf8, False),
]


@pytest.mark.parametrize('counter,send,used', BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_counted_and_the_node_keeps_running(bad_rig: Running, counter: str,
                                                         send: Callable[[Rig], None], used: bool) -> None:
    node, rig = bad_rig.node, bad_rig.rig
    before = node.faults.count(counter)
    cycles = node.cycles
    send(rig)
    wait_for(lambda: node.faults.count(counter) > before, 5.0, f'{counter} to be counted')
    if used:
        wait_for(lambda: node.cycles > cycles, 5.0, 'a cycle on the noted input')
    assert node.instruction.text == INSTRUCTION  # a bad instruction never replaces the good one
    n = len(rig.commands)
    rig.stream(0.3)
    wait_for(lambda: len(rig.commands) > n, 5.0, 'commands after the bad input')


def test_diagnostics_expose_bad_input_counters(bad_rig: Running) -> None:
    node, rig = bad_rig.node, bad_rig.rig
    before = node.faults.count('image_encoding')  # the rig is shared: earlier tests may have counted some
    bad_frame(encoding='yuv422')(rig)
    wait_for(lambda: node.faults.count('image_encoding') > before, 5.0, 'a counted bad frame')
    counted = node.faults.count('image_encoding')

    def reported() -> int:
        return int(rig.latest_status(': inputs').get('bad_input.image_encoding', -1))

    wait_for(lambda: reported() >= counted, 5.0, 'the count in diagnostics')  # the next report after the count
    inputs = rig.latest_status(': inputs')
    assert int(inputs['bad_input.image_encoding']) == node.faults.count('image_encoding')
    assert 'yuv422' in inputs['bad_input.image_encoding.last']


# -- start-up -----------------------------------------------------------------------------------
@pytest.mark.parametrize('overrides,match', [
    ({'engine_dir': '/nonexistent/export'}, 'pi0_export.json not found'),
    ({'tokenizer': '/nonexistent/tokenizer.json'}, 'does not exist'),
    ({'camera.base.key': 'observation.images.top'}, 'do not match the policy'),
    ({'joint_names': ['a', 'b'], 'joint_lower_limits': [-1.0, -1.0], 'joint_upper_limits': [1.0, 1.0]},
     'state_dim 6'),
    ({'deadline_ms': -5.0, 'inference_mode': 'sometimes'},
     r'inference_mode must be one of(.|\n)*deadline_ms must be > 0'),
])
def test_start_up_errors_fail_fast_and_say_what_to_do(
        context: Context, bundle: Any, overrides: dict, match: str) -> None:
    with pytest.raises(Pi0Error, match=match):
        ControlNode(context=context, namespace='/startup', parameter_overrides=node_parameters(bundle, **overrides))


@contextlib.contextmanager
def nothing_left_behind(context: Context, prefixes: tuple[str, ...]) -> Iterator[None]:
    """Check that the block started no thread, left no node named ``prefixes...`` and no log handler.

    The probe sees this process's nodes at once: the nodes of one context share its DDS
    participant, whose graph is updated as they are created and destroyed.
    """
    probe = Node('leftover_probe', context=context)
    try:
        threads = set(threading.enumerate())
        handlers = list(logging.getLogger(PACKAGE_LOGGER).handlers)
        yield
        assert [t.name for t in threading.enumerate() if t not in threads] == []
        nodes = [f'{ns.rstrip("/")}/{name}' for name, ns in probe.get_node_names_and_namespaces()]
        assert '/leftover_probe' in nodes and [n for n in nodes if n.startswith(prefixes)] == []
        assert logging.getLogger(PACKAGE_LOGGER).handlers == handlers
    finally:
        probe.destroy_node()


@pytest.mark.parametrize('topic', [
    '/cleanup/instruction',  # the robot's last step: the sensor node and its executor exist
    '/cleanup/right_wrist/image_raw',  # the sensor node has three subscriptions, its executor not yet
])
def test_a_start_up_failure_leaves_no_thread_nor_node_behind(context: Context, bundle: Any, topic: str) -> None:
    # rclpy refuses a subscription half-way through start-up; chunk mode's inference thread runs by then.
    with nothing_left_behind(context, ('/cleanup/',)), refused_subscription(topic):
        with pytest.raises(InjectedFault, match=topic):
            ControlNode(context=context, namespace='/cleanup',
                        parameter_overrides=node_parameters(bundle, inference_mode='chunk'))


def test_the_sensor_node_follows_the_control_nodes_name_namespace_and_remappings(bundle: Any) -> None:
    """As under ``ros2 launch`` with ``name=``: process-wide remaps, the node renamed by ``__node``."""
    ctx = Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO,
               args=['--ros-args', '-r', '__node:=arm', '-r', '__ns:=/cell', '-r', 'joint_states:=arm/joint_states',
                     '-r', 'base/image_raw:=cam0/image_raw'])
    try:
        node = ControlNode(context=ctx, parameter_overrides=node_parameters(bundle))
        try:
            sensors = node.robot.sensors.node
            names = node.get_fully_qualified_name(), sensors.get_fully_qualified_name()
            assert names == ('/cell/arm', '/cell/arm_sensors')
            assert sorted(s.topic_name for s in sensors.subscriptions) == [
                '/cell/arm/joint_states', '/cell/cam0/image_raw', '/cell/left_wrist/image_raw',
                '/cell/right_wrist/image_raw']
            assert list(sensors.services) == [] and list(sensors.timers) == []  # nothing but the subscriptions
        finally:
            node.close()
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


# The control node's entry point with a tokenizer that raises on the instruction given as the first argument.
NODE_FAILING_ON = ('import sys\n'
                   'from pi0_trt_ros.node import control_node\n'
                   'from pi0_trt_ros.testing.faults import tokenizer_failing_on\n'
                   'with tokenizer_failing_on(sys.argv.pop(1)):\n'
                   '    sys.exit(control_node.main())\n')


def run_node_process(bundle: Any, *params: str, failing_on: str = '') -> subprocess.Popen:
    """Start the control node as ``ros2 run`` does (in ``/proc``), or with a tokenizer failing on ``failing_on``."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               PYTHONPATH=str(REPO), PYTHONUNBUFFERED='1')
    args = ['-p', f'engine_dir:={bundle.engine_dir}', '-p', f'tokenizer:={bundle.tokenizer}', '-p',
            'backend:=onnxruntime', '-r', '__ns:=/proc']
    for p in params:
        args += ['-p', p]
    program = ['-c', NODE_FAILING_ON, failing_on] if failing_on else ['-m', 'pi0_trt_ros.node.control_node']
    return subprocess.Popen([sys.executable, *program, '--ros-args', *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def read_until_ready(proc: subprocess.Popen) -> list[str]:
    """Return the node process's lines up to the one saying it waits for an instruction; fail if it ends first."""
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if 'waiting for an instruction' in line:
            return lines
    pytest.fail('node never became ready:\n' + ''.join(lines))


def test_process_exits_non_zero_on_a_start_up_error(bundle: Any) -> None:
    proc = run_node_process(bundle, 'engine_dir:=/nonexistent/export')
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert 'start-up failed' in out and 'pi0-trt export' in out and 'Traceback' not in out


@pytest.mark.parametrize('signals', [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)],
                         ids=['SIGINT', 'SIGTERM', 'SIGINT_twice'])  # twice: Ctrl-C under ros2 launch
def test_process_shuts_down_cleanly_on_signals(bundle: Any, signals: tuple[signal.Signals, ...]) -> None:
    proc = run_node_process(bundle)
    lines = read_until_ready(proc)
    for sig in signals:
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, ''.join(lines) + out
    assert 'Traceback' not in out


def test_process_ends_with_a_fatal_line_when_a_callback_raises(bundle: Any, context: Context) -> None:
    proc = run_node_process(bundle, failing_on='explode')  # a bug in the instruction callback, injected
    lines = read_until_ready(proc)
    node = Node('instructor', context=context)
    try:
        pub = node.create_publisher(String, '/proc/instruction', 10)
        end = time.monotonic() + 60.0  # generous: a loaded machine; nothing is asserted about the time
        while proc.poll() is None and time.monotonic() < end:  # until the node has heard it (volatile topic)
            pub.publish(String(data='explode'))
            time.sleep(0.2)
    finally:
        node.destroy_node()
    out, _ = proc.communicate(timeout=60)
    out = ''.join(lines) + out
    assert proc.returncode == 1, out  # launch and supervisors see it; the node's threads are stopped
    assert '[FATAL]' in out and "unexpected error (InjectedFault: tokenizer failed on 'explode')" in out, out
    assert 'the node stops, and its commands with it' in out and 'Traceback' in out, out  # where it came from
