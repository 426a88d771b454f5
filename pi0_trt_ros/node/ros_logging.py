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

"""Python ``logging`` records of the package (runners, checkpoint reader) into the node's ROS log.

The runners log what start-up did and how long it took (checkpoint read, weights on the device,
warm-up and capture) through ``logging``, which a ROS node does not show: without this handler
those lines are lost under ``ros2 run`` and ``ros2 launch``. Levels map one to one (DEBUG, INFO,
WARNING -> WARN, ERROR, CRITICAL -> FATAL); the ROS logger's own severity threshold applies.
"""

from __future__ import annotations

import logging
from typing import Any

PACKAGE_LOGGER = 'pi0_trt_ros'


class RosLogHandler(logging.Handler):
    """Forwards records to an rclpy logger (``node.get_logger()``)."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.DEBUG)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = f'{record.name.removeprefix(PACKAGE_LOGGER + ".")}: {record.getMessage()}'
            if record.levelno >= logging.CRITICAL:
                self.ros_logger.fatal(message)
            elif record.levelno >= logging.ERROR:
                self.ros_logger.error(message)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(message)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(message)
            else:
                self.ros_logger.debug(message)
        except Exception:  # a log line must never take the node down
            self.handleError(record)


def forward_package_logs(ros_logger: Any, level: int = logging.INFO) -> RosLogHandler:
    """Attach a `RosLogHandler` to the package's logger at ``level``; returns it (to remove later)."""
    handler = RosLogHandler(ros_logger)
    package = logging.getLogger(PACKAGE_LOGGER)
    package.addHandler(handler)
    if package.level == logging.NOTSET or package.level > level:
        package.setLevel(level)
    return handler
