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

"""The package's Python log records reach the node's ROS log (/rosout), level for level."""

import logging
import os
import time

import pytest
from rcl_interfaces.msg import Log
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from pi0_trt_ros.node.ros_logging import forward_package_logs, PACKAGE_LOGGER
from pi0_trt_ros.testing.dds import domain_id

DOMAIN_ID = domain_id(78)  # this module's own DDS domain
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'


def test_runner_log_lines_appear_on_rosout_with_their_level() -> None:
    ctx = Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('log_forward_probe', context=ctx)
    listener = rclpy.create_node('rosout_listener', context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(listener)
    seen: list[Log] = []
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    listener.create_subscription(Log, '/rosout', lambda m: seen.append(m) if m.name == 'log_forward_probe' else None,
                                 qos)
    handler = forward_package_logs(node.get_logger())
    runner_log = logging.getLogger(PACKAGE_LOGGER + '.runners.example')
    try:
        deadline = time.monotonic() + 60.0  # discovery on a loaded machine: wait generously, assert no timing
        while len(seen) < 2 and time.monotonic() < deadline:
            if not seen:  # repeat until the listener is matched; later copies are ignored below
                runner_log.info('checkpoint read in 1.00 s')
                runner_log.warning('engine built for another GPU')
            executor.spin_once(timeout_sec=0.2)
        messages = {(m.level, m.msg) for m in seen}
        assert (Log.INFO, 'runners.example: checkpoint read in 1.00 s') in messages
        assert (Log.WARN, 'runners.example: engine built for another GPU') in messages
        logging.getLogger(PACKAGE_LOGGER).removeHandler(handler)
        seen.clear()
        runner_log.warning('not forwarded any more')
        for _ in range(10):
            executor.spin_once(timeout_sec=0.1)
        assert all('not forwarded' not in m.msg for m in seen)
    finally:
        logging.getLogger(PACKAGE_LOGGER).removeHandler(handler)
        executor.shutdown()
        listener.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_a_failing_ros_logger_never_raises_into_the_caller() -> None:
    class Broken:
        def info(self, message: str) -> None:
            raise RuntimeError('publisher gone')

    handler = forward_package_logs(Broken())
    logging.raiseExceptions = False  # what a deployed process has: handleError stays quiet
    try:
        logging.getLogger(PACKAGE_LOGGER + '.runners.example').info('still fine')
    finally:
        logging.raiseExceptions = True
        logging.getLogger(PACKAGE_LOGGER).removeHandler(handler)


@pytest.fixture(autouse=True)
def _package_logger_level():
    """Leave the package logger's level as found."""
    level = logging.getLogger(PACKAGE_LOGGER).level
    yield
    logging.getLogger(PACKAGE_LOGGER).setLevel(level)
