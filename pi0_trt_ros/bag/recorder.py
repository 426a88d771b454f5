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

"""Record ROS topics into a new rosbag2 bag, as ``ros2 bag record`` would, with ``rosbags``.

Subscriptions are raw (the CDR bytes go to the bag untouched) and the log time of each message
is its DDS receive time (system clock, ns). Topics given without a type are subscribed when
they appear in the ROS graph. The writer lives on the one thread that spins the recorder (the
sqlite3 storage refuses other threads), and ``close`` finishes the bag (metadata.yaml, indexes).
"""

from __future__ import annotations

import collections
from pathlib import Path
import threading
import time
from typing import Any, Mapping, Sequence

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosidl_runtime_py.utilities import get_message

from pi0_trt_ros.bag.bag_io import jazzy_typestore, make_writer, stop_on_signals, STORAGES
from pi0_trt_ros.errors import Pi0Error

DISCOVERY_PERIOD_S = 0.2  # how often topics still without a type are looked up in the graph
SPIN_TIMEOUT_S = 0.05


class BagRecorder(Node):
    """Subscribes to ``topics`` and writes what arrives into the new bag ``out_path``.

    ``topics`` maps topic -> type ('std_msgs/msg/Float64MultiArray'), or lists topic names; a
    topic without a type (listed, or mapped to '') is subscribed once a publisher appears. Use
    ``start()``/``close()`` (or a with-block, which also destroys the node) to record on a
    background thread, or ``run()`` to record on the calling thread. Subscriptions are reliable
    (best effort when all of a topic's publishers are), volatile, KEEP_LAST ``qos_depth``. rclpy
    must be initialized; ``node_kwargs`` (e.g. ``context``) go to ``rclpy.node.Node``.
    """

    def __init__(self, out_path: str | Path, topics: Mapping[str, str] | Sequence[str], *, storage: str = 'sqlite3',
                 qos_depth: int = 100, node_name: str = 'pi0_bag_recorder', **node_kwargs: Any) -> None:
        if storage not in STORAGES:
            raise ValueError(f'storage must be one of {STORAGES}, got {storage!r}')
        if not topics:
            raise ValueError('no topics to record')
        self.out_path = Path(out_path)
        if self.out_path.exists():
            raise Pi0Error(f'{self.out_path} exists already: choose a new bag directory')
        super().__init__(node_name, **node_kwargs)
        self.storage, self.qos_depth = storage, qos_depth
        typed = {t: ty for t, ty in topics.items() if ty} if isinstance(topics, Mapping) else {}
        self._untyped = [t for t in topics if t not in typed]
        self.counts: collections.Counter[str] = collections.Counter()  # topic -> messages written
        self._types: dict[str, str] = {}
        self._subscriptions_by_topic: dict[str, Any] = {}
        self._connections: dict[str, Any] = {}
        self._writer: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        for topic, msgtype in typed.items():
            self._subscribe(topic, msgtype)
        if self._untyped:
            self.create_timer(DISCOVERY_PERIOD_S, self._discover)

    # -- subscriptions ---------------------------------------------------------------------
    def _subscribe(self, topic: str, msgtype: str) -> None:
        if msgtype not in jazzy_typestore().types:
            raise Pi0Error(f'cannot record {topic}: {msgtype} is not a ROS 2 Jazzy type known to rosbags')
        try:
            cls = get_message(msgtype)
        except (ModuleNotFoundError, AttributeError, ValueError):
            pkg = msgtype.split('/', 1)[0].replace('_', '-')
            raise Pi0Error(f'cannot record {topic}: install the {msgtype} Python package '
                           f'(pip install ros-jazzy-{pkg})') from None
        publishers = self.get_publishers_info_by_topic(topic)
        best_effort = bool(publishers) and all(
            p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.qos_depth,
                         reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self._types[topic] = msgtype
        self._subscriptions_by_topic[topic] = self.create_subscription(
            cls, topic, lambda data, info: self._on_message(topic, data, info), qos, raw=True)
        if self._writer is not None:
            self._add_connection(topic)

    def _discover(self) -> None:
        if not self._untyped:
            return
        graph = dict(self.get_topic_names_and_types())
        for topic in [t for t in self._untyped if graph.get(t)]:
            self._untyped.remove(topic)
            types = graph[topic]
            if len(types) > 1:
                self.get_logger().warning(f'{topic} has several types {types}: recording {types[0]}')
            self._subscribe(topic, types[0])

    def _add_connection(self, topic: str) -> None:
        self._connections[topic] = self._writer.add_connection(topic, self._types[topic], typestore=jazzy_typestore())

    def _on_message(self, topic: str, data: bytes, info: Mapping[str, Any]) -> None:
        log_time = info.get('received_timestamp') or time.time_ns()
        self._writer.write(self._connections[topic], int(log_time), data)
        self.counts[topic] += 1

    def wait_for_publishers(self, timeout_s: float) -> list[str]:
        """Wait until every topic has a matched publisher or ``timeout_s`` passes; return those without."""
        deadline = time.monotonic() + timeout_s
        while True:
            lonely = list(self._untyped) + [t for t, s in self._subscriptions_by_topic.items()
                                            if s.get_publisher_count() == 0]
            if not lonely or time.monotonic() >= deadline:
                return lonely
            time.sleep(0.01)

    # -- recording -------------------------------------------------------------------------
    def run(self, duration_s: float | None = None) -> dict[str, int]:
        """Record on this thread until ``stop()``, ``duration_s`` or shutdown; finish the bag; return counts."""
        self._stop.clear()
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self)
        end = time.monotonic() + duration_s if duration_s is not None else None
        try:
            with make_writer(self.out_path, self.storage) as writer:
                self._writer = writer
                for topic in self._types:
                    self._add_connection(topic)
                while not self._stop.is_set() and self.context.ok() and (end is None or time.monotonic() < end):
                    executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
                # take what already arrived, then close
                while self.context.ok() and self._drain_one(executor):
                    pass
        finally:
            self._writer = None
            executor.remove_node(self)
            executor.shutdown(timeout_sec=0)
        return dict(self.counts)

    def _drain_one(self, executor: SingleThreadedExecutor) -> bool:
        before = sum(self.counts.values())
        executor.spin_once(timeout_sec=0)
        return sum(self.counts.values()) > before

    def start(self) -> 'BagRecorder':
        """Record on a background thread until ``close()``."""
        if self._thread is not None:
            raise Pi0Error('recorder already started')

        def target() -> None:
            try:
                self.run()
            except BaseException as err:  # re-raised by close()
                self._error = err

        self._thread = threading.Thread(target=target, name='pi0_bag_recorder', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask ``run`` to finish the bag and return (thread/signal safe)."""
        self._stop.set()

    def close(self) -> dict[str, int]:
        """Stop a background recording, wait until the bag is finished and return per-topic counts."""
        self.stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise Pi0Error(f'recording into {self.out_path} failed: {err}') from err
        return dict(self.counts)

    def __enter__(self) -> 'BagRecorder':
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            self.destroy_node()


def record(out_path: str | Path, topics: Mapping[str, str] | Sequence[str], *, storage: str = 'sqlite3',
           duration_s: float | None = None, qos_depth: int = 100, args: Sequence[str] | None = None) -> dict[str, int]:
    """Initialize rclpy and record ``topics`` into ``out_path`` until ``duration_s``, SIGINT or SIGTERM.

    Returns messages written per topic; the bag is finished in every case.
    """
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(args=list(args) if args is not None else None, context=context)  # no rclpy signal handlers
    recorder = None
    try:
        recorder = BagRecorder(out_path, topics, storage=storage, qos_depth=qos_depth, context=context)
        with stop_on_signals(recorder.stop):
            counts = recorder.run(duration_s=duration_s)
        recorder.get_logger().info(f'wrote {sum(counts.values())} messages to {out_path}: {counts}')
        return counts
    finally:
        if recorder is not None:
            recorder.destroy_node()
        context.try_shutdown()
