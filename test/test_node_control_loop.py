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

"""ControlLoop and ChunkLoop rules, each driven by a fake clock: a tiny Pi0 on ONNX Runtime, no DDS, no wall-clock time.

The fake clock advances only when the loop sleeps or waits for a set, and when the fault-injecting
runner is told a call takes longer, so every figure below (tick times, hold counts, deadline
misses) is exact whatever the machine's speed. In chunk mode the policy runs on the loop's
inference thread: a slower call there waits for the fake time to reach its end (``block_for``),
and the clock lets that thread get as far as it can before each advance (``settle``), so the
two threads interleave the same way on every run.
"""

import array
import dataclasses
import math
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from pi0_trt_ros.node.actions import ActionSanitizer, CommandWriter
from pi0_trt_ros.node.chunk_loop import ChunkLoop
from pi0_trt_ros.node.chunk_monitor import ChunkMonitor
from pi0_trt_ros.node.control_loop import ControlLoop, HoldTarget, LoopConfig, LoopParts, Mailbox, StageRing
from pi0_trt_ros.node.deadline import DeadlineMonitor
from pi0_trt_ros.node.faults import FaultCounters
from pi0_trt_ros.node.frame_stager import FrameStager
from pi0_trt_ros.node.images import ImageDecoder
from pi0_trt_ros.node.instruction import InstructionBox
from pi0_trt_ros.testing.faults import FaultInjectingRunner
from pi0_trt_ros.testing.tiny import CAMERA_KEYS, JOINT_NAMES, make_tiny_bundle, tiny_io

MS = 1_000_000
H, W = 48, 64
LIMIT = 3.0
STATE = np.array([0.1, -0.2, 0.3, -0.4, 0.5, -0.6])


class FakeClock:
    """Monotonic ns that advance only when the loop sleeps or waits (or a test says so).

    The inference thread (chunk mode) takes fake time with ``block_for``: it waits until the
    control thread's sleeps reach the end of that time. Before and after every advance the clock
    waits (real time, generously) until that thread is idle or blocked at a later fake time, and an
    advance stops at the end of a blocked wait on its way, so a chunk is ready exactly when its
    delay says.
    """

    def __init__(self) -> None:
        self.t = 1_000 * MS
        self._cv = threading.Condition()
        self._wake_at: int | None = None  # fake time the blocked inference thread waits for
        self.worker_running: Callable[[], bool] = lambda: False

    def now_ns(self) -> int:
        return self.t

    def sleep_ns(self, ns: int) -> bool:
        self._advance_to(self.t + max(0, ns))
        return False

    def wait(self, condition: threading.Condition, ns: int) -> None:
        self._advance_to(self.t + ns)

    def advance(self, ns: int) -> None:
        self.t += ns

    def block_for(self, ns: int) -> None:
        """Take ``ns`` of fake time (inference thread): wait until the control thread's sleeps pass it."""
        with self._cv:
            self._wake_at = self.t + ns
            self._cv.notify_all()
            if not self._cv.wait_for(lambda: self._wake_at is None, timeout=120.0):
                raise AssertionError(f'fake time never reached {ns / MS} ms ahead')

    def release(self) -> None:
        with self._cv:
            self._wake_at = None
            self._cv.notify_all()

    def _settle(self) -> None:
        end = time.monotonic() + 120.0
        with self._cv:
            while self.worker_running() and self._wake_at is None:  # working at the current fake time
                if time.monotonic() > end:
                    raise AssertionError('the inference thread neither finished nor blocked')
                self._cv.wait(0.001)

    def _advance_to(self, target: int) -> None:
        self._settle()
        while True:
            with self._cv:
                if self._wake_at is None or self._wake_at > target:
                    break
                self.t = max(self.t, self._wake_at)
                self._wake_at = None
                self._cv.notify_all()
            self._settle()
        self.t = max(self.t, target)


@pytest.fixture(scope='module')
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from pi0_trt_ros.runners import make_runner

    bundle = make_tiny_bundle(tmp_path_factory.mktemp('tiny'), seed=3, io=tiny_io(camera_hw=(H, W)))
    with make_runner('onnxruntime', engine_dir=bundle.engine_dir) as active:
        active.bundle = bundle
        yield active


