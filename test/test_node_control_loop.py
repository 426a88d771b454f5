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

"""ControlLoop rules, each driven by a fake clock: a tiny Pi0 on ONNX Runtime, no DDS, no wall-clock time.

The fake clock advances only when the loop sleeps or waits for a set, and when the fault-injecting
runner is told a call takes longer, so every figure below (tick times, hold counts, deadline
misses) is exact whatever the machine's speed.
"""

import array
import dataclasses
import threading
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from pi0_trt_ros.node.actions import ActionSanitizer, CommandWriter
from pi0_trt_ros.node.control_loop import ControlLoop, HoldTarget, LoopConfig, LoopParts, Mailbox, StageRing
from pi0_trt_ros.node.deadline import DeadlineMonitor
from pi0_trt_ros.node.faults import FaultCounters
from pi0_trt_ros.node.images import ImageDecoder
from pi0_trt_ros.node.instruction import InstructionBox
from pi0_trt_ros.testing.faults import FaultInjectingRunner
from pi0_trt_ros.testing.tiny import CAMERA_KEYS, JOINT_NAMES, make_tiny_bundle, tiny_io

MS = 1_000_000
H, W = 48, 64
LIMIT = 3.0
STATE = np.array([0.1, -0.2, 0.3, -0.4, 0.5, -0.6])


class FakeClock:
    """Monotonic ns that advance only when the loop sleeps or waits (or a test says so)."""

    def __init__(self) -> None:
        self.t = 1_000 * MS

    def now_ns(self) -> int:
        return self.t

    def sleep_ns(self, ns: int) -> bool:
        self.t += max(0, ns)
        return False

    def wait(self, condition: threading.Condition, ns: int) -> None:
        self.t += ns

    def advance(self, ns: int) -> None:
        self.t += ns


@pytest.fixture(scope='module')
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from pi0_trt_ros.runners import make_runner

    bundle = make_tiny_bundle(tmp_path_factory.mktemp('tiny'), seed=3, io=tiny_io(camera_hw=(H, W)))
    with make_runner('onnxruntime', engine_dir=bundle.engine_dir) as active:
        active.bundle = bundle
        yield active


@dataclasses.dataclass
class Rig:
    """A loop with its outputs recorded: (fake time, values) per command and trajectory."""

    loop: ControlLoop
    clock: FakeClock
    injector: FaultInjectingRunner
    commands: list
    trajectories: list
    status: list
    warnings: list
    faults: FaultCounters
    instruction: InstructionBox
    hold_target: HoldTarget
    transport: str

    def frame(self, k: int) -> Any:
        pixels = np.full((H, W, 3), 40 + k % 100, np.uint8)
        if self.transport == 'compressed':
            msg = CompressedImage(format='jpeg')
            msg.data = array.array('B', cv2.imencode('.jpg', pixels)[1].tobytes())
            return msg
        msg = Image(height=H, width=W, encoding='rgb8', step=W * 3)
        msg.data = array.array('B', pixels.tobytes())
        return msg

    def put_set(self, k: int = 0, images: list | None = None) -> None:
        now = self.clock.now_ns()
        images = images if images is not None else [self.frame(k) for _ in CAMERA_KEYS]
        self.loop.parts.mailbox.put(images, STATE.astype(np.float32), now, now, now, 0)

    def steps(self, n: int) -> None:
        for _ in range(n):
            self.loop.step()

    def holds(self) -> list:
        return [t for t, c in self.commands if np.allclose(c, STATE)]

    def instruct(self, text: str) -> None:
        self.instruction.receive(serialize_message(String(data=text)))


def make_rig(runner: Any, transport: str = 'raw', **overrides: Any) -> Rig:
    from pi0_trt_ros.tokenizer import Pi0Tokenizer

    values: dict[str, Any] = {
        'every_set': True, 'n_action_steps': 4, 'period_ns': 20 * MS, 'stale_timeout_ns': 500 * MS,
        'stop_timeout_ns': 2000 * MS, 'on_stale': 'hold', 'on_deadline_miss': 'publish', 'publish_trajectory': True,
        'trajectory_stamp_now': False, 'noise_seed': 0, 'fixed_noise': False}
    values.update(overrides)
    config = LoopConfig(**values)
    clock = FakeClock()
    injector = FaultInjectingRunner(runner, delay_ns=clock.advance)
    commands: list = []
    trajectories: list = []
    status: list = []
    warnings: list = []
    faults = FaultCounters(warnings.append, lambda line: None, throttle_sec=0.0)
    io = runner.io
    tokenizer = Pi0Tokenizer.from_path(runner.bundle.tokenizer, io.token_len)
    instruction = InstructionBox(tokenizer, io.token_len, 100, faults, lambda line: None, 0.0)
    hold_target = HoldTarget(len(JOINT_NAMES))
    hold_target.update(STATE)
    lower, upper = [-LIMIT] * len(JOINT_NAMES), [LIMIT] * len(JOINT_NAMES)
    writer = CommandWriter(lower, upper, JOINT_NAMES, io.chunk_size, 50.0,
                           lambda raw: commands.append(
                               (clock.t, list(deserialize_message(raw, Float64MultiArray).data))),
                           lambda raw: trajectories.append(
                               (clock.t, deserialize_message(raw, JointTrajectory))))
    parts = LoopParts(
        mailbox=Mailbox(len(JOINT_NAMES), clock),
        decoders=[ImageDecoder(runner.staging.images[i], transport) for i in range(len(CAMERA_KEYS))],
        sources=[f'camera {k}' for k in CAMERA_KEYS], instruction=instruction, hold_target=hold_target,
        runner=injector, sanitizer=ActionSanitizer(lower, upper, io.chunk_size), writer=writer,
        monitor=DeadlineMonitor(20.0, 10, error_consecutive=3), faults=faults, stages=StageRing(10),
        publish_status=lambda *values: status.append(values), ros_now_ns=clock.now_ns, info=lambda line: None,
        warn=warnings.append)
    rig = Rig(ControlLoop(config, parts, clock), clock, injector, commands, trajectories, status, warnings, faults,
              instruction, hold_target, transport)
    rig.instruct('pick up the red block')
    return rig


