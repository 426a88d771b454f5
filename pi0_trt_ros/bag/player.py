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

"""Replay a rosbag2 bag over DDS with its recorded inter-message timing.

The bag's CDR bytes are published as they are (``Publisher.publish(bytes)`` is rclpy's raw
publish), so nothing is converted per message and any type with an installed rclpy message
package replays. Each message is scheduled at ``t0 + (log_time - bag_start) / rate`` on
``time.monotonic_ns`` and released by a coarse sleep followed by a busy-wait over the last
millisecond. Reading the bag (and restamping) happens ahead of time in the slack between
messages, never inside the final wait. The player measures, per message, publish start minus
scheduled time and reports p50/p99/max.

With ``restamp`` every message that starts with a ``std_msgs/Header`` gets its stamp moved to
the current wall clock (same offset from the log time as recorded, scaled by ``rate``), so a
node that checks observation age or stamp order sees a live stream, loops included.
"""

from __future__ import annotations

import array
import collections
import dataclasses
from pathlib import Path
import struct
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosidl_runtime_py.utilities import get_message

from pi0_trt_ros.bag.bag_io import bag_summary, has_header, open_bag
from pi0_trt_ros.errors import Pi0Error

SPIN_NS = 1_000_000  # the last 1 ms before a message's time is busy-waited
PREFETCH_GUARD_NS = 2_000_000  # read ahead only while the next message is further away than this
PREFETCH_MAX_BYTES = 64 * 1024 * 1024
PREFETCH_MAX_MESSAGES = 4096
START_DELAY_NS = 20_000_000  # first message goes out this long after play() starts
MAX_SLEEP_NS = 50_000_000  # longest single sleep, so stop() is noticed within this
ACK_TIMEOUT_S = 5.0  # longest wait, after the last message, for subscribers to acknowledge it
_STAMP_LE = struct.Struct('<iI')  # builtin_interfaces/Time right after the 4-byte CDR header
_STAMP_BE = struct.Struct('>iI')


def _restamp(raw: bytes, stamp_ns: int) -> bytes:
    """CDR bytes of a message that starts with a Header, with its stamp set to ``stamp_ns``."""
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    packer = _STAMP_LE if raw[1] & 1 else _STAMP_BE  # encapsulation id: odd = little endian
    view = memoryview(raw)
    return b''.join((view[:4], packer.pack(sec, nanosec), view[12:]))


def _stamp_of(raw: bytes) -> int:
    """Header stamp (ns) of the CDR bytes of a message that starts with a Header."""
    sec, nanosec = (_STAMP_LE if raw[1] & 1 else _STAMP_BE).unpack_from(raw, 4)
    return sec * 1_000_000_000 + nanosec


def _message_class(msgtype: str) -> Any:
    """Return the rclpy message class of 'pkg/msg/Name', or raise saying which package to install."""
    try:
        return get_message(msgtype)
    except (ModuleNotFoundError, AttributeError, ValueError):
        pkg = msgtype.split('/', 1)[0].replace('_', '-')
        raise Pi0Error(f'cannot replay {msgtype}: its Python message package is not installed '
                       f'(pip install ros-jazzy-{pkg}, or source a ROS 2 install that has it)') from None


@dataclasses.dataclass
class ReplayStats:
    """What a replay published and how close to schedule (errors: publish start - scheduled)."""

    messages: int
    per_topic: dict[str, int]  # output topic -> messages published
    loops: int  # passes over the bag that published at least one message
    wall_s: float  # first scheduled message -> last publish
    clock_ticks: int  # /clock messages published
    error_ms: np.ndarray = dataclasses.field(repr=False)  # float64 [messages], ms

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.error_ms, q)) if self.error_ms.size else 0.0

    @property
    def max_ms(self) -> float:
        return float(self.error_ms.max()) if self.error_ms.size else 0.0

    def to_json(self) -> dict[str, Any]:
        return {'messages': self.messages, 'per_topic': dict(self.per_topic), 'loops': self.loops,
                'wall_s': self.wall_s, 'clock_ticks': self.clock_ticks,
                'timing_error_ms': {'p50': self.percentile_ms(50), 'p99': self.percentile_ms(99),
                                    'max': self.max_ms}}

    def summary(self) -> str:
        return (f'replayed {self.messages} messages on {len(self.per_topic)} topics in {self.wall_s:.3f} s '
                f'({self.loops} pass{"es" if self.loops != 1 else ""}); timing error (publish - scheduled) '
                f'p50 {self.percentile_ms(50):.3f} ms, p99 {self.percentile_ms(99):.3f} ms, max {self.max_ms:.3f} ms')