class Status:
    """One publish_status call: the values it gave, with the set's fields copied (the set is reused)."""

    def __init__(self, t: int, missed: bool, compute_ns: int, obs_age_ns: int, inference_ns: int, slot: Any,
                 slack_ns: float, switch_index: int, ticks_missed: float, queued_ns: int) -> None:
        self.t, self.missed, self.compute_ns, self.obs_age_ns = t, missed, compute_ns, obs_age_ns
        self.inference_ns, self.t_recv, self.slack_ns = inference_ns, slot.t_recv, slack_ns
        self.switch_index, self.ticks_missed, self.queued_ns = switch_index, ticks_missed, queued_ns


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

    def frame(self, k: int) -> Any:
        pixels = np.full((H, W, 3), 40 + k % 100, np.uint8)
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

    def run(self, duration_ns: int, camera_ns: int = 20 * MS, k: int | None = 0) -> None:
        """Step the loop for ``duration_ns`` of fake time, a set coming every ``camera_ns`` (None: no sets).

        ``k``: the frame content of every set (0: all alike, so with fixed noise every chunk is the same);
        None gives each set new pixels.
        """
        end = self.clock.t + duration_ns
        next_set = self.clock.t
        n = 0
        while self.clock.t < end:
            if camera_ns and self.clock.t >= next_set:
                self.put_set(n if k is None else k)
                next_set += camera_ns
                n += 1
            self.loop.step()

    def close(self) -> None:
        self.clock.release()
        self.loop.close()


OPEN_RIGS: list = []  # closed after each test (chunk mode runs a thread)


@pytest.fixture(autouse=True)
def close_rigs() -> Iterator[None]:
    yield
    while OPEN_RIGS:
        OPEN_RIGS.pop().close()


def make_rig(runner: Any, lead_ms: float = 0.0, lead_margin_ms: float = 10.0,
             prior_latency_ms: float = math.nan, **overrides: Any) -> Rig:
    """Build a loop on the fake clock: every_set mode by default, chunk mode (a ChunkLoop) with ``every_set=False``."""
    from pi0_trt_ros.tokenizer import Pi0Tokenizer

    values: dict[str, Any] = {
        'every_set': True, 'n_action_steps': 4, 'period_ns': 20 * MS, 'stale_timeout_ns': 500 * MS,
        'stop_timeout_ns': 2000 * MS, 'on_stale': 'hold', 'on_deadline_miss': 'publish', 'publish_trajectory': True,
        'trajectory_stamp_now': False, 'noise_seed': 0, 'fixed_noise': False}
    values.update(overrides)
    config = LoopConfig(**values)
    clock = FakeClock()
    injector = FaultInjectingRunner(runner, delay_ns=clock.advance if config.every_set else clock.block_for)
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
        frames=FrameStager([ImageDecoder(runner.staging.images[i]) for i in range(len(CAMERA_KEYS))]),
        instruction=instruction, hold_target=hold_target,
        runner=injector, sanitizer=ActionSanitizer(lower, upper, io.chunk_size), writer=writer,
        monitor=DeadlineMonitor(20.0, 10, error_consecutive=3) if config.every_set else ChunkMonitor(
            config.period_ns / MS, 100, error_consecutive=3, lead_ms=lead_ms, lead_margin_ms=lead_margin_ms,
            prior_latency_ms=prior_latency_ms),
        faults=faults, stages=StageRing(10), publish_status=lambda *values: status.append(Status(clock.t, *values)),
        ros_now_ns=clock.now_ns, info=lambda line: None, warn=warnings.append)
    loop = ControlLoop(config, parts, clock) if config.every_set else ChunkLoop(config, parts, clock)
    if isinstance(loop, ChunkLoop):
        clock.worker_running = lambda: loop.worker.running
    rig = Rig(loop, clock, injector, commands, trajectories, status, warnings, faults, instruction, hold_target)
    OPEN_RIGS.append(rig)
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
    assert [s.missed for s in rig.status] == [True, True, True, False] and monitor.consecutive_misses == 0
    assert monitor.max_consecutive_misses == 3 and monitor.level()[0] == 1  # WARN: misses in the window
    assert [s.compute_ns for s in rig.status] == [25 * MS] * 3 + [0]  # compute time on the fake clock
    late = {'publish': 3, 'drop': 0, 'hold': 0}[policy]
    assert rig.loop.commands_published == late + 1 and len(rig.trajectories) == late + 1
    assert rig.loop.holds_published == (3 if policy == 'hold' else 0)


