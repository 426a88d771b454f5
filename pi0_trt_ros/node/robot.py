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

"""One robot wired to ROS: its inputs, safety state, control thread and outputs on a node.

The single-robot node (``control_node.py``) has one ``RobotControl``; the fleet node
(``fleet_node.py``) has one per robot, each on a node of its own in the robot's namespace. A
robot gets everything the single-robot node's docstring describes: its QoS profiles and
subscriptions (three cameras, joint_states, the instruction), its observation pipeline and
synchronizer, instruction, hold target, deadline monitor, mailbox and control thread (every_set
or chunk mode), and its publishers (commands, trajectory, ``~/status``, ``/diagnostics``).

What it is given decides where inference runs: ``policy`` has the runner contract the control
loop uses (``io``, ``staging``, ``infer()``): the runner itself for one robot, a ``Seat`` of the
fleet's batcher for a robot of a fleet. Nothing here is shared between two ``RobotControl``s but
the tokenizer (used by the executor thread that serves the robot's instruction subscription) and
the ``after_cycle`` hook (process-wide garbage collection in idle time).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from pi0_trt_ros.node.actions import ActionSanitizer, CommandWriter, Float64ArrayMessage
from pi0_trt_ros.node.chunk_loop import ChunkLoop
from pi0_trt_ros.node.chunk_monitor import ChunkMonitor, warm_up_latency_ms
from pi0_trt_ros.node.control_loop import (ControlLoop, HoldTarget, LoopConfig, LoopParts, Mailbox, MonotonicClock,
                                           SetSlot, StageRing)
from pi0_trt_ros.node.deadline import DeadlineMonitor, STATUS_FIELDS
from pi0_trt_ros.node.diagnostics import diagnostic_status, input_key_values, InputLiveness, inputs_level
from pi0_trt_ros.node.faults import FaultCounters
from pi0_trt_ros.node.frame_stager import FrameStager
from pi0_trt_ros.node.images import ImageDecoder
from pi0_trt_ros.node.instruction import InstructionBox
from pi0_trt_ros.node.observation import ObservationPipeline
from pi0_trt_ros.node.params import ControlParams
from pi0_trt_ros.node.sensor_input import SensorInputs


class QosProfiles:
    """The QoS of a robot's topics, from its parameters."""

    def __init__(self, p: ControlParams) -> None:
        self.sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=p.sensor_qos_depth,
                                 durability=DurabilityPolicy.VOLATILE,
                                 reliability=ReliabilityPolicy.RELIABLE if p.sensor_qos_reliability == 'reliable'
                                 else ReliabilityPolicy.BEST_EFFORT)
        self.joint = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(10, p.sensor_qos_depth),
                                durability=DurabilityPolicy.VOLATILE, reliability=self.sensor.reliability)
        # `ros2 topic pub` (default profile) is reliable + volatile and, with --once, waits for one
        # matching subscription before publishing. Volatile: a message sent before this node's side
        # of discovery saw the publisher is not delivered later; publishing the same text again is
        # harmless (an unchanged instruction changes nothing), and the node logs the instructions it takes.
        self.reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, durability=DurabilityPolicy.VOLATILE,
                                   reliability=ReliabilityPolicy.RELIABLE)


def make_monitor(p: ControlParams, warmup_ms: Sequence[float]) -> DeadlineMonitor | ChunkMonitor:
    """Return the deadline monitor of the mode: every_set cycles against ``deadline_ms``; chunk mode ticks, chunks.

    ``warmup_ms``: the policy calls timed at start-up, chunk mode's first estimate of its latency.
    """
    if p.inference_mode == 'every_set':
        return DeadlineMonitor(p.deadline_ms, p.deadline_window, error_consecutive=p.deadline_error_consecutive)
    return ChunkMonitor(1e3 / p.control_rate_hz, p.deadline_window, error_consecutive=p.deadline_error_consecutive,
                        lead_ms=p.chunk_lead_ms, lead_margin_ms=p.chunk_lead_margin_ms,
                        prior_latency_ms=warm_up_latency_ms(warmup_ms))


def loop_config(p: ControlParams, n_action_steps: int) -> LoopConfig:
    """Return the control loop's rules from the parameters, in the units it runs in."""
    return LoopConfig(every_set=p.inference_mode == 'every_set', n_action_steps=n_action_steps,
                      period_ns=int(round(1e9 / p.control_rate_hz)),
                      stale_timeout_ns=int(round(p.stale_timeout_ms * 1e6)),
                      stop_timeout_ns=int(round(p.stop_timeout_ms * 1e6)), on_stale=p.on_stale,
                      on_deadline_miss=p.on_deadline_miss, publish_trajectory=p.publish_trajectory,
                      trajectory_stamp_now=p.trajectory_stamp_now, noise_seed=p.noise_seed,
                      fixed_noise=p.fixed_noise, crossfade_steps=p.chunk_crossfade_steps)


