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

"""The Pi0 control node: cameras, joint states and an instruction in; joint commands out.

Per synchronized observation (cameras matched by ApproximateTime, the joint sample nearest the
newest camera stamp): camera bytes go straight from the messages into the runner's staging
buffers, one ``runner.infer()`` gives an action chunk, and the node publishes

* ``commands_topic`` (std_msgs/Float64MultiArray): one action in ``joint_names`` order;
* ``trajectory_topic`` (trajectory_msgs/JointTrajectory): the whole chunk, point k at
  ``(k + 1) / control_rate_hz``;
* ``~/status`` (std_msgs/Float64MultiArray): ``STATUS_FIELDS`` of the cycle;
* ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, every ``diagnostics_period_sec``).

``inference_mode``: ``chunk`` publishes one action per control tick at ``control_rate_hz``,
``n_action_steps`` from each chunk, and infers the next chunk on the newest set while the running
one is still published (``chunk_loop.py``: started ``chunk_lead_ms`` before it runs out, switched
to at the action matching the time elapsed since its observation, optionally cross-faded); its
deadlines are every tick's command within the tick and every chunk before the running one runs
out. ``every_set`` runs one inference per synchronized set and publishes its first action (the
mode to compare against ``pi0-trt infer``); its deadline applies to each cycle, from the set
complete to the command published.

Noise: the k-th inference since start-up (k = 0, 1, ...; warm-up calls excluded) uses the k-th
draw ``rng.standard_normal((chunk_size, max_action_dim), dtype=np.float32)`` of
``rng = np.random.default_rng(noise_seed)``, written in place into the staging buffer; with
``fixed_noise`` every inference uses draw 0, which is the noise of ``pi0-trt infer --seed
noise_seed``: in ``every_set`` mode the command then equals that run's first action.

Safety: nothing is commanded before the first instruction; a NaN/inf action becomes the current
joint positions ("hold"), and every command, holds included, is clamped to the joint limits (and
never published with a NaN/inf) by one ``CommandWriter``; a joint state more than
``joint_limit_margin`` outside the limits is rejected, never used as input nor hold target; when
no usable observation arrives for ``stale_timeout_ms`` (also when frames keep failing to decode
or inference keeps failing) the node holds (or stops, ``on_stale``), and stops commanding
``stop_timeout_ms`` later, until inputs recover. The input rules (stamps, joint ring,
synchronizer, hand-over) live in ``observation.py``, shared with offline replay; the rules of the
control thread in ``control_loop.py``; this module wires them to ROS.

What the node cannot see: a message that DDS or rmw drops before rclpy hands it over (a CDR
message whose length field does not fit its bytes fails to deserialize below rclpy, and a
sample lost on a best-effort topic) reaches no callback, so it is neither counted nor logged;
it shows only as an input that stops (``camera_stopped``/``joint_states_stopped``) if it lasts.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.actions import ActionSanitizer, CommandWriter, Float64ArrayMessage
from pi0_trt_ros.node.chunk_loop import ChunkLoop
from pi0_trt_ros.node.chunk_monitor import ChunkMonitor, warm_up_latency_ms
from pi0_trt_ros.node.control_loop import (ControlLoop, HoldTarget, LoopConfig, LoopParts, Mailbox, MonotonicClock,
                                           SetSlot, StageRing, STAGES)
from pi0_trt_ros.node.deadline import DeadlineMonitor, STATUS_FIELDS
from pi0_trt_ros.node.diagnostics import diagnostic_status, input_key_values, InputLiveness, inputs_level
from pi0_trt_ros.node.faults import FaultCounters
from pi0_trt_ros.node.images import ImageDecoder
from pi0_trt_ros.node.instruction import InstructionBox
from pi0_trt_ros.node.observation import ObservationPipeline
from pi0_trt_ros.node.params import check_against_policy, ControlParams, declare_and_read
from pi0_trt_ros.node.ros_logging import forward_package_logs, PACKAGE_LOGGER
from pi0_trt_ros.node.runtime_tuning import RuntimeTuning
from pi0_trt_ros.node.usage import usage_text, wants_usage

NODE_NAME = 'pi0_control'
__all__ = ['ControlNode', 'main', 'STAGES']


class ControlNode(Node):
    """Runs the Pi0 policy on synchronized cameras + joint states and publishes joint commands.

    Threading: subscriptions, the instruction and the diagnostics timer run in the executor that
    spins this node (one thread); staging, inference and publishing run in a dedicated control
    thread. Inference takes most of a cycle and releases the GIL (ONNX Runtime, TensorRT, torch),
    so callbacks keep draining DDS and the synchronizer keeps forming sets while the policy runs;
    the newest set waits in a one-slot mailbox (older ones are superseded, not queued). A
    MultiThreadedExecutor would also keep callbacks flowing, but it dispatches each callback
    through a thread pool with futures (more per-message overhead on a 2-core robot computer)
    and gives no single owner to the staging buffers; here only the control thread touches them.
    rclpy's experimental EventsExecutor (Jazzy 7.1.5) halves the executor's CPU per message, but
    its ``spin()`` hung when another thread of the process published to one of its subscriptions,
    so the node stays on the SingleThreadedExecutor.
    """

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._log_handler = forward_package_logs(self.get_logger())  # runners' start-up lines into the ROS log
        self.p: ControlParams = declare_and_read(self)
        self.runner = None
        try:
            self._setup()
        except BaseException:
            self._release_runner()
            logging.getLogger(PACKAGE_LOGGER).removeHandler(self._log_handler)
            raise

    # -- start-up --------------------------------------------------------------------------
    def _setup(self) -> None:
        p = self.p
        log = self.get_logger()
        from pi0_trt_ros.runners import make_runner  # lazy: only the chosen backend gets imported
        from pi0_trt_ros.tokenizer import Pi0Tokenizer, resolve_tokenizer_file

        resolve_tokenizer_file(p.tokenizer)  # fail before the (slow) engine load
        t0 = time.monotonic()
        runner = make_runner(p.backend, engine_dir=p.engine_dir or None, checkpoint=p.checkpoint or None,
                             **p.backend_options)
        io = runner.io
        check_against_policy(p, io)
        runner.activate()
        self.runner = runner
        load_s = time.monotonic() - t0
        self.io = io
        self.tokenizer = Pi0Tokenizer.from_path(p.tokenizer, io.token_len)
        staging = runner.staging
        self.staging = staging
        warmup_ms = self._warm_up()
        log.info(f'{p.backend} runner ready in {load_s:.2f} s; warm-up {p.warmup_iterations} calls in '
                 f'{sum(warmup_ms) / 1e3:.3f} s (last {warmup_ms[-1] if warmup_ms else 0.0:.2f} ms); '
                 f'cameras {list(io.camera_keys)} {[f"{w}x{h}" for h, w in io.camera_hw]}, '
                 f'chunk {io.chunk_size}x{io.action_dim}')

        dof = len(p.joint_names)
        self.n_action_steps = p.n_action_steps or io.n_action_steps
        self.faults = FaultCounters(log.warning, log.info, p.log_throttle_sec)
        every_set = p.inference_mode == 'every_set'
        self.monitor: DeadlineMonitor | ChunkMonitor
        if every_set:
            self.monitor = DeadlineMonitor(p.deadline_ms, p.deadline_window,
                                           error_consecutive=p.deadline_error_consecutive)
        else:  # ticks against the control period, chunks against the running chunk's end
            self.monitor = ChunkMonitor(1e3 / p.control_rate_hz, p.deadline_window,
                                        error_consecutive=p.deadline_error_consecutive, lead_ms=p.chunk_lead_ms,
                                        lead_margin_ms=p.chunk_lead_margin_ms,
                                        prior_latency_ms=warm_up_latency_ms(warmup_ms))
        self.stages = StageRing(p.deadline_window)
        self.instruction = InstructionBox(self.tokenizer, io.token_len, p.max_instruction_chars, self.faults,
                                          log.info, p.log_throttle_sec)
        self.hold_target = HoldTarget(dof)
        # Inputs: camera i (configured order) feeds staging image io.camera_keys.index(key).
        decoders = [ImageDecoder(staging.images[io.camera_keys.index(c.key)], c.transport, p.resize_mismatched)
                    for c in p.cameras]
        self.observations = ObservationPipeline.from_params(p, decoders, self.faults, self._hand_over,
                                                            self.hold_target.update)
        self.liveness = InputLiveness(self.observations.sources, self.observations.joint_input, p.stale_timeout_ms,
                                      self.faults, log.info)
        self.tuning = RuntimeTuning(p.gc_mode, p.switch_interval_ms, p.tune_malloc)
        self._cb_ns = 0  # summed callback time since the last set (executor thread only)
        self._stop = threading.Event()
        clock = MonotonicClock(self._stop)
        self.mailbox = Mailbox(dof, clock)
        self._status = Float64ArrayMessage(len(STATUS_FIELDS), label=','.join(STATUS_FIELDS))
        self._status_values = np.zeros(len(STATUS_FIELDS), np.float64)  # STATUS_FIELDS order
        self.diagnostics_cpu_ns = 0  # CPU time spent in the diagnostics timer so far (benchmarks)
        throttle = p.log_throttle_sec
        self._hardware_id = p.hardware_id or f'{p.backend}:{p.engine_dir or p.checkpoint}'

        sensor_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=p.sensor_qos_depth,
                                durability=DurabilityPolicy.VOLATILE,
                                reliability=ReliabilityPolicy.RELIABLE if p.sensor_qos_reliability == 'reliable'
                                else ReliabilityPolicy.BEST_EFFORT)
        joint_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(10, p.sensor_qos_depth),
                               durability=DurabilityPolicy.VOLATILE, reliability=sensor_qos.reliability)
        # `ros2 topic pub` (default profile) is reliable + volatile and waits for one matching
        # subscription before publishing (--once), so a reliable volatile reader gets the message.
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, durability=DurabilityPolicy.VOLATILE,
                              reliability=ReliabilityPolicy.RELIABLE)
        self.command_pub = self.create_publisher(Float64MultiArray, p.commands_topic, reliable)
        self.trajectory_pub = self.create_publisher(JointTrajectory, p.trajectory_topic, reliable)
        self.status_pub = self.create_publisher(Float64MultiArray, '~/status', reliable)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', reliable)
        writer = CommandWriter(p.joint_lower_limits, p.joint_upper_limits, p.joint_names, io.chunk_size,
                               p.control_rate_hz, self.command_pub.publish, self.trajectory_pub.publish,
                               velocities=p.trajectory_velocities)
        config = LoopConfig(every_set=every_set, n_action_steps=self.n_action_steps,
                            period_ns=int(round(1e9 / p.control_rate_hz)),
                            stale_timeout_ns=int(round(p.stale_timeout_ms * 1e6)),
                            stop_timeout_ns=int(round(p.stop_timeout_ms * 1e6)), on_stale=p.on_stale,
                            on_deadline_miss=p.on_deadline_miss, publish_trajectory=p.publish_trajectory,
                            trajectory_stamp_now=p.trajectory_stamp_now,
                            noise_seed=p.noise_seed, fixed_noise=p.fixed_noise,
                            crossfade_steps=p.chunk_crossfade_steps)
        self.loop = (ControlLoop if every_set else ChunkLoop)(config, LoopParts(
            mailbox=self.mailbox, decoders=decoders, sources=self.observations.sources, instruction=self.instruction,
            hold_target=self.hold_target, runner=runner,
            sanitizer=ActionSanitizer(p.joint_lower_limits, p.joint_upper_limits, io.chunk_size), writer=writer,
            monitor=self.monitor, faults=self.faults, stages=self.stages, publish_status=self._publish_status,
            ros_now_ns=lambda: self.get_clock().now().nanoseconds,
            info=lambda line: log.info(line, throttle_duration_sec=throttle),
            warn=lambda line: log.warning(line, throttle_duration_sec=throttle),
            after_cycle=self.tuning.after_cycle), clock)
        # Joint states first: the executor serves ready subscriptions in creation order, so a joint
        # sample that arrived with the frames is in the buffer before the set completes.
        self.create_subscription(JointState, p.joint_states_topic, self.joint_callback, joint_qos)
        for i, cam in enumerate(p.cameras):
            msg_type = Image if cam.transport == 'raw' else CompressedImage
            self.create_subscription(msg_type, cam.topic, lambda msg, i=i: self.camera_callback(i, msg), sensor_qos)
        self.create_subscription(String, p.instruction_topic, self.instruction.receive, reliable, raw=True)
        self.create_timer(p.diagnostics_period_sec, self.diagnostics_callback)

        for warning in self.tuning.apply():
            log.warning(warning)
        self._thread = threading.Thread(target=self._control_loop, name='pi0_control_loop', daemon=True)
        self._thread.start()
        deadline = (f'deadline {p.deadline_ms:g} ms' if every_set else
                    f'next chunk asked for {self.monitor.lead_ns / 1e6:.1f} ms before the running one runs out'
                    f'{"" if p.chunk_lead_ms else " (measured latency + margin)"}')
        log.info(f'{p.inference_mode} mode, {self.n_action_steps} action steps at {p.control_rate_hz:g} Hz, '
                 f'{deadline}; waiting for an instruction on {self.resolve_topic_name(p.instruction_topic)}')

    def _warm_up(self) -> list[float]:
        """Run ``warmup_iterations`` policy calls on a neutral observation; return each call's time (ms)."""
        staging = self.staging
        staging.token_mask[:] = False
        staging.token_mask[0] = True  # one valid token, as an empty prompt would not be
        staging.noise[:] = 0.0
        calls_ms = []
        for _ in range(self.p.warmup_iterations):
            t0 = time.perf_counter()
            self.runner.infer()
            calls_ms.append((time.perf_counter() - t0) * 1e3)
        staging.token_mask[:] = False
        return calls_ms

    def _release_runner(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()
            self.runner = None

    def close(self) -> None:
        """Stop the control thread (and chunk mode's inference thread), then release the runner. Idempotent."""
        thread = getattr(self, '_thread', None)
        if thread is not None:
            self._stop.set()
            self.mailbox.close()
            thread.join(timeout=30.0)
            self.loop.close()
            self.tuning.release()
        self._release_runner()
        logging.getLogger(PACKAGE_LOGGER).removeHandler(self._log_handler)

    # -- executor thread: inputs -------------------------------------------------------------
    def camera_callback(self, index: int, msg: Any) -> None:
        """Feed one frame to the observation pipeline."""
        t0 = time.monotonic_ns()
        if not self.observations.add_frame(index, msg, self.get_clock().now().nanoseconds, t0):
            self._cb_ns += time.monotonic_ns() - t0

    def joint_callback(self, msg: JointState) -> None:
        """Feed one joint state to the observation pipeline (joint ring and hold target)."""
        t0 = time.monotonic_ns()
        self.observations.add_joint_state(msg, self.get_clock().now().nanoseconds, t0)
        self._cb_ns += time.monotonic_ns() - t0

    def _hand_over(self, images: tuple[Any, ...], state: np.ndarray, newest_stamp_ns: int, joint_stamp_ns: int,
                   t_recv: int) -> bool:
        """Put a complete observation in the mailbox, once there is an instruction to act on."""
        if not self.instruction.version:
            self.get_logger().info('observations arrive; waiting for an instruction on '
                                   f'{self.resolve_topic_name(self.p.instruction_topic)}', throttle_duration_sec=10.0)
            return False
        self.mailbox.put(images, state, newest_stamp_ns, joint_stamp_ns, t_recv, self._cb_ns)
        self._cb_ns = 0
        return True

    # -- control thread ----------------------------------------------------------------------
    def _control_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.loop.step()
            except Exception as err:  # publishing during shutdown, or a bug: never die silently
                if self._stop.is_set() or not self.context.ok():
                    return
                self.get_logger().error(f'control loop error: {type(err).__name__}: {err}',
                                        throttle_duration_sec=self.p.log_throttle_sec)
                self._stop.wait(self.loop.config.period_ns / 1e9)

    @property
    def cycles(self) -> int:
        """Inferences that reached the publish decision."""
        return self.loop.cycles

    def _publish_status(self, missed: bool, compute_ns: int, obs_age_ns: int, inference_ns: int, slot: SetSlot,
                        chunk_slack_ns: float, switch_index: int, ticks_missed: float) -> None:
        values = self._status_values  # in STATUS_FIELDS order
        values[0], values[1], values[2] = self.cycles, compute_ns * 1e-6, obs_age_ns * 1e-6
        values[3], values[4] = float(missed), inference_ns * 1e-6
        values[5], values[6] = divmod(slot.newest_stamp_ns, 1_000_000_000)
        values[7] = (slot.joint_stamp_ns - slot.newest_stamp_ns) * 1e-6
        values[8] = self.mailbox.superseded
        values[9], values[10], values[11] = chunk_slack_ns * 1e-6, switch_index, ticks_missed
        self.status_pub.publish(self._status.fill(values))

    # -- diagnostics -------------------------------------------------------------------------
    def diagnostics_callback(self) -> None:
        """Publish the deadline and input statuses on /diagnostics."""
        t0 = time.thread_time_ns()
        self._diagnostics()
        self.diagnostics_cpu_ns += time.thread_time_ns() - t0

    def _diagnostics(self) -> None:
        now = time.monotonic_ns()
        obs, loop = self.observations, self.loop
        self.liveness.check(now, obs.last_accepted)
        self.tuning.between_diagnostics()
        name = self.get_fully_qualified_name()
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
        array = DiagnosticArray(status=[
            diagnostic_status(f'{name}: deadline', self._hardware_id, *self.monitor.level(), self.monitor.key_values()),
            diagnostic_status(f'{name}: inputs', self._hardware_id, level, message, pairs)])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)


