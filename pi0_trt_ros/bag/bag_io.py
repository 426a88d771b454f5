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

"""Read and write rosbag2 bags (sqlite3 or mcap) with the pure-Python ``rosbags`` library.

Bags written here carry their message definitions, so ``ros2 bag play``/``info`` (Jazzy) and
``rosbags`` read them; bags written by ``ros2 bag record`` read here the same way. Times are
integer nanoseconds throughout: *log time* is the bag's per-message timestamp (receive time
for ``ros2 bag record``), *stamp* a message's ``header.stamp``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path
import signal
import threading
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores
from rosbags.typesys.store import Typestore
import yaml

from pi0_trt_ros.errors import Pi0Error

STORAGES = ('sqlite3', 'mcap')
_PLUGINS = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}
BAG_VERSION = 9  # rosbag2 metadata version written by Jazzy


class BagMessage(NamedTuple):
    """One message of a bag, as ``read_bag`` yields it."""

    topic: str
    msgtype: str  # e.g. 'sensor_msgs/msg/Image'
    log_time_ns: int
    msg: Any  # rosbags message object, or the CDR bytes when read with raw=True


@dataclasses.dataclass(frozen=True)
class BagSummary:
    """What a bag holds: storage, time span and per-topic type and message count."""

    path: Path
    storage: str
    start_ns: int  # first log time
    end_ns: int  # last log time
    topics: dict[str, tuple[str, int]]  # topic -> (msgtype, message count)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def message_count(self) -> int:
        return sum(count for _, count in self.topics.values())

    def __str__(self) -> str:
        lines = [f'{self.path} ({self.storage}): {self.message_count} messages over {self.duration_s:.3f} s']
        width = max((len(t) for t in self.topics), default=0)
        for topic, (msgtype, count) in sorted(self.topics.items()):
            lines.append(f'  {topic:<{width}}  {count:>6}  {msgtype}')
        return '\n'.join(lines)


@functools.lru_cache(maxsize=1)
def jazzy_typestore() -> Typestore:
    """Return the ROS 2 Jazzy message types known to ``rosbags`` (shared: do not register into it)."""
    return get_typestore(Stores.ROS2_JAZZY)


def make_writer(path: str | Path, storage: str = 'sqlite3') -> Writer:
    """Return an unopened rosbags ``Writer`` for a new bag directory; use it as a context manager."""
    if storage not in _PLUGINS:
        raise ValueError(f'storage must be one of {STORAGES}, got {storage!r}')
    path = Path(path)
    if path.exists():
        raise Pi0Error(f'{path} exists already: rosbag2 bags are directories that are never overwritten; '
                       'remove it or choose another path')
    path.parent.mkdir(parents=True, exist_ok=True)
    return Writer(path, version=BAG_VERSION, storage_plugin=_PLUGINS[storage])


def bag_storage(path: str | Path) -> str:
    """Return the storage plugin of a bag directory ('sqlite3' or 'mcap'), from its metadata.yaml."""
    meta = Path(path) / 'metadata.yaml'
    if not meta.is_file():
        raise Pi0Error(f'{path} is not a rosbag2 bag: {meta.name} not found')
    info = yaml.safe_load(meta.read_text())['rosbag2_bagfile_information']
    return str(info['storage_identifier'])


@contextlib.contextmanager
def open_bag(path: str | Path) -> Iterator[AnyReader]:
    """Open one bag directory with rosbags' ``AnyReader`` (types from the bag, else Jazzy's)."""
    path = Path(path)
    bag_storage(path)  # fails with a clear message when this is not a bag
    reader = AnyReader([path], default_typestore=jazzy_typestore())
    try:
        reader.open()
    except AnyReaderError as err:
        raise Pi0Error(f'cannot open bag {path}: {err}') from None
    try:
        yield reader
    finally:
        reader.close()


def bag_summary(path: str | Path) -> BagSummary:
    """Return the storage, time span and per-topic type and count of a bag."""
    with open_bag(path) as reader:
        topics = {t: (info.msgtype or '', info.msgcount) for t, info in reader.topics.items()}
        # rosbags' end_time is one past the last message
        start, end = (reader.start_time, reader.end_time - 1) if reader.message_count else (0, 0)
    return BagSummary(Path(path), bag_storage(path), start, end, topics)


def read_bag(path: str | Path, topics: Iterable[str] | None = None, *, raw: bool = False) -> Iterator[BagMessage]:
    """Yield a bag's messages in log-time order, deserialized by rosbags or (``raw``) as CDR bytes.

    ``topics`` restricts to those topics (all when None); a topic the bag lacks is an error.
    """
    with open_bag(path) as reader:
        connections = reader.connections
        if topics is not None:
            wanted = set(topics)
            missing = wanted - {c.topic for c in connections}
            if missing:
                raise Pi0Error(f'bag {path} has no topic(s) {sorted(missing)}; it has {sorted(reader.topics)}')
            connections = [c for c in connections if c.topic in wanted]
        if not connections:
            return
        for conn, log_time, data in reader.messages(connections=connections):
            if raw:
                yield BagMessage(conn.topic, conn.msgtype, log_time, bytes(data))
            else:
                yield BagMessage(conn.topic, conn.msgtype, log_time, reader.deserialize(data, conn.msgtype))


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on SIGINT/SIGTERM inside the block (main thread only), then restore the handlers."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def has_header(typestore: Typestore, msgtype: str) -> bool:
    """Tell whether ``msgtype`` starts with a ``std_msgs/Header`` (its stamp is then CDR bytes 4..12)."""
    fields = typestore.fielddefs[msgtype][1]
    return bool(fields) and fields[0][0] == 'header' and fields[0][1][1] == 'std_msgs/msg/Header'


def stamp_ns(stamp: Any) -> int:
    """Convert a ``builtin_interfaces/Time`` (rosbags or rclpy object) to integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