class BagPlayer(Node):
    """Publishes a bag's messages with their recorded timing (``play``); rclpy must be initialized.

    - ``bag_path``: rosbag2 directory (sqlite3 or mcap, from ``ros2 bag record`` or rosbags).
    - ``rate``: playback speed factor (2.0 = twice as fast).
    - ``loop``: start over at the end until ``stop()``, ``duration_s`` or shutdown.
    - ``topics``: bag topics to replay (all when None).
    - ``prefix``: prepended to every output topic name ('/replay' -> '/replay/joint_states').
    - ``remap``: bag topic -> output topic, taking precedence over ``prefix``.
    - ``clock_hz``: publish ``/clock`` (rosgraph_msgs/Clock) at this rate; 0 disables it.
    - ``restamp``: move header stamps to the current wall clock (see the module docstring).
    - ``qos_depth``: KEEP_LAST depth of the reliable, volatile publishers.
    - ``node_name`` and ``node_kwargs`` (e.g. ``context``) go to ``rclpy.node.Node``.
    """

    def __init__(self, bag_path: str | Path, *, rate: float = 1.0, loop: bool = False,
                 topics: Sequence[str] | None = None, prefix: str = '', remap: Mapping[str, str] | None = None,
                 clock_hz: float = 0.0, restamp: bool = False, qos_depth: int = 10,
                 node_name: str = 'pi0_bag_player', **node_kwargs: Any) -> None:
        if rate <= 0:
            raise ValueError(f'rate must be > 0, got {rate}')
        if clock_hz < 0:
            raise ValueError(f'clock_hz must be >= 0, got {clock_hz}')
        self.bag_path = Path(bag_path)
        summary = bag_summary(self.bag_path)
        selected = list(summary.topics) if topics is None else list(topics)
        missing = [t for t in selected if t not in summary.topics]
        if missing:
            raise Pi0Error(f'bag {bag_path} has no topic(s) {missing}; it has {sorted(summary.topics)}')
        clock_type = None
        if clock_hz > 0:
            try:
                from rosgraph_msgs.msg import Clock as clock_type
            except ImportError:
                raise Pi0Error('clock_hz needs rosgraph_msgs: pip install ros-jazzy-rosgraph-msgs '
                               '(or source a ROS 2 install)') from None
        classes = {t: _message_class(summary.topics[t][0]) for t in selected}
        super().__init__(node_name, **node_kwargs)
        self.rate, self.loop, self.restamp, self.clock_hz = rate, loop, restamp, clock_hz
        self._summary = summary
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        prefix = prefix.rstrip('/')
        remap = dict(remap or {})
        self.output_topics = {t: remap.get(t, prefix + t) for t in selected}  # bag topic -> output topic
        self._pubs = {t: self.create_publisher(classes[t], self.output_topics[t], qos) for t in selected}
        self._clock_pub = None
        self._clock_msg = None
        if clock_type is not None:
            self._clock_pub = self.create_publisher(clock_type, '/clock', QoSProfile(
                depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE))
            self._clock_msg = clock_type()
        self._stop = threading.Event()
        self._read_cost_ns = 0  # decaying maximum of one prefetch step
        self._pending_bytes = 0  # CDR bytes read ahead and not yet published
        self._exhausted = False  # the last pass has been read to its end

    def stop(self) -> None:
        """Ask a running ``play`` to return after the current message (thread/signal safe)."""
        self._stop.set()

    def wait_for_subscribers(self, timeout_s: float, settle_s: float = 0.5,
                             give_up: Callable[[], bool] | None = None) -> list[str]:
        """Wait until every output topic has a subscriber or ``timeout_s`` passes; return those without.

        After all matched it waits ``settle_s`` more so the subscribers' side of discovery
        completes too (volatile topics drop what is published before). ``give_up`` ends the wait
        early when it returns True (e.g. the node process it waits for has exited).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            lonely = [self.output_topics[t] for t, p in self._pubs.items() if p.get_subscription_count() == 0]
            if not lonely:
                time.sleep(settle_s)
                return []
            if time.monotonic() >= deadline or (give_up is not None and give_up()):
                return lonely
            time.sleep(0.01)

    def _scheduled(self, reader: Any, t0: int, wall0: int) -> Iterator[tuple[int, str, bytes, int]]:
        """(monotonic target ns, bag topic, CDR bytes, pass index) of every message, pass after pass."""
        start = self._summary.start_ns
        period = self._pass_period_ns()
        conns = [c for c in reader.connections if c.topic in self._pubs]
        restamped = {c.topic for c in conns if self.restamp and has_header(reader.typestore, c.msgtype)}
        rate = self.rate
        n = 0
        while True:
            base = n * period
            for conn, log_time, raw in reader.messages(connections=conns):
                data = bytes(raw)
                if conn.topic in restamped:
                    data = _restamp(data, wall0 + int((_stamp_of(data) - start + base) / rate))
                yield t0 + int((log_time - start + base) / rate), conn.topic, data, n
            if not self.loop:
                return
            n += 1

    def _pass_period_ns(self) -> int:
        """Bag time from one pass's start to the next: the bag's span plus its mean message gap."""
        span = self._summary.end_ns - self._summary.start_ns
        return span + max(span // max(self._summary.message_count - 1, 1), 1)

    def _prefetch(self, source: Iterator[tuple[int, str, bytes, int]], pending: collections.deque) -> bool:
        """Read one message into ``pending``; False when the bag is exhausted."""
        t = time.monotonic_ns()
        item = next(source, None)
        if item is None:
            return False
        pending.append(item)
        self._pending_bytes += len(item[2])
        self._read_cost_ns = max(int(self._read_cost_ns * 0.99), time.monotonic_ns() - t)
        return True

    def _wait_until(self, target_ns: int, source: Iterator[tuple[int, str, bytes, int]],
                    pending: collections.deque) -> None:
        """Return at ``target_ns`` (monotonic): prefetch while there is slack, sleep, then spin."""
        while True:
            remaining = target_ns - time.monotonic_ns()
            if remaining <= SPIN_NS or self._stop.is_set():
                break
            if (not self._exhausted and remaining > self._read_cost_ns + PREFETCH_GUARD_NS
                    and len(pending) < PREFETCH_MAX_MESSAGES and self._pending_bytes < PREFETCH_MAX_BYTES):
                self._exhausted = not self._prefetch(source, pending)
                continue
            time.sleep(min(remaining - SPIN_NS, MAX_SLEEP_NS) / 1e9)
        while time.monotonic_ns() < target_ns:
            pass

    def _publish_clock(self, tick_ns: int, t0: int, wall0: int) -> None:
        """Publish /clock for monotonic time ``tick_ns``: bag time, or wall time when restamping."""
        elapsed = tick_ns - t0
        if self.restamp:
            now = wall0 + elapsed
        else:
            now = self._summary.start_ns + int(elapsed * self.rate) % self._pass_period_ns()
        self._clock_msg.clock.sec, self._clock_msg.clock.nanosec = divmod(now, 1_000_000_000)
        self._clock_pub.publish(self._clock_msg)

    def play(self, duration_s: float | None = None) -> ReplayStats:
        """Publish the bag (every pass when looping) and return the timing statistics.

        Stops early on ``stop()``, after ``duration_s`` seconds of playback, or on shutdown.
        Before returning it waits (up to ``ACK_TIMEOUT_S``) until subscribers have acknowledged
        everything published, so destroying the player right after cannot drop the last messages.
        """
        self._stop.clear()
        errors = array.array('q')
        counts: collections.Counter[str] = collections.Counter()
        pending: collections.deque = collections.deque()
        self._pending_bytes, self._exhausted = 0, False
        ticks, passes = 0, 0
        clock_period = int(1e9 / self.clock_hz) if self._clock_pub is not None else 0
        with open_bag(self.bag_path) as reader:
            t0 = time.monotonic_ns() + START_DELAY_NS
            wall0 = time.time_ns() + START_DELAY_NS
            stop_at = t0 + int(duration_s * 1e9) if duration_s is not None else None
            source = self._scheduled(reader, t0, wall0)
            next_tick, last_pub = t0, t0
            try:
                while not self._stop.is_set() and self.context.ok():
                    if not pending and (self._exhausted or not self._prefetch(source, pending)):
                        break
                    target, topic, data, n = pending[0]
                    if stop_at is not None and target > stop_at:
                        break
                    while clock_period and next_tick <= target and not self._stop.is_set():
                        self._wait_until(next_tick, source, pending)
                        self._publish_clock(next_tick, t0, wall0)
                        ticks += 1
                        next_tick += clock_period
                    self._wait_until(target, source, pending)
                    if self._stop.is_set():
                        break
                    now = time.monotonic_ns()
                    self._pubs[topic].publish(data)
                    errors.append(now - target)
                    pending.popleft()
                    self._pending_bytes -= len(data)
                    counts[self.output_topics[topic]] += 1
                    passes = n + 1
                    last_pub = time.monotonic_ns()
            finally:
                source.close()
        for pub in self._pubs.values():
            pub.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
        err = np.frombuffer(errors, dtype=np.int64).astype(np.float64) / 1e6
        return ReplayStats(messages=len(errors), per_topic=dict(counts), loops=passes,
                           wall_s=max(last_pub - t0, 0) / 1e9, clock_ticks=ticks, error_ms=err)
