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

"""Chunk mode without stalls: the next chunk is inferred while the running one is published.

Waiting for the running chunk to end before inferring the next one would stop the arm for an
inference at every chunk boundary. Here the control thread publishes one action per control tick
(``period_ns`` apart, on a fixed grid) and never waits for the policy; staging, inference and
sanitizing run on an ``InferenceWorker`` thread. The rules, per control tick:

* Ask early. When the running chunk would run out less than the lead after the next tick
  (``ChunkMonitor.lead_ns``: ``chunk_lead_ms``, or the measured p99 latency plus a margin), the
  next chunk is wanted; the newest set is taken from the mailbox as soon as one is there (the
  wait for it ends at the next tick, so ticks go on) and handed to the worker. With no chunk
  running (start-up, after stale inputs or a new instruction) a chunk is always wanted.
* Switch by elapsed time. A chunk the worker finished is switched to at the next tick, at the
  action matching the whole control periods elapsed since its observation (the set's receive
  time, monotonic), optionally blended in over ``crossfade_steps`` ticks (chunk_plan.py). It then
  contributes ``n_action_steps`` actions; its JointTrajectory (one point per tick from the switch
  on) is published at the switch.
* Deadlines (``ChunkMonitor``). Every tick while a chunk is executed must publish its command
  within the tick; every new chunk must be ready before the running one runs out. A chunk that
  comes later follows ``on_deadline_miss``: ``publish`` switches to it when it comes (the ticks in
  between publish nothing: the controller keeps the last command), ``hold`` publishes the hold
  position on those ticks and then switches, ``drop`` discards it and asks for the next one at
  once, which is executed whenever it comes (the ticks until then stay missed). A chunk whose
  every action is already in the past (elapsed >= chunk size) is never executed
  (``chunk_expired``).
* Everything else as in ``every_set`` mode (control_loop.py): unusable sets, stale → hold → stop,
  and besides, an inference still running ``stale_timeout_ns`` after it started makes the inputs
  stale (a hung policy is a failing one), and a set older than ``stale_timeout_ns`` when it is
  taken or when its chunk is ready is not usable (sets wait in the mailbox while no chunk is
  wanted; when inputs stop, the last one must not be executed long after). A new instruction
  drops the running chunk at once, and a chunk inferred for the old instruction is discarded.

``~/status`` gets one record per chunk switched to (or discarded for being late or expired):
``deadline_missed`` says it came late, ``compute_ms`` runs from its set's hand-over to the chunk
ready, and ``chunk_slack_ms``, ``switch_index``, ``ticks_missed`` say by how much, where it
started, and how many ticks went without their command so far.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from pi0_trt_ros.node.chunk_monitor import ChunkMonitor
from pi0_trt_ros.node.chunk_plan import ChunkPlan, switch_index
from pi0_trt_ros.node.control_loop import ControlLoop, LoopClock, LoopConfig, LoopParts, SetSlot
from pi0_trt_ros.node.inference_worker import InferenceWorker


class ChunkLoop(ControlLoop):
    """The control thread's rules in ``chunk`` mode (module docstring); ``step()`` runs one iteration."""

    def __init__(self, config: LoopConfig, parts: LoopParts, clock: LoopClock) -> None:
        if config.every_set or not isinstance(parts.monitor, ChunkMonitor):
            raise ValueError('ChunkLoop runs chunk mode (every_set False) and reports to a ChunkMonitor')
        super().__init__(config, parts, clock)
        self.monitor: ChunkMonitor = parts.monitor
        dof = parts.hold_target.dof
        self._plans = [ChunkPlan(config.n_action_steps, self.chunk_size, dof, config.crossfade_steps)
                       for _ in range(2)]  # the running plan and the next one, swapped at each switch
        self.plan = self._plans[0]
        self._worker_chunk = np.zeros((self.chunk_size, dof), np.float64)  # [T, dof] written by the worker
        self._worker_hold = np.zeros(dof, np.float64)  # [dof] the worker's hold snapshot
        self.worker: InferenceWorker[SetSlot, SetSlot] = InferenceWorker(self._infer_chunk)
        self.commanding = False  # a chunk is executed, or ran out (or came late and was dropped) and one is awaited
        self._next_tick = clock.now_ns()  # due time of the next control tick (monotonic ns)
        self._runs_out_ns: int | None = None  # due time of the first tick the running plan has no action for
        self._version = 0  # instruction version of the running chunk
        self._wanted_ns = 0  # when the next chunk was first wanted (0: not wanted yet)
        self._latency_from_ns = 0  # the running job's latency start: wanted, or its set's hand-over if later
        self._inflight_ns = 0  # when the running job started (0: none)
        self._switched: SetSlot | None = None  # set of the chunk switched to at this tick, reported after publishing
        self._switch_slack_ns = math.nan

    # -- one iteration -------------------------------------------------------------------------
    def step(self) -> None:
        """Run the due control tick; else hand a set to the worker if a chunk is wanted; else sleep to the tick."""
        if self.commanding and self.parts.instruction.version != self._version:
            self._stop_commanding()  # a new task: nothing more from the old chunk
        now = self.clock.now_ns()
        if now >= self._next_tick:
            self._tick(now)
            self._apply_stale_rule()
            return
        if self._wants_chunk():
            self._wanted_ns = self._wanted_ns or now
            slot = self.parts.mailbox.take(self._next_tick - now)  # returns early when a set comes
            if slot is None:
                return
            if self.clock.now_ns() - slot.t_sync > self.config.stale_timeout_ns:
                slot.images = ()  # waited in the mailbox past stale_timeout (inputs stopped): not worth inferring
                return
            self._start(slot)
            return
        self.clock.sleep_ns(self._next_tick - now)

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """Return the loop's own threads: the inference thread."""
        return (self.worker.thread,)

    def close(self) -> None:
        """Let a running inference finish and end the worker thread (before the runner is released)."""
        self.worker.close()
        super().close()

    def stale_for_ns(self, now: int) -> int:
        """As in every_set mode, and an inference running longer than ``stale_timeout_ns`` is stale too."""
        beyond = super().stale_for_ns(now)
        if self._inflight_ns:
            beyond = max(beyond, now - self._inflight_ns - self.config.stale_timeout_ns)
        return beyond

    def _stale_reason(self) -> str:
        if self._inflight_ns and self.clock.now_ns() - self._inflight_ns > self.config.stale_timeout_ns:
            return f'policy: inference running for {(self.clock.now_ns() - self._inflight_ns) / 1e6:.0f} ms'
        return super()._stale_reason()

    def _hold_due(self, now: int) -> bool:
        """Return True: the stale rule runs once per control tick here, so holds follow the tick grid."""
        return True

    def _wants_chunk(self) -> bool:
        if self.worker.busy:
            return False
        return self._runs_out_ns is None or self._runs_out_ns - self._next_tick < self.monitor.lead_ns

    # -- the control tick ----------------------------------------------------------------------
    def _tick(self, now: int) -> None:
        period = self.config.period_ns
        late_by = (now - self._next_tick) // period  # whole ticks the wake-up came late: missed
        due = self._next_tick + late_by * period
        self._next_tick = due + period
        if self.commanding and late_by:
            self.plan.skip(late_by)
            self.monitor.record_missed_ticks(late_by)
        self._collect(due)
        if self.stale_for_ns(now) > 0:
            self._stop_commanding()  # the stale rule (hold, then stop) takes over
        elif self.plan.pop_into(self._action):
            self._publish_command(self._action)
            self.monitor.record_tick(self.clock.now_ns() - due)
        elif self.commanding:  # the running chunk ran out before the next one came
            self.monitor.record_missed_ticks(1)
            if self.config.on_deadline_miss == 'hold':
                self._publish_hold()
        if self._switched is not None:
            self._report_switch(self._switched)
        if self.commanding:
            self.parts.after_cycle(self.monitor.ticks)  # idle time until the next tick: counted in ticks here

    def _start(self, slot: SetSlot) -> None:
        self._inflight_ns = self.clock.now_ns()
        self._latency_from_ns = max(self._wanted_ns, slot.t_sync)
        self._wanted_ns = 0
        self.worker.start(slot)

    def _infer_chunk(self, slot: SetSlot) -> SetSlot:
        """Stage, infer and sanitize into the worker's chunk: the worker's job, on the inference thread."""
        self._run_policy(slot, self._run, self._worker_chunk, self._worker_hold)
        return slot

    def _collect(self, due: int) -> None:
        """Take the worker's finished chunk, if any, and switch to it at the tick ``due`` (or say why not)."""
        slot = self.worker.poll()
        if slot is None:
            return
        run = self._run
        self._inflight_ns = 0
        age_ns = due - slot.t_sync
        if not run.why and age_ns > self.config.stale_timeout_ns:
            run.why = f'policy: chunk ready {age_ns / 1e6:.0f} ms after its set, past stale_timeout'
        if run.why:
            return self._unusable(slot, run.why)
        self._usable(slot)
        if run.instruction_version != self.parts.instruction.version:
            slot.images = ()  # inferred for an instruction since replaced
            return
        period = self.config.period_ns
        start = switch_index(due, slot.t_recv, period)
        slack = math.nan if self._runs_out_ns is None else float(self._runs_out_ns - run.t_ready)
        self._switch_slack_ns = slack
        expired = start >= self.chunk_size
        if expired:
            self._policy_fault('chunk_expired', f'chunk ready {start} control periods after its observation, past its '
                               f'{self.chunk_size} actions')
        if expired or (slack < 0 and self.config.on_deadline_miss == 'drop'):
            self._runs_out_ns = None  # not executed: the next chunk replaces nothing that runs
            self._report_switch(slot, start)
            return
        previous = self.plan if self.commanding and self.config.crossfade_steps else None
        self.plan = self._plans[1] if self.plan is self._plans[0] else self._plans[0]
        self.plan.load(self._worker_chunk, start, previous)
        self.commanding, self._version = True, run.instruction_version
        self._runs_out_ns = due + self.plan.length * period
        if self.config.publish_trajectory:
            self._publish_trajectory(self.plan.rows)
        self._switched = slot  # reported once its first command is out

    def _report_switch(self, slot: SetSlot, start: int | None = None) -> None:
        """Record and publish the status of the chunk switched to (or discarded) at this tick."""
        parts, run = self.parts, self._run
        t_published = self.clock.now_ns()
        compute_ns, inference_ns = run.t_ready - slot.t_sync, run.t_inferred - run.t_staged
        obs_age_ns = parts.ros_now_ns() - slot.newest_stamp_ns
        late = self.monitor.record_chunk(run.t_ready - self._latency_from_ns, self._switch_slack_ns, inference_ns,
                                         obs_age_ns)
        index = self.plan.start_index if start is None else start
        parts.publish_status(late or start is not None, compute_ns, obs_age_ns, inference_ns, slot,
                             self._switch_slack_ns, index, float(self.monitor.ticks_missed), run.t_start - slot.t_sync)
        self._record_stages(slot, run, t_published)
        self.cycles += 1
        self._switched = None
        slot.images = ()  # release the frames

    def _stop_commanding(self) -> None:
        self.commanding = False
        self._runs_out_ns = None
        self.plan.clear()
