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

Camera and joint-state messages arrive serialized (``sensor_input.py``): one whose fields do not
fit its bytes is counted as ``message_malformed``. What the node cannot see: a sample that DDS
drops (lost on a best-effort topic, or overwritten in a full history) reaches no callback, so it
is neither counted nor logged; it shows only as an input that stops
(``camera_stopped``/``joint_states_stopped``) if it lasts.
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
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.actions import ActionSanitizer, CommandWriter
from pi0_trt_ros.node.chunk_loop import ChunkLoop
from pi0_trt_ros.node.chunk_monitor import ChunkMonitor, warm_up_latency_ms
from pi0_trt_ros.node.control_loop import (ControlLoop, HoldTarget, LoopConfig, LoopParts, Mailbox, MonotonicClock,
                                           StageRing, STAGES)
from pi0_trt_ros.node.deadline import DeadlineMonitor
from pi0_trt_ros.node.diagnostics import InputLiveness, NodeDiagnostics
from pi0_trt_ros.node.faults import FaultCounters
from pi0_trt_ros.node.images import ImageDecoder
from pi0_trt_ros.node.instruction import InstructionBox
from pi0_trt_ros.node.observation import ObservationPipeline
from pi0_trt_ros.node.params import ControlParams, declare_and_read
from pi0_trt_ros.node.policy_setup import load_policy
from pi0_trt_ros.node.qos import RELIABLE
from pi0_trt_ros.node.ros_logging import forward_package_logs, PACKAGE_LOGGER
from pi0_trt_ros.node.runtime_tuning import RuntimeTuning
from pi0_trt_ros.node.sensor_input import SensorInputs
from pi0_trt_ros.node.status import StatusWriter
from pi0_trt_ros.node.usage import usage_text, wants_usage

NODE_NAME = 'pi0_control'
__all__ = ['ControlNode', 'main', 'STAGES']


