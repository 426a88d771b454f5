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

"""The fleet node: several robots served by one batched policy in one process.

Each robot is a node named like the single-robot node (``pi0_control``) in the robot's namespace
(``robots: [robot_a, robot_b]`` -> ``/robot_a/pi0_control``, ...), with a ``RobotControl``
(``robot.py``) as the control node has: the same topics (three cameras, joint_states, instruction,
commands, trajectory, ``~/status``), the same parameters and the same behaviour (its own
synchronizer, instruction, safety state, deadline monitor and control thread). Its parameters
default to the fleet node's, and a parameter-file section ``/<robot>/pi0_control`` overrides
them for that robot, but the policy and process settings are the fleet's (``fleet_params.py``).

Inference: one batched runner (``batch_sizes``) behind a ``Batcher``; each robot's control loop
calls its ``Seat``, and the batcher runs whichever robots are ready, as soon as the runner is
free (``max_wait_ms``: wait that long at most for more). A robot with stale cameras, bad inputs
or a slow link does not submit, so no batch waits on it beyond ``max_wait_ms``, and its row never
touches another's. Each robot node spins in an executor thread of its own, so one robot's flood
of messages does not delay another robot's callbacks; should one of its callbacks raise (a bug),
that robot alone stops commanding, as a control node's process would end, and the fleet says so
on ``/diagnostics`` (``/<robot>/pi0_control: stopped``, ERROR).

The fleet node (``pi0_fleet``) publishes on ``/diagnostics`` the batcher's figures (aggregate
observations/s, the batch-size histogram, per-robot latency and misses) and the GPU's
utilization and memory through NVML when it is available (``fleet_monitor.py``); each robot
publishes its own deadline and inputs statuses, as the control node does.

Noise: each robot draws its own, exactly as a control node with its parameters would
(``noise_seed``), so a robot of a fleet commands what a single-robot node commands for the same
inputs.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import Any, Mapping, Sequence

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter

from pi0_trt_ros.batch_sizes import padded_size
from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.batcher import Batcher, Seat
from pi0_trt_ros.node.control_node import NODE_NAME
from pi0_trt_ros.node.deadline import Level
from pi0_trt_ros.node.diagnostics import diagnostic_status
from pi0_trt_ros.node.entry import run_node
from pi0_trt_ros.node.fleet_monitor import batcher_status, GpuMonitor, Throughput
from pi0_trt_ros.node.fleet_params import (check_shared, declare_fleet, device_options, effective_device, FleetParams,
                                           physical_gpu)
from pi0_trt_ros.node.param_specs import FLEET_NODE_NAME
from pi0_trt_ros.node.params import check_against_policy, ControlParams, declare_and_read, declared_values
from pi0_trt_ros.node.robot import QosProfiles, RobotControl
from pi0_trt_ros.node.ros_logging import forward_package_logs, PACKAGE_LOGGER
from pi0_trt_ros.node.runtime_tuning import RuntimeTuning
from pi0_trt_ros.node.spin_thread import SpinThread
from pi0_trt_ros.node.usage import fleet_usage_text

__all__ = ['FleetNode', 'main', 'RobotNode']


class RobotNode(Node):
    """One robot of the fleet: ``<namespace>/pi0_control`` with a ``RobotControl`` on the fleet's ``seat``."""

    def __init__(self, fleet: 'FleetNode', namespace: str, seat: Seat, overrides: Sequence[Parameter]) -> None:
        super().__init__(NODE_NAME, namespace=namespace, context=fleet.context, parameter_overrides=overrides)
        name = self.get_fully_qualified_name()
        self.seat = seat
        try:
            self.p: ControlParams = declare_and_read(self, fleet.robot_defaults)
            check_shared(self.p, fleet.p, name)
            check_against_policy(self.p, seat.io)
            # (a RobotControl that fails closes what it made; the node's own entities go with the node)
            self.robot = RobotControl(self, self.p, seat, fleet.tokenizer, fleet.warmup_ms, fleet.tuning.after_cycle)
        except BaseException as err:
            self.destroy_node()  # the fleet holds only the robots that started
            if isinstance(err, Pi0Error):
                raise Pi0Error(f'{name}: {err}') from None
            raise
        self.create_timer(self.p.diagnostics_period_sec, self.robot.publish_diagnostics)
        self.failure = ''  # what one of this robot's callbacks raised, once the robot has stopped
        self._spinner = SpinThread(fleet.context, [self], name=f'pi0_spin{namespace}', on_error=self._callback_failed)

    def start(self) -> None:
        """Start the control thread and the executor thread of this robot."""
        self.robot.start(thread_name=f'pi0_control{self.get_namespace()}')
        self._spinner.start()

    def _callback_failed(self, err: Exception) -> None:
        """Stop this robot, and only this one, once one of its callbacks raised (a bug; the executor thread ended).

        A robot whose node no longer takes instructions or parameters must not go on commanding; the
        single-robot node stops the same way (its process ends). The fleet reports it on /diagnostics.
        """
        failure = f'{type(err).__name__}: {err}'
        self.get_logger().fatal(f'a callback failed ({failure}): this robot stops commanding, the other robots go '
                                f'on; restart the fleet to serve it again\n{"".join(traceback.format_exception(err))}')
        self.robot.close()
        self.failure = failure  # once stopped

    def close(self) -> None:
        """Stop the executor thread, then the control thread (the batcher still serves a call in flight)."""
        self._spinner.stop()
        self.robot.close()


