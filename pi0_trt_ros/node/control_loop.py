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

"""The control thread's rules, free of rclpy, driven by an injected clock.

``ControlLoop.step()`` is one iteration of the control thread. Its rules:

* Modes. ``every_set`` (this class): each synchronized set taken from the ``Mailbox`` is staged,
  inferred, and its chunk's first action published. ``chunk`` (``ChunkLoop``, chunk_loop.py): the
  chunk's actions are published one per control tick while the next chunk is inferred on another
  thread; the rules below hold in both modes.
* Usable observations. A set is usable when inference returns and its chunk is not entirely
  NaN/inf (its frames were checked and decoded on arrival, and mostly written into staging then:
  ``FrameStager``). A set that fails is counted
  and gives no command; while sets keep failing, time since the last usable one runs on exactly
  as if no set came, so a camera whose frames never decode is a stopped camera.
* Stale → hold → stop. ``stale_timeout_ns`` after the last usable observation the inputs are stale:
  with ``on_stale='hold'`` the loop publishes the hold position (newest accepted joint state)
  once per control period until ``stop_timeout_ns`` more have passed, then stops commanding
  (``on_stale='stop'`` stops at once); a usable observation resumes commanding.
* Deadline. Compute time runs from the set's hand-over (``t_sync``) to publishing; a cycle over
  the budget follows ``on_deadline_miss``: ``publish`` anyway, ``drop`` the commands, or ``hold``.

Every command goes through ``CommandWriter`` (finite, clamped). The clock is two functions:
``now_ns()`` (monotonic ns) and ``sleep_ns(ns)`` (returns True when the loop must stop); the
mailbox's wait goes through the same clock, so a test drives every rule with a fake clock.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from pi0_trt_ros.node.actions import ActionSanitizer, CommandWriter
from pi0_trt_ros.node.chunk_monitor import ChunkMonitor
from pi0_trt_ros.node.deadline import DeadlineMonitor
from pi0_trt_ros.node.faults import BadInput, FaultCounters
from pi0_trt_ros.node.frame_stager import FrameStager
from pi0_trt_ros.node.instruction import InstructionBox

STAGES = ('callbacks', 'recv', 'sync', 'start', 'staged', 'inferred', 'published', 'done')


class LoopClock(Protocol):
    """Monotonic time for the control loop: the real one, or a test's fake one."""

    def now_ns(self) -> int:
        """Return monotonic nanoseconds."""

    def sleep_ns(self, ns: int) -> bool:
        """Sleep up to ``ns``; return True when the loop is asked to stop."""

    def wait(self, condition: threading.Condition, ns: int) -> None:
        """Wait on ``condition`` (held) for up to ``ns``."""


class MonotonicClock:
    """``time.monotonic_ns`` with sleeps that end early when ``stop`` is set."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_ns(self, ns: int) -> bool:
        return self._stop.wait(ns / 1e9)

    def wait(self, condition: threading.Condition, ns: int) -> None:
        condition.wait(ns / 1e9)


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The control loop's rules, in the units it runs in."""

    every_set: bool
    n_action_steps: int  # chunk mode: actions executed from each chunk, from its switch on
    period_ns: int  # one control tick: 1 / control_rate_hz
    stale_timeout_ns: int
    stop_timeout_ns: int
    on_stale: str  # 'hold' or 'stop'
    on_deadline_miss: str  # 'publish', 'drop' or 'hold'
    publish_trajectory: bool
    trajectory_stamp_now: bool  # stamp trajectories with the ROS time (else 0: "start when received")
    noise_seed: int  # -1: OS entropy
    fixed_noise: bool
    crossfade_steps: int = 0  # chunk mode: ticks over which a new chunk is blended in (0: switch at once)


class SetSlot:
    """One synchronized observation handed from the executor thread to the control thread."""

    def __init__(self, dof: int) -> None:
        self.images: tuple[Any, ...] = ()  # prepared frames (ImageDecoder.prepare), in configured camera order
        self.state = np.zeros(dof, np.float32)  # [dof] joint positions matched to the set
        self.newest_stamp_ns = 0  # newest header stamp among the set (ROS time, ns)
        self.joint_stamp_ns = 0  # header stamp of the joint sample matched to it (ROS time, ns)
        self.t_recv = 0  # monotonic ns: the last message's callback started
        self.t_sync = 0  # monotonic ns: handed over (the deadline clock starts here)
        self.callbacks_ns = 0  # summed callback time since the previous set


