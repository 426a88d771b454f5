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

"""Run a node process until shutdown: the entry-point logic the control node and the fleet node share.

``--help`` prints the usage and exits; a start-up error (`Pi0Error`) is logged as fatal and
exits 1; SIGINT/SIGTERM shut down cleanly (exit 0) whenever they arrive, start-up included. Any
other exception (a bug, in start-up or in a callback) is logged as fatal with its traceback, and
the process ends with exit code 1: the node's threads stop, so it commands nothing more.
"""

from __future__ import annotations

import signal
import sys
import traceback
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.usage import wants_usage


def run_node(make_node: Callable[[], Node], name: str, usage: Callable[[], str], args: list[str] | None) -> int:
    """Build the node with ``make_node`` and spin it until shutdown; returns the process exit code.

    The node's ``close()`` (stop its threads) runs before it is destroyed, however the spin ended.
    """
    if wants_usage((sys.argv if args is None else args)[1:]):
        sys.stdout.write(usage())
        return 0

    def note_signal(signum: int, _frame: Any) -> None:
        """SIGINT after rclpy's handler: nothing left to do (the context is already shutting down)."""
        rclpy.logging.get_logger(name).debug(f'{signal.Signals(signum).name}: shutting down')

    # rclpy's own SIGINT/SIGTERM handler shuts the context down (spin raises ExternalShutdownException),
    # then calls the Python handler installed before it. Python's default raises KeyboardInterrupt,
    # which a second Ctrl-C would throw into the clean-up below (under `ros2 launch` a terminal's
    # Ctrl-C reaches the node twice: from the terminal, then forwarded by launch); so the Python
    # side only notes the signal and the shutdown stays rclpy's.
    signal.signal(signal.SIGINT, note_signal)
    rclpy.init(args=args)
    executor = SingleThreadedExecutor()  # before the (slow) start-up, so a signal cannot catch it half-built
    node: Any = None
    try:
        try:
            node = make_node()
        except Pi0Error as err:
            rclpy.logging.get_logger(name).fatal(f'start-up failed: {err}')
            return 1
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as err:
        # A signal that shut the context down between two waits raises RCLError there, not
        # ExternalShutdownException: the same clean shutdown.
        if not rclpy.ok():
            return 0
        rclpy.logging.get_logger(name).fatal(
            f'unexpected error ({type(err).__name__}: {err}): the node stops, and its commands with it\n'
            f'{"".join(traceback.format_exception(err))}')
        return 1
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