class FleetNode(Node):
    """Serves the robots named in ``robots`` with one batched runner (module docstring).

    ``robot_overrides`` (robot name -> parameters) are given to that robot's node as the
    parameter file's ``/<robot>/pi0_control`` section would be (tests, embedding applications).
    The caller spins this node (its diagnostics timer); the robots spin in threads of their own.
    """

    def __init__(self, robot_overrides: Mapping[str, Sequence[Parameter]] | None = None, **node_kwargs: Any) -> None:
        super().__init__(FLEET_NODE_NAME, **node_kwargs)
        self._log_handler = forward_package_logs(self.get_logger())  # runners' start-up lines into the ROS log
        self.runner = None
        self.batcher: Batcher | None = None
        self.robots: list[RobotNode] = []
        self.gpu: GpuMonitor | None = None
        try:
            self.p: ControlParams = declare_and_read(self)
            self.fleet: FleetParams = declare_fleet(self)
            self._setup(robot_overrides or {})
        except BaseException:
            self.close()
            self.destroy_node()  # no caller holds a node whose start-up failed
            raise

    # -- start-up --------------------------------------------------------------------------
    def _setup(self, robot_overrides: Mapping[str, Sequence[Parameter]]) -> None:
        p, fleet = self.p, self.fleet
        log = self.get_logger()
        from pi0_trt_ros.runners import make_runner  # lazy: only the chosen backend gets imported
        from pi0_trt_ros.tokenizer import Pi0Tokenizer, resolve_tokenizer_file

        unknown = sorted(set(robot_overrides) - {r.strip('/') for r in fleet.robots})
        if unknown:
            raise Pi0Error(f'parameters given for {unknown}, which are not in robots {list(fleet.robots)}')
        resolve_tokenizer_file(p.tokenizer)  # fail before the (slow) engine load
        options = device_options(p.backend, fleet.device, p.backend_options)
        t0 = time.monotonic()
        runner = make_runner(p.backend, engine_dir=p.engine_dir or None, checkpoint=p.checkpoint or None,
                             batch_sizes=fleet.batch_sizes, **options)
        self.runner = runner
        runner.activate()
        load_s = time.monotonic() - t0
        self.tokenizer = Pi0Tokenizer.from_path(p.tokenizer, runner.io.token_len)
        self.warmup_ms = self._warm_up()
        device = effective_device(p.backend, options)
        log.info(f'{p.backend} runner on {device} ready in {load_s:.2f} s, batch sizes '
                 f'{",".join(map(str, runner.batch_sizes))}; warm-up {p.warmup_iterations} calls per size, a batch '
                 f'of {len(fleet.robots)} robots {self.warmup_ms[-1] if self.warmup_ms else 0.0:.2f} ms')
        self.batcher = Batcher(runner, fleet.max_wait_ms)
        self.tuning = RuntimeTuning(p.gc_mode, p.switch_interval_ms, p.tune_malloc, p.realtime_priority)
        self.robot_defaults = declared_values(self, p)
        for namespace in fleet.robots:
            seat = self.batcher.seat(namespace)
            self.robots.append(RobotNode(self, namespace, seat, robot_overrides.get(namespace.strip('/'), ())))
        self.hardware_id = p.hardware_id or f'{p.backend}:{p.engine_dir or p.checkpoint}'
        self.gpu = GpuMonitor(device, physical_gpu(device))
        self.throughput = Throughput(time.monotonic_ns())
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', QosProfiles(p).reliable)
        self.create_timer(p.diagnostics_period_sec, self.diagnostics_callback)

        for warning in self.tuning.apply():
            log.warning(warning)
        self.batcher.start()
        for robot in self.robots:
            robot.start()
        threads = [self.batcher.thread] + [t for robot in self.robots for t in robot.robot.threads]
        for warning in self.tuning.realtime(threads):
            log.warning(warning)
        log.info(f'serving {len(self.robots)} robots: {", ".join(r.get_fully_qualified_name() for r in self.robots)}'
                 f'; max_wait_ms {fleet.max_wait_ms:g}; {self.gpu.unavailable or "GPU figures from NVML"}')

    def _warm_up(self) -> list[float]:
        """Run ``warmup_iterations`` batches of each size on neutral rows; return the times (ms) of the fleet's size.

        The fleet's size is the batch all robots at once run at, the prior latency of each robot's
        chunk-mode lead.
        """
        runner = self.runner
        buffers = runner.staging.buffers  # [B, ...] every row
        buffers['token_mask'][:] = False
        buffers['token_mask'][:, 0] = True  # one valid token, as an empty prompt would not be
        buffers['noise'][:] = 0.0
        fleet_size = padded_size(min(len(self.fleet.robots), runner.max_batch), runner.batch_sizes)
        fleet_ms = []
        for size in runner.batch_sizes:
            for _ in range(self.p.warmup_iterations):
                t0 = time.perf_counter()
                runner.infer_batch(size)
                if size == fleet_size:
                    fleet_ms.append((time.perf_counter() - t0) * 1e3)
        buffers['token_mask'][:] = False
        return fleet_ms

    def close(self) -> None:
        """Stop every robot, then the batcher, then release the runner. Idempotent.

        Call it once the executor that spins this node has stopped (``run_node``: after ``spin()``
        returned), so that its diagnostics timer does not run on what is being released.
        """
        for robot in self.robots:
            robot.close()
        if self.batcher is not None:
            self.batcher.close()
        if hasattr(self, 'tuning'):
            self.tuning.release()
        for robot in self.robots:
            robot.destroy_node()
        self.robots = []
        if self.gpu is not None:
            self.gpu.close()
        if self.runner is not None:
            self.runner.deactivate()
            self.runner = None
        logging.getLogger(PACKAGE_LOGGER).removeHandler(self._log_handler)

    # -- diagnostics -------------------------------------------------------------------------
    def diagnostics_callback(self) -> None:
        """Publish the batcher's and the GPU's statuses on /diagnostics."""
        self.tuning.between_diagnostics()
        name = self.get_fully_qualified_name()
        throughput = self.throughput.update(time.monotonic_ns(), self.batcher.stats())
        array = DiagnosticArray(status=[
            batcher_status(name, self.hardware_id, [r.get_namespace() for r in self.robots],
                           self.runner.batch_sizes, self.fleet.max_wait_ms, throughput,
                           [r.robot.monitor for r in self.robots]),
            self.gpu.status(name, self.hardware_id),
            *[diagnostic_status(f'{robot.get_fully_qualified_name()}: stopped', self.hardware_id, Level.ERROR,
                                f'a callback failed ({robot.failure}); no commands until the fleet restarts', [])
              for robot in self.robots if robot.failure]])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run pi0_trt_ros fleet_node``; returns the exit code."""
    return run_node(FleetNode, FLEET_NODE_NAME, fleet_usage_text, args)


if __name__ == '__main__':
    sys.exit(main())
