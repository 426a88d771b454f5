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

"""The node's sensor subscriptions (cameras, joint states), feeding its observation pipeline.

Each message goes to the ``ObservationPipeline`` with the node's clock (ROS time: the stamps'
clock) and its receive time (monotonic). The time spent in these callbacks since the last set
handed over is summed (``take_callback_ns``) for the stage timestamps benchmarks read.

The joint-state subscription is created first: an executor serves ready subscriptions in
creation order, so a joint sample that arrived with the frames is in the joint ring before the
frame that completes the set is taken.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TYPE_CHECKING

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState

from pi0_trt_ros.node.observation import ObservationPipeline
from pi0_trt_ros.node.qos import camera_qos, joint_state_qos

if TYPE_CHECKING:
    from pi0_trt_ros.node.params import ControlParams


class SensorInputs:
    """Subscribes ``node`` to the configured cameras and joint states and feeds ``observations``."""

    def __init__(self, node: Node, p: ControlParams, observations: ObservationPipeline,
                 now_ns: Callable[[], int]) -> None:
        self.observations = observations
        self._now_ns = now_ns  # the node's clock (ROS time), ns
        self._callback_ns = 0  # summed callback time since the last set handed over
        node.create_subscription(JointState, p.joint_states_topic, self.joint_callback,
                                 joint_state_qos(p.sensor_qos_reliability, p.sensor_qos_depth))
        qos = camera_qos(p.sensor_qos_reliability, p.sensor_qos_depth)
        for i, cam in enumerate(p.cameras):
            msg_type = Image if cam.transport == 'raw' else CompressedImage
            node.create_subscription(msg_type, cam.topic, lambda msg, i=i: self.camera_callback(i, msg), qos)

    def camera_callback(self, index: int, msg: Any) -> None:
        """Feed one frame to the observation pipeline."""
        t0 = time.monotonic_ns()
        if not self.observations.add_frame(index, msg, self._now_ns(), t0):
            self._callback_ns += time.monotonic_ns() - t0

    def joint_callback(self, msg: JointState) -> None:
        """Feed one joint state to the observation pipeline (joint ring and hold target)."""
        t0 = time.monotonic_ns()
        self.observations.add_joint_state(msg, self._now_ns(), t0)
        self._callback_ns += time.monotonic_ns() - t0

    def take_callback_ns(self) -> int:
        """Return the callback time summed since the last call, and start a new sum (at a set's hand-over)."""
        spent, self._callback_ns = self._callback_ns, 0
        return spent