class Mailbox:
    """A one-slot hand-over: the newest set waits, an older one not yet taken is superseded."""

    def __init__(self, dof: int, clock: LoopClock) -> None:
        self._clock = clock
        self._cv = threading.Condition()
        self._pending, self._working = SetSlot(dof), SetSlot(dof)
        self._ready = False
        self._closed = False
        self.last_set_ns = 0  # monotonic ns of the last set handed over (0: none yet)
        self.superseded = 0  # sets replaced before the control thread took them

    def put(self, images: Sequence[Any], state: np.ndarray, newest_stamp_ns: int, joint_stamp_ns: int, t_recv: int,
            callbacks_ns: int) -> None:
        """Hand over a set (executor thread); the deadline clock starts now."""
        with self._cv:
            if self._ready:
                self.superseded += 1
            slot = self._pending
            slot.images = tuple(images)
            np.copyto(slot.state, state)
            slot.newest_stamp_ns = newest_stamp_ns
            slot.joint_stamp_ns = joint_stamp_ns
            slot.t_recv = t_recv
            self._ready = True
            slot.t_sync = self.last_set_ns = self._clock.now_ns()
            slot.callbacks_ns = callbacks_ns + slot.t_sync - t_recv
            self._cv.notify()

    def take(self, timeout_ns: int) -> SetSlot | None:
        """Wait up to ``timeout_ns`` for a set; return it (owned by the caller until the next take) or None."""
        with self._cv:
            if not self._ready and not self._closed:
                self._clock.wait(self._cv, timeout_ns)
            if not self._ready or self._closed:
                return None
            self._pending, self._working = self._working, self._pending
            self._ready = False
            return self._working

    def close(self) -> None:
        """Wake a waiting ``take`` for shutdown; later takes return None."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()


class HoldTarget:
    """The newest accepted joint positions (written by the joint callback): what a hold commands."""

    def __init__(self, dof: int) -> None:
        self._positions = np.zeros(dof, np.float64)  # [dof] robot units
        self._lock = threading.Lock()
        self.valid = False  # no joint state accepted yet: nothing to hold

    @property
    def dof(self) -> int:
        return self._positions.shape[0]

    def update(self, positions: np.ndarray) -> None:
        with self._lock:
            np.copyto(self._positions, positions)
            self.valid = True

    def copy_into(self, out: np.ndarray) -> None:
        with self._lock:
            np.copyto(out, self._positions)


class StageRing:
    """Monotonic-ns timestamps of each cycle's stages, in a preallocated ring (for benchmarks).

    Per cycle: ``callbacks`` is the summed duration of every camera/joint callback since the
    previous set (receive cost, ns); the others are monotonic ns when the set's last message
    entered its callback (``recv``), the set was handed to the control thread (``sync``), the
    control thread took it (``start``), staging was done (``staged``), ``infer()`` returned
    (``inferred``), commands were published (``published``) and the status too (``done``).
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self._ring = np.zeros((window, len(STAGES)), np.int64)  # [window, stage]
        self.count = 0

    def record(self, *stamps: int) -> None:
        """Store one cycle's values, in ``STAGES`` order."""
        row = self._ring[self.count % self.window]
        for i, value in enumerate(stamps):
            row[i] = value
        self.count += 1

    def snapshot(self) -> np.ndarray:
        """Return a copy of the filled rows, oldest first: int64 [n, len(STAGES)]."""
        n = min(self.count, self.window)
        start = self.count % self.window if self.count > self.window else 0
        return np.roll(self._ring, -start, axis=0)[:n].copy()


@dataclasses.dataclass
class PolicyRun:
    """One set through staging, the policy and the sanitizer: why it is unusable ('' if usable), when steps ended."""

    why: str = ''
    t_start: int = 0  # monotonic ns: staging began
    t_staged: int = 0
    t_inferred: int = 0
    t_ready: int = 0  # the sanitized chunk is written
    instruction_version: int = 0  # the instruction staged with it


@dataclasses.dataclass
class LoopParts:
    """What the loop works with: inputs, the policy, outputs, and where it reports."""

    mailbox: Mailbox
    frames: FrameStager  # the cameras' staging images: written on arrival, or here at staging
    instruction: InstructionBox
    hold_target: HoldTarget
    runner: Any  # a Runner: .staging and .infer()
    sanitizer: ActionSanitizer
    writer: CommandWriter
    monitor: DeadlineMonitor | ChunkMonitor  # every_set: DeadlineMonitor; chunk: ChunkMonitor
    faults: FaultCounters
    stages: StageRing
    # (missed, compute, obs age, inference ns; set; chunk slack ns or NaN, switch index, ticks missed or NaN;
    # queued ns: hand-over -> staging began)
    publish_status: Callable[[bool, int, int, int, SetSlot, float, int, float, int], object]
    ros_now_ns: Callable[[], int]  # node clock (ROS time), for observation age and trajectory stamps
    info: Callable[[str], object]  # throttled by the caller where input-driven
    warn: Callable[[str], object]
    after_cycle: Callable[[int], object] = lambda cycles: None  # e.g. collect garbage in idle time