def chunk_of(trajectory: JointTrajectory) -> np.ndarray:
    return np.array([list(p.positions) for p in trajectory.points])


# -- every_set and chunk modes -------------------------------------------------------------------
def test_every_set_publishes_the_first_action_of_each_chunk_once(runner: Any) -> None:
    rig = make_rig(runner)
    rig.steps(5)  # no set: nothing, not stale (nothing ever came)
    assert rig.commands == [] and rig.loop.stale_for_ns(rig.clock.t) == 0
    for k in range(3):
        rig.put_set(k)
        rig.steps(1)
    assert len(rig.commands) == len(rig.trajectories) == len(rig.status) == 3
    for (_, command), (_, trajectory) in zip(rig.commands, rig.trajectories):
        np.testing.assert_array_equal(command, chunk_of(trajectory)[0])
    assert rig.loop.cycles == 3 and rig.loop.holds_published == 0


@pytest.mark.parametrize('stamp_now', [False, True], ids=['zero_stamp', 'stamp_now'])
def test_trajectories_are_stamped_zero_unless_asked_for_the_ros_time(runner: Any, stamp_now: bool) -> None:
    rig = make_rig(runner, trajectory_stamp_now=stamp_now)
    rig.put_set(0)
    rig.steps(1)
    (_, trajectory), = rig.trajectories
    stamp = trajectory.header.stamp.sec * 1_000_000_000 + trajectory.header.stamp.nanosec
    assert stamp == (rig.clock.now_ns() if stamp_now else 0)


def test_mailbox_keeps_the_newest_set_and_counts_the_superseded(runner: Any) -> None:
    rig = make_rig(runner)
    for k in range(3):
        rig.put_set(k)
    rig.steps(2)
    assert rig.loop.cycles == 1 and rig.loop.parts.mailbox.superseded == 2
    assert (rig.loop.parts.runner.staging.images[0] == 40 + 2).all()  # the pixels of set 2


def test_chunk_mode_publishes_n_action_steps_one_per_tick_then_infers_again(runner: Any) -> None:
    rig = make_rig(runner, every_set=False, n_action_steps=4)
    rig.put_set(0)
    rig.steps(4)  # infer + first action, then 3 ticks
    t0 = rig.commands[0][0]
    assert [t - t0 for t, _ in rig.commands] == [0, 20 * MS, 40 * MS, 60 * MS]  # exactly 50 Hz
    np.testing.assert_array_equal([c for _, c in rig.commands], chunk_of(rig.trajectories[0][1])[:4])
    rig.put_set(1)
    rig.steps(1)  # the queue is empty: the next step infers on the newest set
    assert len(rig.trajectories) == 2 and len(rig.commands) == 5
    np.testing.assert_array_equal(rig.commands[4][1], chunk_of(rig.trajectories[1][1])[0])


def test_a_new_instruction_drops_the_rest_of_the_chunk(runner: Any) -> None:
    rig = make_rig(runner, every_set=False, n_action_steps=8)
    rig.put_set(0)
    rig.steps(2)
    assert len(rig.commands) == 2 and rig.loop.queue.remaining == 6
    rig.instruct('put it back')
    rig.steps(1)  # no set waiting: nothing from the old chunk is published
    assert len(rig.commands) == 2 and rig.loop.queue.remaining == 0
    rig.put_set(1)
    rig.steps(1)
    assert len(rig.trajectories) == 2 and len(rig.commands) == 3


# -- stale -> hold -> stop ---------------------------------------------------------------------
def test_stale_inputs_hold_once_per_tick_until_the_stop_timeout_then_stop_and_recover(runner: Any) -> None:
    rig = make_rig(runner, stale_timeout_ns=500 * MS, stop_timeout_ns=200 * MS, period_ns=20 * MS)
    rig.put_set(0)
    rig.steps(1)
    t_set = rig.clock.t
    rig.steps(60)  # each empty step waits one period: 1.2 s
    holds = rig.holds()
    # Holds from just past 500 ms to 700 ms after the last set, one per 20 ms tick: ticks 26..35.
    assert [t - t_set for t in holds] == [k * 20 * MS for k in range(26, 36)]
    assert rig.loop.stale and rig.loop.stopped and rig.loop.holds_published == 10
    assert rig.faults.count('inputs_stale') == 1 and any('stopped commanding' in w for w in rig.warnings)
    n = len(rig.commands)
    rig.put_set(1)
    rig.steps(1)
    assert len(rig.commands) == n + 1 and not rig.loop.stale and not rig.loop.stopped