def test_a_set_that_waited_for_the_cycle_before_reports_the_wait_as_part_of_its_compute_time(runner: Any) -> None:
    rig = make_rig(runner)
    rig.injector.inject('slow', 2, slow_ns=15 * MS)
    rig.put_set(0)
    rig.steps(1)  # taken at once
    rig.put_set(1)
    rig.clock.advance(10 * MS)  # handed over while the control thread was still busy elsewhere
    rig.steps(1)
    assert [s.queued_ns for s in rig.status] == [0, 10 * MS]
    assert [s.compute_ns for s in rig.status] == [15 * MS, 25 * MS]  # the wait counts: a miss
    assert [s.missed for s in rig.status] == [False, True]


# -- chunk mode: the next chunk inferred while the running one is published ---------------------
N_STEPS = 10  # actions per chunk in the chunk-mode tests: a chunk lasts 200 ms at 50 Hz
CHUNK_NS = N_STEPS * 20 * MS


def chunk_rig(runner: Any, delay_ns: int = 0, **overrides: Any) -> Rig:
    """Build a ChunkLoop whose every policy call takes ``delay_ns`` of fake time."""
    rig = make_rig(runner, every_set=False, n_action_steps=N_STEPS, **overrides)
    rig.injector.inject('slow', 1_000_000, slow_ns=delay_ns)
    return rig


def command_times(rig: Rig) -> list[int]:
    return [t for t, _ in rig.commands]


def the_chunk(runner: Any) -> np.ndarray:
    """Return the chunk [T, dof] the policy gives for frame 0 with noise draw 0 (every_set mode's trajectory)."""
    rig = make_rig(runner, fixed_noise=True)
    rig.put_set(0)
    rig.steps(1)
    return chunk_of(rig.trajectories[0][1])


def test_no_tick_is_missed_at_chunk_boundaries_for_inference_delays_up_to_80_percent_of_a_chunk(
        runner: Any) -> None:
    for fraction in (0.0, 0.4, 0.8):
        rig = chunk_rig(runner, delay_ns=int(fraction * CHUNK_NS))
        rig.run(3000 * MS, camera_ns=33 * MS, k=None)  # cameras at 30 Hz, new pixels each set
        times = command_times(rig)
        assert len(rig.trajectories) >= 10, fraction  # many chunk boundaries crossed
        assert np.diff(times).tolist() == [20 * MS] * (len(times) - 1), fraction  # one command on every tick
        monitor = rig.loop.monitor
        assert monitor.ticks_missed == 0 and monitor.chunks_late == 0 and rig.loop.holds_published == 0
        assert monitor.ticks == len(times) and monitor.level()[0] == 0
        assert not any(s.missed for s in rig.status) and all(s.slack_ns >= 0 for s in rig.status[1:])
        # Each chunk's commands are its trajectory's points, in order, until the next chunk takes over.
        switches = [t for t, _ in rig.trajectories] + [times[-1] + 1]
        for (t, trajectory), end in zip(rig.trajectories, switches[1:]):
            executed = [c for tc, c in rig.commands if t <= tc < end]
            assert 1 <= len(executed) <= N_STEPS
            np.testing.assert_array_equal(executed, chunk_of(trajectory)[:len(executed)])


def test_the_switch_lands_on_the_action_matching_the_time_since_the_observation(runner: Any) -> None:
    chunk = the_chunk(runner)  # every chunk below is this one: same frames, state and noise
    rig = chunk_rig(runner, delay_ns=70 * MS, fixed_noise=True)
    rig.run(2000 * MS, camera_ns=70 * MS)  # sets of varying age when a chunk is asked for
    assert len(rig.status) >= 5
    period = 20 * MS
    ends = [t for t, _ in rig.trajectories[1:]] + [rig.clock.t + 1]
    for status, (t, trajectory), end in zip(rig.status, rig.trajectories, ends):
        assert status.t == t  # switched (trajectory, first command, status) at one tick
        k = status.switch_index
        assert k == (t - status.t_recv) // period >= 70 * MS // period  # whole periods since its observation
        executed = [c for tc, c in rig.commands if t <= tc < end]
        np.testing.assert_array_equal(executed, chunk[k:k + len(executed)])
        np.testing.assert_array_equal(chunk_of(trajectory), np.vstack([chunk[k:], np.repeat(chunk[-1:], k, 0)]))
    assert len({s.switch_index for s in rig.status}) > 1  # the observation's age varies, and so does the index