class ControlNode(Node):
    """Runs the Pi0 policy on synchronized cameras + joint states and publishes joint commands.

    Threading: the camera and joint-state subscriptions are served on a thread of their own
    (``sensor_input.py``: serialized messages, a node and an executor of their own), which runs the
    observation pipeline; the instruction, the diagnostics timer and the parameter services run in
    the executor that spins this node; staging, inference and publishing run in a dedicated
    control thread. Inference takes most of a cycle and releases the GIL (ONNX Runtime, TensorRT,
    torch), so the sensor thread keeps draining DDS and the synchronizer keeps forming sets while
    the policy runs; the newest set waits in a one-slot mailbox (older ones are superseded, not
    queued). Only the control thread touches the staging buffers.
    """

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._log_handler = forward_package_logs(self.get_logger())  # runners' start-up lines into the ROS log
        self.p: ControlParams = declare_and_read(self)
        self.runner = None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- start-up --------------------------------------------------------------------------
    def _setup(self) -> None:
        p = self.p
        log = self.get_logger()
        policy = load_policy(p)
        self.runner, io, staging = policy.runner, policy.runner.io, policy.runner.staging
        log.info(policy.summary(p.backend, p.warmup_iterations))

        dof = len(p.joint_names)
        n_action_steps = p.n_action_steps or io.n_action_steps
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
                                        prior_latency_ms=warm_up_latency_ms(policy.warmup_ms))
        self.stages = StageRing(p.deadline_window)
        self.instruction = InstructionBox(policy.tokenizer, io.token_len, p.max_instruction_chars, self.faults,
                                          log.info, p.log_throttle_sec)
        self.hold_target = HoldTarget(dof)
        # Inputs: camera i (configured order) feeds staging image io.camera_keys.index(key).
        decoders = [ImageDecoder(staging.images[io.camera_keys.index(c.key)], c.transport, p.resize_mismatched)
                    for c in p.cameras]
        self.observations = ObservationPipeline.from_params(p, decoders, self.faults, self._hand_over,
                                                            self.hold_target.update)
        self.liveness = InputLiveness(self.observations.sources, self.observations.joint_input, p.stale_timeout_ms,
                                      self.faults, log.info)
        self.tuning = RuntimeTuning(p.gc_mode, p.switch_interval_ms, p.tune_malloc, p.realtime_priority)
        self._stop = threading.Event()
        clock = MonotonicClock(self._stop)
        self.mailbox = Mailbox(dof, clock)
        self.diagnostics_cpu_ns = 0  # CPU time spent in the diagnostics timer so far (benchmarks)
        throttle = p.log_throttle_sec

        self.command_pub = self.create_publisher(Float64MultiArray, p.commands_topic, RELIABLE)
        self.trajectory_pub = self.create_publisher(JointTrajectory, p.trajectory_topic, RELIABLE)
        self.status_pub = self.create_publisher(Float64MultiArray, '~/status', RELIABLE)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', RELIABLE)
        writer = CommandWriter(p.joint_lower_limits, p.joint_upper_limits, p.joint_names, io.chunk_size,
                               p.control_rate_hz, self.command_pub.publish, self.trajectory_pub.publish,
                               velocities=p.trajectory_velocities)
        status = StatusWriter(self.status_pub.publish, lambda: self.loop.cycles, lambda: self.mailbox.superseded)
        config = LoopConfig(every_set=every_set, n_action_steps=n_action_steps,
                            period_ns=int(round(1e9 / p.control_rate_hz)),
                            stale_timeout_ns=int(round(p.stale_timeout_ms * 1e6)),
                            stop_timeout_ns=int(round(p.stop_timeout_ms * 1e6)), on_stale=p.on_stale,
                            on_deadline_miss=p.on_deadline_miss, publish_trajectory=p.publish_trajectory,
                            trajectory_stamp_now=p.trajectory_stamp_now,
                            noise_seed=p.noise_seed, fixed_noise=p.fixed_noise,
                            crossfade_steps=p.chunk_crossfade_steps)
        self.loop = (ControlLoop if every_set else ChunkLoop)(config, LoopParts(
            mailbox=self.mailbox, decoders=decoders, instruction=self.instruction,
            hold_target=self.hold_target, runner=self.runner,
            sanitizer=ActionSanitizer(p.joint_lower_limits, p.joint_upper_limits, io.chunk_size),
            writer=writer, monitor=self.monitor, faults=self.faults, stages=self.stages, publish_status=status.write,
            ros_now_ns=self._ros_now_ns, info=lambda line: log.info(line, throttle_duration_sec=throttle),
            warn=lambda line: log.warning(line, throttle_duration_sec=throttle),
            after_cycle=self.tuning.after_cycle), clock)
        self.sensors = SensorInputs(self, p, self.observations, self._ros_now_ns,
                                    lambda line: log.error(line, throttle_duration_sec=throttle))
        self.create_subscription(String, p.instruction_topic, self.instruction.receive, RELIABLE, raw=True)
        self.diagnostics = NodeDiagnostics(
            self.get_fully_qualified_name(), p.hardware_id or f'{p.backend}:{p.engine_dir or p.checkpoint}',
            inference_mode=p.inference_mode, on_stale=p.on_stale, cameras=[c.name for c in p.cameras],
            observations=self.observations, liveness=self.liveness, loop=self.loop, mailbox=self.mailbox,
            instruction=self.instruction, monitor=self.monitor, faults=self.faults)
        self.create_timer(p.diagnostics_period_sec, self.diagnostics_callback)

        for warning in self.tuning.apply():
            log.warning(warning)
        self._thread = threading.Thread(target=self._control_loop, name='pi0_control_loop', daemon=True)
        self._thread.start()
        self.sensors.start()
        for warning in self.tuning.realtime([self._thread, self.sensors.thread, *self.loop.threads]):
            log.warning(warning)
        deadline = (f'deadline {p.deadline_ms:g} ms' if every_set else
                    f'next chunk asked for {self.monitor.lead_ns / 1e6:.1f} ms before the running one runs out'
                    f'{"" if p.chunk_lead_ms else " (measured latency + margin)"}')
        log.info(f'{p.inference_mode} mode, {n_action_steps} action steps at {p.control_rate_hz:g} Hz, '
                 f'{deadline}; waiting for an instruction on {self.resolve_topic_name(p.instruction_topic)}')

    def _release_runner(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()
            self.runner = None

    def close(self) -> None:
        """Stop the inputs, the control thread (and chunk mode's inference thread), then release the runner.

        Idempotent.
        """
        sensors = getattr(self, 'sensors', None)
        if sensors is not None:
            sensors.close()
        thread = getattr(self, '_thread', None)
        if thread is not None:
            self._stop.set()
            self.mailbox.close()
            thread.join(timeout=30.0)
            self.loop.close()
            self.tuning.release()
        self._release_runner()
        logging.getLogger(PACKAGE_LOGGER).removeHandler(self._log_handler)

    def _ros_now_ns(self) -> int:
        """Return the node's clock (ROS time, the stamps' clock) in ns."""
        return self.get_clock().now().nanoseconds

    # -- sensor callbacks' thread: a complete observation ------------------------------------
    def _hand_over(self, images: tuple[Any, ...], state: np.ndarray, newest_stamp_ns: int, joint_stamp_ns: int,
                   t_recv: int) -> bool:
        """Put a complete observation in the mailbox, once there is an instruction to act on."""
        if not self.instruction.version:
            self.get_logger().info('observations arrive; waiting for an instruction on '
                                   f'{self.resolve_topic_name(self.p.instruction_topic)}', throttle_duration_sec=10.0)
            return False
        self.mailbox.put(images, state, newest_stamp_ns, joint_stamp_ns, t_recv, self.sensors.take_callback_ns())
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

    # -- diagnostics -------------------------------------------------------------------------
    def diagnostics_callback(self) -> None:
        """Publish the deadline and input statuses on /diagnostics."""
        t0 = time.thread_time_ns()
        self.tuning.between_diagnostics()
        array = DiagnosticArray(status=self.diagnostics.statuses(time.monotonic_ns()))
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)
        self.diagnostics_cpu_ns += time.thread_time_ns() - t0


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
