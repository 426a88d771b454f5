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

"""Nodes spun by an executor on a thread of their own, stopped in the order rclpy needs.

rclpy's ``Executor.shutdown()`` (Jazzy, rclpy 7.1) destroys the executor's guard conditions at
once, also while another thread is inside ``spin()`` building its wait set from them: that thread
then dies on an AttributeError or InvalidHandle (a few times in a thousand stops, with messages
flowing). So the thread spins in slices (``spin_once`` with a timeout: a wake-up alone does not
return it) and checks a flag between them; ``stop()`` sets the flag, joins the thread, and only
then shuts the executor down. Once ``stop()`` has returned no callback of the nodes runs, so what
the callbacks use can be closed and the nodes destroyed.

A callback that raises while the context is up ends the thread: with ``on_error`` given, that is
called with the exception (on this thread) instead of the exception escaping the thread.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

SPIN_SLICE_S = 0.1  # longest wait of one spin_once: how soon a stop is noticed


class SpinThread:
    """A ``SingleThreadedExecutor`` spinning ``nodes`` on a thread named ``name``: ``start()``, then ``stop()``."""

    def __init__(self, context: Context, nodes: Iterable[Node], name: str,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self.executor = SingleThreadedExecutor(context=context)
        self._on_error = on_error
        for node in nodes:
            self.executor.add_node(node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, name=name, daemon=True)

    def start(self) -> None:
        """Start spinning."""
        self.thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the thread (within a slice), then shut the executor down. Idempotent."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout_s)
        self.executor.shutdown()

    def _spin(self) -> None:
        try:
            while not self._stop.is_set():
                self.executor.spin_once(timeout_sec=SPIN_SLICE_S)
        except ExternalShutdownException:
            pass
        except Exception as err:
            if not self.executor.context.ok():
                return  # a signal shut the context down between two waits (rclpy raises RCLError there)
            if self._on_error is None:
                raise
            self._on_error(err)
