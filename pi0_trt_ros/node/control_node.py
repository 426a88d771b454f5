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
control thread in ``control_loop.py``; their wiring to ROS for one robot in ``robot.py`` (shared with
the fleet node); this module loads the policy and runs that one robot.

What the node cannot see: a message that DDS or rmw drops before rclpy hands it over (a CDR
message whose length field does not fit its bytes fails to deserialize below rclpy, and a
sample lost on a best-effort topic) reaches no callback, so it is neither counted nor logged;
it shows only as an input that stops (``camera_stopped``/``joint_states_stopped``) if it lasts.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from rclpy.node import Node

from pi0_trt_ros.node.control_loop import STAGES
from pi0_trt_ros.node.entry import run_node
from pi0_trt_ros.node.params import check_against_policy, ControlParams, declare_and_read
from pi0_trt_ros.node.robot import RobotControl
from pi0_trt_ros.node.ros_logging import forward_package_logs, PACKAGE_LOGGER
from pi0_trt_ros.node.runtime_tuning import RuntimeTuning
from pi0_trt_ros.node.usage import usage_text

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
        self.runner = None
        self.robot: RobotControl | None = None
        try:
            self.p: ControlParams = declare_and_read(self)
            self._setup()
        except BaseException:
            self.close()
            self.destroy_node()  # no caller holds a node whose start-up failed
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

        self.tuning = RuntimeTuning(p.gc_mode, p.switch_interval_ms, p.tune_malloc, p.realtime_priority)
        self.diagnostics_cpu_ns = 0  # CPU time spent in the diagnostics timer so far (benchmarks)
        self.robot = RobotControl(self, p, runner, self.tokenizer, warmup_ms, self.tuning.after_cycle)
        robot = self.robot  # its parts, by the names this node has always given them
        self.loop, self.monitor, self.faults = robot.loop, robot.monitor, robot.faults
        self.instruction, self.observations, self.mailbox, self.stages = (robot.instruction, robot.observations,
                                                                          robot.mailbox, robot.stages)
        self.create_timer(p.diagnostics_period_sec, self.diagnostics_callback)

        for warning in self.tuning.apply():
            log.warning(warning)
        robot.start()
        for warning in self.tuning.realtime(robot.threads):
            log.warning(warning)

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

    def close(self) -> None:
        """Stop the robot's threads and inputs, then release the runner. Idempotent."""
        if self.robot is not None:
            self.robot.close()
            self.tuning.release()
        if self.runner is not None:
            self.runner.deactivate()
            self.runner = None
        logging.getLogger(PACKAGE_LOGGER).removeHandler(self._log_handler)

    @property
    def cycles(self) -> int:
        """Inferences that reached the publish decision."""
        return self.robot.cycles

    # -- diagnostics -------------------------------------------------------------------------
    def diagnostics_callback(self) -> None:
        """Publish the deadline and input statuses on /diagnostics."""
        t0 = time.thread_time_ns()
        self._diagnostics()
        self.diagnostics_cpu_ns += time.thread_time_ns() - t0

    def _diagnostics(self) -> None:
        self.tuning.between_diagnostics()
        self.robot.publish_diagnostics()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run pi0_trt_ros control_node``; returns the exit code."""
    return run_node(ControlNode, NODE_NAME, usage_text, args)


if __name__ == '__main__':
    sys.exit(main())