def test_on_stale_stop_stops_without_holding(runner: Any) -> None:
    rig = make_rig(runner, on_stale='stop')
    rig.put_set(0)
    rig.steps(60)
    assert rig.loop.stopped and rig.loop.holds_published == 0 and len(rig.commands) == 1


def test_holds_are_clamped_to_the_joint_limits(runner: Any) -> None:
    rig = make_rig(runner, stale_timeout_ns=100 * MS)
    rig.put_set(0)
    rig.steps(1)
    rig.hold_target.update(np.array([LIMIT + 0.1, -LIMIT - 0.1, 0.0, 0.0, 0.0, 0.0]))  # within a reader's margin
    rig.steps(10)
    assert rig.loop.holds_published > 0
    assert rig.commands[-1][1] == [LIMIT, -LIMIT, 0.0, 0.0, 0.0, 0.0]


# -- sets that cannot be used ------------------------------------------------------------------
def undecodable_jpeg() -> CompressedImage:
    good = cv2.imencode('.jpg', np.zeros((H, W, 3), np.uint8))[1].tobytes()
    msg = CompressedImage(format='jpeg')
    msg.data = array.array('B', good[:good.index(b'\xff\xda')] + bytes(range(256)) * 4 + b'\xff\xd9')
    return msg


def test_frames_that_keep_failing_to_decode_count_as_a_stopped_camera(runner: Any) -> None:
    rig = make_rig(runner, transport='compressed', stale_timeout_ns=500 * MS, stop_timeout_ns=200 * MS)
    rig.put_set(0)
    rig.steps(1)
    assert len(rig.commands) == 1
    t_good = rig.clock.t
    for _ in range(50):  # sets keep coming every 20 ms, one camera's frames never decode
        rig.put_set(images=[rig.frame(0), undecodable_jpeg(), rig.frame(0)])
        rig.steps(1)
        rig.clock.advance(20 * MS)
    assert rig.loop.cycles == 1 and rig.faults.count('image_decode') == 50
    assert 'image_decode' in rig.loop.failing and rig.loop.stale and rig.loop.stopped
    assert rig.holds() and all(500 * MS < t - t_good <= 700 * MS for t in rig.holds())
    rig.put_set(1)
    rig.steps(1)
    assert rig.loop.cycles == 2 and not rig.loop.stale and rig.loop.failing == ''


@pytest.mark.parametrize('kind,counter', [('raise', 'inference_error'), ('nan', 'action_nonfinite')])
def test_failing_inference_gives_no_command_then_the_stale_policy(runner: Any, kind: str, counter: str) -> None:
    rig = make_rig(runner, stale_timeout_ns=100 * MS, stop_timeout_ns=100 * MS)
    rig.put_set(0)
    rig.steps(1)
    rig.injector.inject(kind, 30)
    for k in range(30):
        rig.put_set(k)
        rig.steps(1)
        rig.clock.advance(20 * MS)
    assert rig.faults.count(counter) == 30 and rig.loop.cycles == 1 and 'policy' in rig.loop.failing
    policy_commands = [c for _, c in rig.commands if not np.allclose(c, STATE)]
    assert len(policy_commands) == 1 and rig.loop.holds_published > 0 and rig.loop.stopped
    assert all(np.isfinite(c).all() and max(map(abs, c)) <= LIMIT for _, c in rig.commands)
    rig.put_set(99)
    rig.steps(1)
    assert rig.loop.cycles == 2 and not rig.loop.stopped


# -- deadline ----------------------------------------------------------------------------------
@pytest.mark.parametrize('policy', ['publish', 'drop', 'hold'])
def test_deadline_miss_policy(runner: Any, policy: str) -> None:
    rig = make_rig(runner, on_deadline_miss=policy)
    rig.injector.inject('slow', 3, slow_ns=25 * MS)  # over the 20 ms budget, exactly
    for k in range(4):
        rig.put_set(k)
        rig.steps(1)
    monitor = rig.loop.parts.monitor
    assert [s[0] for s in rig.status] == [True, True, True, False] and monitor.consecutive_misses == 0
    assert monitor.max_consecutive_misses == 3 and monitor.level()[0] == 1  # WARN: misses in the window
    assert [s[1] for s in rig.status] == [25 * MS] * 3 + [0]  # compute time on the fake clock
    late = {'publish': 3, 'drop': 0, 'hold': 0}[policy]
    assert rig.loop.commands_published == late + 1 and len(rig.trajectories) == late + 1
    assert rig.loop.holds_published == (3 if policy == 'hold' else 0)