def test_crossfade_blends_linearly_from_the_running_chunk_into_the_new_one(runner: Any) -> None:
    chunk = the_chunk(runner)
    rig = chunk_rig(runner, delay_ns=70 * MS, fixed_noise=True, crossfade_steps=3)
    rig.run(2000 * MS, camera_ns=33 * MS)
    period = 20 * MS
    commands = dict(rig.commands)
    assert len(rig.status) >= 5 and not rig.status[0].missed
    first = rig.status[0]  # replaced nothing: no blend
    np.testing.assert_array_equal(commands[first.t], chunk[first.switch_index])
    blended = 0
    for old, new in zip(rig.status, rig.status[1:]):
        ticks_since = (new.t - old.t) // period
        old_length = min(N_STEPS, len(chunk) - old.switch_index)
        for j in range(4):
            weight = (j + 1) / 4
            old_action = chunk[old.switch_index + min(ticks_since + j, old_length - 1)]
            new_action = chunk[new.switch_index + j]
            expected = old_action + weight * (new_action - old_action) if j < 3 else new_action
            np.testing.assert_allclose(commands[new.t + j * period], expected, rtol=0, atol=1e-12)
            blended += j < 3 and not np.allclose(expected, new_action)
    assert blended > 0  # the chunks' timelines differ, so the blend differs from the new chunk alone


def test_the_lead_defaults_to_the_measured_p99_latency_plus_the_margin(runner: Any) -> None:
    period = 20 * MS
    rig = chunk_rig(runner, delay_ns=100 * MS, prior_latency_ms=35.0, lead_margin_ms=10.0)
    assert rig.loop.monitor.lead_ns == 45 * MS  # before any chunk: the warm-up figure + margin
    rig.run(3000 * MS)  # a set every tick: each chunk's latency is the policy's 100 ms exactly
    assert rig.loop.monitor.lead_ns == 110 * MS
    assert rig.loop.monitor.stats('chunk_latency').p99 == 100.0
    # Asked for on the last tick leaving at least the lead: each comes [margin, margin + 1 tick) early.
    assert all(10 * MS <= s.slack_ns < 10 * MS + period for s in rig.status[2:]), [s.slack_ns for s in rig.status]
    fixed = chunk_rig(runner, delay_ns=100 * MS, lead_ms=150.0)
    fixed.run(3000 * MS)
    assert fixed.loop.monitor.lead_ns == 150 * MS
    assert all(50 * MS <= s.slack_ns < 50 * MS + period for s in fixed.status[1:])


@pytest.mark.parametrize('policy', ['publish', 'hold', 'drop'])
def test_a_late_chunk_is_reported_then_the_miss_and_stale_rules_apply(runner: Any, policy: str) -> None:
    period = 20 * MS
    rig = chunk_rig(runner, on_deadline_miss=policy, stale_timeout_ns=500 * MS, stop_timeout_ns=200 * MS)
    rig.run(1000 * MS)  # chunks on time; the lead is the 10 ms margin: asked for on each chunk's last tick
    assert rig.loop.monitor.ticks_missed == 0 and rig.loop.monitor.lead_ns == 10 * MS
    on_time = len(rig.status)
    rig.injector.inject('slow', 1, slow_ns=300 * MS)  # the next chunk takes longer than a whole chunk
    rig.run(1000 * MS)
    late = rig.status[on_time]
    assert late.missed and late.slack_ns == -280 * MS  # asked for 20 ms before the run-out, ready 300 ms later
    monitor = rig.loop.monitor
    assert monitor.chunks_late == 1 and monitor.level()[0] == 1  # WARN: a late chunk in the window
    assert 'chunks late' in monitor.level()[1]
    gap = [(t0, t1) for t0, t1 in zip(command_times(rig), command_times(rig)[1:]) if t1 - t0 > period]
    if policy == 'hold':  # a hold on each of the 14 ticks between the run-out and the late chunk
        assert gap == [] and rig.loop.holds_published == 14 and late.ticks_missed == 14
        assert not any(s.missed for s in rig.status[on_time + 1:])
    elif policy == 'publish':  # nothing on those 14 ticks; the late chunk is executed when it comes
        assert [t1 - t0 for t0, t1 in gap] == [15 * period] and late.ticks_missed == 14
        assert rig.trajectories[on_time][0] == late.t  # switched to at the tick it came
    else:  # dropped: not executed; the next chunk (asked for at once) comes one tick later
        assert [t1 - t0 for t0, t1 in gap] == [16 * period] and late.ticks_missed == 14
        assert all(t != late.t for t, _ in rig.trajectories) and monitor.ticks_missed == 15
        assert math.isnan(rig.status[on_time + 1].slack_ns)  # it replaced nothing that ran
    assert monitor.ticks_missed == (15 if policy == 'drop' else 14)
    # Then the cameras stop: stale after 500 ms, holds for 200 ms, then stop; nothing from a chunk after it.
    last_set = rig.loop.parts.mailbox.last_set_ns
    n_commands = len(rig.commands)
    rig.run(2000 * MS, camera_ns=0)
    assert rig.loop.stale and rig.loop.stopped and rig.faults.count('inputs_stale') == 1
    assert [t - last_set for t in rig.holds() if t - last_set > 500 * MS] == [k * period for k in range(26, 36)]
    assert all(t - last_set <= 500 * MS for t, c in rig.commands[n_commands:] if not np.allclose(c, STATE))