class ControlLoop:
    """The control thread's rules (module docstring); ``step()`` runs one iteration (``every_set`` mode)."""

    def __init__(self, config: LoopConfig, parts: LoopParts, clock: LoopClock) -> None:
        self.config = config
        self.parts = parts
        self.clock = clock
        dof = parts.hold_target.dof
        staging = parts.runner.staging
        self._rng = np.random.default_rng(None if config.noise_seed < 0 else config.noise_seed)
        if config.fixed_noise:
            self._rng.standard_normal(dtype=np.float32, out=staging.noise)
        self.chunk_size = staging.noise.shape[0]
        self._chunk = np.zeros((self.chunk_size, dof), np.float64)  # [T, dof] sanitized chunk
        self._action = np.zeros(dof, np.float64)  # [dof] action being published
        self._hold = np.zeros(dof, np.float64)  # [dof] snapshot of the hold target
        self._run = PolicyRun()
        self.cycles = 0  # inferences that reached the publish decision
        self.commands_published = 0  # policy commands
        self.holds_published = 0
        self.stale = False
        self.stopped = False
        self.failing = ''  # why the newest sets were not usable ('' when the last one was)
        self._last_usable_ns = 0  # t_sync of the last usable set (or of the first failing one)
        self._next_hold = 0
        if config.every_set != isinstance(parts.monitor, DeadlineMonitor):
            raise ValueError('every_set mode reports to a DeadlineMonitor, chunk mode to a ChunkMonitor')

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """Return the loop's own threads, besides the one that calls ``step``: none in this mode."""
        return ()

    def close(self) -> None:
        """Release what the loop holds, after its last ``step``: nothing in this mode (chunk mode: its thread)."""

    # -- one iteration -------------------------------------------------------------------------
    def step(self) -> None:
        """Take and run a set (waiting up to one control period for it); then apply the stale rule."""
        slot = self.parts.mailbox.take(self.config.period_ns)
        if slot is not None:
            self._cycle(slot)
        self._apply_stale_rule()

    def stale_for_ns(self, now: int) -> int:
        """Time since the last usable observation beyond ``stale_timeout_ns`` (<= 0: not stale)."""
        since = self._last_usable_ns if self.failing else max(self._last_usable_ns, self.parts.mailbox.last_set_ns)
        return 0 if since == 0 else now - since - self.config.stale_timeout_ns

    def _stale_reason(self) -> str:
        return self.failing or 'no synchronized set'

    def _hold_due(self, now: int) -> bool:
        """Whether a stale hold is due now: once per control period (the rule runs after every set and wait)."""
        if now < self._next_hold:
            return False
        self._next_hold = now + self.config.period_ns
        return True

    def _apply_stale_rule(self) -> None:
        now = self.clock.now_ns()
        beyond = self.stale_for_ns(now)
        if beyond <= 0:
            return
        stale_ms = (beyond + self.config.stale_timeout_ns) / 1e6
        if not self.stale:
            self.stale = True
            self.parts.faults.add('inputs', BadInput('inputs_stale', f'no usable observation for {stale_ms:.0f} ms '
                                                     f'({self._stale_reason()}); on_stale={self.config.on_stale}'))
        if self.config.on_stale == 'hold' and beyond <= self.config.stop_timeout_ns:
            if self._hold_due(now):
                self._publish_hold()
        elif not self.stopped:
            self.stopped = True
            self.parts.warn(f'inputs stale for {stale_ms:.0f} ms: stopped commanding until a usable observation '
                            'arrives')

    # -- one inference cycle -------------------------------------------------------------------
    def _cycle(self, slot: SetSlot) -> None:
        """Stage one observation, infer, publish per the deadline policy, record."""
        parts, clock, run = self.parts, self.clock, self._run
        self._run_policy(slot, run, self._chunk, self._hold)
        if run.why:
            return self._unusable(slot, run.why)
        self._usable(slot)
        policy = 'publish'
        if parts.monitor.missed(clock.now_ns() - slot.t_sync):
            policy = self.config.on_deadline_miss
        if policy == 'publish':
            self._publish_command(self._chunk[0])
            if self.config.publish_trajectory:
                self._publish_trajectory(self._chunk)
        elif policy == 'hold':
            self._publish_hold()
        t_published = clock.now_ns()
        compute_ns, inference_ns = t_published - slot.t_sync, run.t_inferred - run.t_staged
        obs_age_ns = parts.ros_now_ns() - slot.newest_stamp_ns
        missed = parts.monitor.record(compute_ns, obs_age_ns, inference_ns)
        parts.publish_status(missed, compute_ns, obs_age_ns, inference_ns, slot, math.nan, 0, math.nan,
                             run.t_start - slot.t_sync)
        self._record_stages(slot, run, t_published)
        self.cycles += 1
        slot.images = ()  # release the frames
        parts.after_cycle(self.cycles)

    def _run_policy(self, slot: SetSlot, run: PolicyRun, chunk: np.ndarray, hold: np.ndarray) -> None:
        """Stage ``slot``, infer, sanitize into ``chunk`` ([T, dof]; ``hold`` [dof] is scratch); fill ``run``.

        Touches the runner's staging buffers (claimed from the sensor thread until ``infer()``
        returned), the noise generator and ``chunk``/``hold``, never the loop's own state: chunk
        mode runs it on its inference thread. Failures are counted here and named in ``run.why``;
        the caller marks the set unusable.
        """
        parts, clock = self.parts, self.clock
        run.t_start = clock.now_ns()
        with parts.frames.claim():
            self._stage(slot)
            run.why = ''
            run.instruction_version = parts.instruction.staged_version
            run.t_staged = clock.now_ns()
            try:
                actions = parts.runner.infer()  # [T, action_dim] float32, reused buffer
            except Exception as err:
                self._policy_fault('inference_error', f'{type(err).__name__}: {err}; set not used')
                run.why = f'policy: inference failed ({type(err).__name__})'
                return
        run.t_inferred = clock.now_ns()
        parts.hold_target.copy_into(hold)
        replaced = parts.sanitizer.sanitize_into(actions, hold, chunk)
        if replaced:
            self._policy_fault('action_nonfinite', f'{replaced} of {len(actions)} actions had NaN/inf: replaced by '
                               'the hold position', used=replaced < len(actions))
            if replaced == len(actions) or not parts.hold_target.valid:
                run.why = 'policy: non-finite actions'
        run.t_ready = clock.now_ns()

    def _stage(self, slot: SetSlot) -> None:
        """Write the set into the runner's staging buffers (the frames not already written on arrival)."""
        parts = self.parts
        staging = parts.runner.staging
        parts.frames.stage(slot.images)
        np.copyto(staging.state, slot.state)
        parts.instruction.stage_if_changed(staging.tokens, staging.token_mask)
        if not self.config.fixed_noise:
            self._rng.standard_normal(dtype=np.float32, out=staging.noise)

    def _usable(self, slot: SetSlot) -> None:
        self._last_usable_ns = slot.t_sync
        self.failing = ''
        if self.stale:
            self.stale = self.stopped = False
            self.parts.info('inputs recovered: commanding again')

    def _unusable(self, slot: SetSlot, why: str) -> None:
        if not self.failing and self._last_usable_ns == 0:
            self._last_usable_ns = slot.t_sync  # never usable: the stale clock starts at the first failure
        self.failing = why
        slot.images = ()

    def _policy_fault(self, counter: str, detail: str, used: bool = False) -> None:
        """Count a fault of the policy's output (source 'policy') in the diagnostics."""
        self.parts.faults.add('policy', BadInput(counter, detail, used=used))

    def _record_stages(self, slot: SetSlot, run: PolicyRun, t_published: int) -> None:
        self.parts.stages.record(slot.callbacks_ns, slot.t_recv, slot.t_sync, run.t_start, run.t_staged,
                                 run.t_inferred, t_published, self.clock.now_ns())

    # -- outputs -------------------------------------------------------------------------------
    def _publish_command(self, action: np.ndarray) -> None:
        if self.parts.writer.command(action):
            self.commands_published += 1
        else:
            self._policy_fault('command_refused', 'command with NaN/inf not published')

    def _publish_trajectory(self, chunk: np.ndarray) -> None:
        self.parts.writer.trajectory(chunk, self.parts.ros_now_ns() if self.config.trajectory_stamp_now else 0)

    def _publish_hold(self) -> None:
        if not self.parts.hold_target.valid:
            return
        self.parts.hold_target.copy_into(self._hold)
        if self.parts.writer.command(self._hold):
            self.holds_published += 1
        else:
            self._policy_fault('command_refused', 'hold with NaN/inf not published')
