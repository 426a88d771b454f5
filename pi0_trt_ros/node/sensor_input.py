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

"""The node's sensor inputs (cameras, joint states): on a thread of their own, read without rclpy messages.

Per camera set the node takes ~7 messages (three frames, ~4 joint states at 100 Hz). rclpy's
``SingleThreadedExecutor`` rebuilds its wait set, a task and a future in Python per message, for
every entity of the node it spins: on a 2-core robot computer, with nothing but the sensor
subscriptions to wait on, that is ~0.3 ms of CPU per joint state and ~0.8 ms per 640x480 frame
(0.5 ms taken serialized), and the control node's services, timer and publishers' events add to
each. So the sensor subscriptions live on a node of their own (``<node>_sensors``: no parameter
services, no type description service, no rosout, nothing but these subscriptions) spun by its own
executor on its own thread, and they are ``raw=True``: each callback gets the serialized bytes,
which the observation pipeline reads in place (``cdr.py``: a frame's pixels stay a view of the
received buffer).

The executor is rclpy's ``EventsExecutor`` (``rclpy.experimental``): its dispatch is C++, ~0.1 ms
per joint state and ~0.3 ms per frame, whose bytes are still copied twice below the callback (into
rmw's serialized message, then into a Python ``bytes``). Only its ``spin_once`` is used, in a loop:
its ``spin()`` hung (one core at 100 %) when another thread of the process published to one of its
subscriptions, which ``spin_once`` does not.

Topic names are resolved by the control node (its namespace and remappings), and the sensor node
takes no command-line arguments of its own: it is named after the control node (``<name>_sensors``,
in its namespace), so a ``__node`` remap of the control node does not give two nodes one name. Each
message goes to the ``ObservationPipeline`` with the control node's clock (ROS time: the stamps'
clock) and its receive time (monotonic). The time spent in the callbacks since the last set handed
over is summed (``take_callback_ns``), and the thread's CPU time (``cpu_ns``), for the stage
timestamps and the benchmarks. The joint-state subscription is created first, so that of the
messages ready together, a joint sample is taken before the frame that completes a set.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, TYPE_CHECKING

from rclpy.executors import ExternalShutdownException
from rclpy.experimental import EventsExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage, Image, JointState

from pi0_trt_ros.node.observation import ObservationPipeline

if TYPE_CHECKING:
    from pi0_trt_ros.node.params import ControlParams

SPIN_SLICE_S = 0.1  # longest wait of one spin_once: how soon a stop is noticed without a wake-up


class SensorInputs:
    """The configured cameras and joint states of ``parent``, fed to ``observations`` from a thread of their own.

    Call ``start()`` once the rest of the node is ready, and ``close()`` before destroying it.
    ``on_error``: where a callback's exception is reported (the thread goes on).
    """

    def __init__(self, parent: Node, p: ControlParams, observations: ObservationPipeline, camera_qos: QoSProfile,
                 joint_qos: QoSProfile, now_ns: Callable[[], int], on_error: Callable[[str], object]) -> None:
        self.observations = observations
        self._now_ns = now_ns  # the control node's clock (ROS time), ns
        self._on_error = on_error
        self._callback_ns = 0  # summed callback time since the last set handed over
        self.cpu_ns = 0  # the sensor thread's CPU time so far (benchmarks)
        self.node = Node(f'{parent.get_name()}_sensors', namespace=parent.get_namespace(), context=parent.context,
                         use_global_arguments=False, start_parameter_services=False, enable_rosout=False,
                         parameter_overrides=[Parameter('start_type_description_service', value=False)])
        with contextlib.ExitStack() as undo:  # a failure (a topic name rclpy refuses) leaves no node behind
            undo.callback(self.node.destroy_node)
            self.node.create_subscription(JointState, parent.resolve_topic_name(p.joint_states_topic),
                                          self.joint_callback, joint_qos, raw=True)
            for i, cam in enumerate(p.cameras):
                self.node.create_subscription(Image if cam.transport == 'raw' else CompressedImage,
                                              parent.resolve_topic_name(cam.topic),
                                              lambda raw, i=i: self.camera_callback(i, raw), camera_qos, raw=True)
            self._executor = EventsExecutor(context=parent.context)
            undo.callback(self._executor.shutdown)
            self._executor.add_node(self.node)
            undo.pop_all()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name='pi0_sensor_inputs', daemon=True)

    @property
    def thread(self) -> threading.Thread:
        """Return the thread that takes the messages."""
        return self._thread

    def start(self) -> None:
        """Start taking messages."""
        self._thread.start()

    def close(self) -> None:
        """Stop the thread, then destroy the executor and the sensor node (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._executor.wake()
            self._thread.join(timeout=10.0)
        self._executor.shutdown()
        self.node.destroy_node()

    # -- the sensor thread -------------------------------------------------------------------
    def _spin(self) -> None:
        while not self._stop.is_set():
            t0 = time.thread_time_ns()
            try:
                self._executor.spin_once(timeout_sec=SPIN_SLICE_S)
            except ExternalShutdownException:
                return
            except Exception as err:  # a callback's bug: report it and go on
                if self._stop.is_set() or not self.node.context.ok():
                    return
                self._on_error(f'sensor inputs: {type(err).__name__}: {err}')
            finally:
                self.cpu_ns += time.thread_time_ns() - t0

    def camera_callback(self, index: int, raw: bytes) -> None:
        """Feed one serialized frame (sensor_msgs/Image or CompressedImage) to the observation pipeline."""
        t0 = time.monotonic_ns()
        if not self.observations.add_serialized_frame(index, raw, self._now_ns(), t0):
            self._callback_ns += time.monotonic_ns() - t0  # (a set handed over counted its time up to then)

    def joint_callback(self, raw: bytes) -> None:
        """Feed one serialized joint state to the observation pipeline (joint ring and hold target)."""
        t0 = time.monotonic_ns()
        self.observations.add_serialized_joint_state(raw, self._now_ns(), t0)
        self._callback_ns += time.monotonic_ns() - t0

    def take_callback_ns(self) -> int:
        """Return the callback time summed since the last call, and start a new sum (at a set's hand-over)."""
        spent, self._callback_ns = self._callback_ns, 0
        return spent