def _note_signal(signum: int, _frame: Any) -> None:
    """SIGINT after rclpy's handler: nothing left to do (the context is already shutting down)."""
    rclpy.logging.get_logger(NODE_NAME).debug(f'{signal.Signals(signum).name}: shutting down')


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run pi0_trt_ros control_node``; returns the exit code."""
    if wants_usage((sys.argv if args is None else args)[1:]):
        sys.stdout.write(usage_text())
        return 0
    # rclpy's own SIGINT/SIGTERM handler shuts the context down (spin raises ExternalShutdownException),
    # then calls the Python handler installed before it. Python's default raises KeyboardInterrupt,
    # which a second Ctrl-C would throw into the clean-up below (under `ros2 launch` a terminal's
    # Ctrl-C reaches the node twice: from the terminal, then forwarded by launch); so the Python
    # side only notes the signal and the shutdown stays rclpy's.
    signal.signal(signal.SIGINT, _note_signal)
    rclpy.init(args=args)
    executor = SingleThreadedExecutor()  # before the (slow) start-up, so a signal cannot catch it half-built
    node = None
    try:
        try:
            node = ControlNode()
        except Pi0Error as err:
            rclpy.logging.get_logger(NODE_NAME).fatal(f'start-up failed: {err}')
            return 1
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # A signal shut the context down between two waits: rclpy raises RCLError there, not
        # ExternalShutdownException. It is the same clean shutdown.
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