class RobotControl:
    """Runs the policy for one robot on ``node``: inputs in, commands out (module docstring).

    Threading as in the single-robot node: the camera and joint-state subscriptions on a thread of
    their own (``sensor_input.py``), the instruction in the executor that spins ``node``; staging,
    inference and publishing in this robot's control thread (``start``).
    """

    def __init__(self, node: Node, p: ControlParams, policy: Any, tokenizer: Any, warmup_ms: Sequence[float],
                 after_cycle: Callable[[int], object]) -> None:
        self.node = node
        self.p = p
        log = node.get_logger()
        io = policy.io
        staging = policy.staging
        dof = len(p.joint_names)
        self.n_action_steps = p.n_action_steps or io.n_action_steps
        self.faults = FaultCounters(log.warning, log.info, p.log_throttle_sec)
        self.monitor = make_monitor(p, warmup_ms)
        self.stages = StageRing(p.deadline_window)
        self.instruction = InstructionBox(tokenizer, io.token_len, p.max_instruction_chars, self.faults, log.info,
                                          p.log_throttle_sec)
        self.hold_target = HoldTarget(dof)
        # Inputs: camera i (configured order) feeds staging image io.camera_keys.index(key).
        decoders = [ImageDecoder(staging.images[io.camera_keys.index(c.key)], c.transport, p.resize_mismatched)
                    for c in p.cameras]
        self.frames = FrameStager(decoders)  # frames into staging on arrival while the policy is not reading
        self.observations = ObservationPipeline.from_params(p, decoders, self.faults, self._hand_over,
                                                            self.hold_target.update, self.frames.offer)
        self.liveness = InputLiveness(self.observations.sources, self.observations.joint_input, p.stale_timeout_ms,
                                      self.faults, log.info)
        self._stop = threading.Event()
        clock = MonotonicClock(self._stop)
        self.mailbox = Mailbox(dof, clock)
        self._status = Float64ArrayMessage(len(STATUS_FIELDS), label=','.join(STATUS_FIELDS))
        self._status_values = np.zeros(len(STATUS_FIELDS), np.float64)  # STATUS_FIELDS order
        self.hardware_id = p.hardware_id or f'{p.backend}:{p.engine_dir or p.checkpoint}'
        throttle = p.log_throttle_sec

        qos = QosProfiles(p)
        self.command_pub = node.create_publisher(Float64MultiArray, p.commands_topic, qos.reliable)
        self.trajectory_pub = node.create_publisher(JointTrajectory, p.trajectory_topic, qos.reliable)
        self.status_pub = node.create_publisher(Float64MultiArray, '~/status', qos.reliable)
        self.diagnostics_pub = node.create_publisher(DiagnosticArray, '/diagnostics', qos.reliable)
        writer = CommandWriter(p.joint_lower_limits, p.joint_upper_limits, p.joint_names, io.chunk_size,
                               p.control_rate_hz, self.command_pub.publish, self.trajectory_pub.publish,
                               velocities=p.trajectory_velocities)
        config = loop_config(p, self.n_action_steps)
        self._thread: threading.Thread | None = None
        # A failure from here on closes what was created (a topic name rclpy refuses, say): the
        # publishers and subscriptions die with ``node``, but not the threads and the sensor node.
        with contextlib.ExitStack() as undo:
            self.loop = (ControlLoop if config.every_set else ChunkLoop)(config, LoopParts(
                mailbox=self.mailbox, frames=self.frames, instruction=self.instruction,
                hold_target=self.hold_target, runner=policy,
                sanitizer=ActionSanitizer(p.joint_lower_limits, p.joint_upper_limits, io.chunk_size), writer=writer,
                monitor=self.monitor, faults=self.faults, stages=self.stages, publish_status=self._publish_status,
                ros_now_ns=lambda: node.get_clock().now().nanoseconds,
                info=lambda line: log.info(line, throttle_duration_sec=throttle),
                warn=lambda line: log.warning(line, throttle_duration_sec=throttle),
                after_cycle=after_cycle), clock)
            undo.callback(self.loop.close)  # chunk mode: its inference thread runs already
            self.sensors = SensorInputs(node, p, self.observations, qos.sensor, qos.joint,
                                        lambda: node.get_clock().now().nanoseconds,
                                        lambda line: log.error(line, throttle_duration_sec=throttle))
            undo.callback(self.sensors.close)
            node.create_subscription(String, p.instruction_topic, self.instruction.receive, qos.reliable, raw=True)
            undo.pop_all()  # all made: close() releases them from now on

    def start(self, thread_name: str = 'pi0_control_loop') -> None:
        """Start the control thread; log the mode and where the instruction is awaited."""
        p = self.p
        self._thread = threading.Thread(target=self._control_loop, name=thread_name, daemon=True)
        self._thread.start()
        self.sensors.start()
        deadline = (f'deadline {p.deadline_ms:g} ms' if self.loop.config.every_set else
                    f'next chunk asked for {self.monitor.lead_ns / 1e6:.1f} ms before the running one runs out'
                    f'{"" if p.chunk_lead_ms else " (measured latency + margin)"}')
        self.node.get_logger().info(
            f'{p.inference_mode} mode, {self.n_action_steps} action steps at {p.control_rate_hz:g} Hz, {deadline}; '
            f'waiting for an instruction on {self.node.resolve_topic_name(p.instruction_topic)}')

    def close(self) -> None:
        """Stop the inputs, the control thread (and chunk mode's inference thread); the policy stays. Idempotent."""
        if self._stop.is_set():
            return
        self.sensors.close()
        self._stop.set()
        self.mailbox.close()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
        self.loop.close()

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """Return the robot's threads once started: control, sensor inputs, and chunk mode's inference thread."""
        started = () if self._thread is None else (self._thread,)
        return started + (self.sensors.thread, *self.loop.threads)

    @property
    def cycles(self) -> int:
        """Inferences that reached the publish decision."""
        return self.loop.cycles

    # -- sensor thread: a complete observation ---------------------------------------------
    def _hand_over(self, images: tuple[Any, ...], state: np.ndarray, newest_stamp_ns: int, joint_stamp_ns: int,
                   t_recv: int) -> bool:
        """Put a complete observation in the mailbox, once there is an instruction to act on."""
        if not self.instruction.version:
            self.node.get_logger().info(
                'observations arrive; waiting for an instruction on '
                f'{self.node.resolve_topic_name(self.p.instruction_topic)}', throttle_duration_sec=10.0)
            return False
        self.frames.handed_over()
        self.mailbox.put(images, state, newest_stamp_ns, joint_stamp_ns, t_recv, self.sensors.take_callback_ns())
        return True

    # -- control thread ----------------------------------------------------------------------
    def _control_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.loop.step()
            except Exception as err:  # publishing during shutdown, or a bug: never die silently
                if self._stop.is_set() or not self.node.context.ok():
                    return
                self.node.get_logger().error(f'control loop error: {type(err).__name__}: {err}',
                                             throttle_duration_sec=self.p.log_throttle_sec)
                self._stop.wait(self.loop.config.period_ns / 1e9)

    def _publish_status(self, missed: bool, compute_ns: int, obs_age_ns: int, inference_ns: int, slot: SetSlot,
                        chunk_slack_ns: float, switch_index: int, ticks_missed: float, queued_ns: int) -> None:
        values = self._status_values  # in STATUS_FIELDS order
        values[0], values[1], values[2] = self.cycles, compute_ns * 1e-6, obs_age_ns * 1e-6
        values[3], values[4] = float(missed), inference_ns * 1e-6
        values[5], values[6] = divmod(slot.newest_stamp_ns, 1_000_000_000)
        values[7] = (slot.joint_stamp_ns - slot.newest_stamp_ns) * 1e-6
        values[8] = self.mailbox.superseded
        values[9], values[10], values[11] = chunk_slack_ns * 1e-6, switch_index, ticks_missed
        values[12] = queued_ns * 1e-6
        self.status_pub.publish(self._status.fill(values))

    # -- diagnostics -------------------------------------------------------------------------
    def statuses(self) -> list[DiagnosticStatus]:
        """Return the robot's deadline and inputs statuses, named after its node (``/ns/pi0_control: deadline``)."""
        now = time.monotonic_ns()
        obs, loop = self.observations, self.loop
        self.liveness.check(now, obs.last_accepted)
        name = self.node.get_fully_qualified_name()
        level, message = inputs_level(has_instruction=bool(self.instruction.version), commands_stopped=loop.stopped,
                                      stale=loop.stale, failing=loop.failing, on_stale=self.p.on_stale,
                                      stopped_inputs=self.liveness.stopped_names(),
                                      has_set=self.mailbox.last_set_ns != 0)
        sync = obs.sync.counters
        pairs = input_key_values(
            now, instruction=self.instruction.text, inference_mode=self.p.inference_mode,
            commands_published=loop.commands_published, holds_published=loop.holds_published,
            sets_emitted=sync.sets_emitted, sets_superseded=self.mailbox.superseded, sync_dropped=sync.dropped,
            joint_lookup_misses=obs.joint_samples.misses, cameras=[c.name for c in self.p.cameras],
            received=sync.received, last_accepted_ns=obs.last_accepted, faults=self.faults.key_values())
        return [diagnostic_status(f'{name}: deadline', self.hardware_id, *self.monitor.level(),
                                  self.monitor.key_values()),
                diagnostic_status(f'{name}: inputs', self.hardware_id, level, message, pairs)]

    def publish_diagnostics(self) -> None:
        """Publish the robot's statuses on /diagnostics."""
        array = DiagnosticArray(status=self.statuses())
        array.header.stamp = self.node.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)