def test_an_inference_that_hangs_makes_the_inputs_stale_and_its_late_chunk_is_not_executed(runner: Any) -> None:
    rig = chunk_rig(runner, stale_timeout_ns=500 * MS, stop_timeout_ns=200 * MS)
    rig.run(600 * MS)
    n_chunks, t_inject = len(rig.status), rig.clock.t
    rig.injector.inject('slow', 1, slow_ns=3000 * MS)  # sets keep coming; the policy does not answer for 3 s
    rig.run(1500 * MS)
    assert rig.loop.stale and rig.loop.stopped and rig.faults.count('inputs_stale') == 1
    assert 'inference running' in dict(rig.faults.key_values())['bad_input.inputs_stale.last']
    assert rig.loop.holds_published == 10  # 200 ms of holds, one per tick, then stop
    rig.run(2500 * MS)  # the answer comes 3 s after its set: stale, not executed; the next set recovers
    assert len(rig.status) > n_chunks and not rig.loop.stale and rig.loop.commanding
    recovered = rig.status[n_chunks]  # the hung chunk got no status: the next one is from a set after the answer
    assert recovered.t_recv > t_inject + 2900 * MS and math.isnan(recovered.slack_ns) and not recovered.missed
    assert len(rig.trajectories) == len(rig.status) and rig.faults.count('chunk_expired') == 0


def test_a_set_left_waiting_when_the_inputs_stop_is_never_inferred_nor_executed(runner: Any) -> None:
    rig = make_rig(runner, every_set=False, n_action_steps=50, stale_timeout_ns=500 * MS, stop_timeout_ns=200 * MS)
    rig.run(300 * MS)  # the first chunk runs for a second; newer sets wait in the mailbox, unneeded
    assert len(rig.trajectories) == 1 and rig.injector.calls == 1
    last_set = rig.loop.parts.mailbox.last_set_ns
    rig.run(2000 * MS, camera_ns=0)  # the cameras stop: the last set waits on, older and older
    assert rig.injector.calls == 1 and len(rig.trajectories) == 1  # never inferred, nothing executed from it
    assert rig.loop.stale and rig.loop.stopped
    assert all(t - last_set <= 500 * MS for t, c in rig.commands if not np.allclose(c, STATE))


def test_a_chunk_whose_actions_are_all_past_is_not_executed(runner: Any) -> None:
    rig = chunk_rig(runner, stale_timeout_ns=5000 * MS)
    rig.run(600 * MS)
    rig.injector.inject('slow', 1, slow_ns=1500 * MS)  # ready 75 periods after its set: past its 50 actions
    rig.run(1600 * MS)
    expired = next(s for s in rig.status if s.switch_index >= 50)
    assert rig.faults.count('chunk_expired') == 1 and expired.missed and expired.slack_ns < 0
    assert all(t != expired.t for t, _ in rig.trajectories)  # not executed ...
    assert rig.status[-1].t > expired.t and not rig.status[-1].missed  # ... the next one is, at once
    assert rig.loop.commanding and rig.loop.monitor.ticks_missed > 0 and not rig.loop.stale


def test_a_new_instruction_drops_the_running_chunk_and_the_one_inferred_for_the_old(runner: Any) -> None:
    rig = chunk_rig(runner, delay_ns=60 * MS)
    rig.run(500 * MS)
    while not rig.loop.worker.running:  # an inference for the old instruction in flight
        rig.run(20 * MS)
    calls = rig.injector.calls
    rig.instruct('put it back')
    t_change = rig.clock.t
    rig.run(500 * MS)
    first_new = next(t for t, _ in rig.trajectories if t > t_change)
    assert rig.injector.calls >= calls + 1  # the one in flight finished, its chunk discarded ...
    assert not [t for t in command_times(rig) if t_change <= t < first_new]  # ... and nothing old published
    assert first_new - t_change >= 60 * MS  # the first new chunk comes from a set staged after the change
    assert rig.loop.commanding and len(rig.status) == len(rig.trajectories)
