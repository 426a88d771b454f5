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

"""DDS domain slots: concurrent runs on one machine (two test suites, a demo beside them) stay apart.

``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` keeps DDS on loopback, but two runs on the same host
that use the same ``ROS_DOMAIN_ID`` still hear each other (one run's bag player feeds the other's
node). So every test module, the demo and the DDS benchmarks name a *base* id (36..99, one per
module, as before) and use ``domain_id(base)``: the base shifted by this run's slot. The first
process of a run claims the lowest free slot by holding an exclusive ``flock`` on
``/tmp/pi0_trt_ros_dds_slot_<k>.lock`` until it exits, and exports the slot in
``PI0_TRT_ROS_DDS_SLOT``; its child processes (``ros2 launch``, the node, a benchmark run as a
subprocess, player processes) inherit the variable and so the same domains. A single run gets
slot 0, the ids it always had. When every slot is taken, the claim waits for one to be freed and
says so, rather than silently sharing a domain.

Limits: Fast DDS on Linux takes UDP ports 7400 + 250 x domain (+ participant offsets), so domain
ids stop at 232. With bases 36..99 and a stride of 64, slot k uses 36 + 64k .. 99 + 64k, and three
slots (ids up to 227) fit. Ids above 101 lie in Linux's default ephemeral port range, where a port
may already be taken by some other socket; Fast DDS then moves the participant to the next free
port, so slots 1 and 2 work, slot 0 alone uses the ids ROS 2 recommends.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
import sys
import time
from typing import Callable

SLOT_ENV = 'PI0_TRT_ROS_DDS_SLOT'  # the slot of this process tree, set by the process that claimed it
SLOT_COUNT = 3  # concurrent runs per machine
SLOT_STRIDE = 64  # domain ids between one slot's copy of a base id and the next slot's
BASE_IDS = range(36, 100)  # the base ids modules may name: slot k maps them to 36 + 64k .. 99 + 64k
LOCK_DIR = Path('/tmp')
WAIT_POLL_S = 1.0  # how often a claim that waits for a free slot tries again

_held_fds: dict[Path, int] = {}  # lock file -> open fd holding its flock (kept open for the process's life)


def lock_path(slot: int, lock_dir: Path = LOCK_DIR) -> Path:
    """Return the lock file whose exclusive flock marks ``slot`` as taken."""
    return lock_dir / f'pi0_trt_ros_dds_slot_{slot}.lock'


def _try_lock(path: Path) -> int | None:
    """Open ``path`` and take its exclusive flock without blocking; return the fd, or None if held elsewhere."""
    try:
        fd = os.open(path, os.O_RDONLY)  # read-only: a lock file another user created can be locked too
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd  # non-inheritable (Python's default): children do not hold the lock, they inherit SLOT_ENV


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def claim_slot(lock_dir: Path = LOCK_DIR, wait: bool = True, log: Callable[[str], None] = _to_stderr) -> int:
    """Take the lowest free slot and hold it until this process exits; return it.

    With every slot taken, wait (polling, with one message saying why) or, with ``wait=False``,
    raise: sharing a slot would let two runs' DDS traffic cross.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    told = False
    while True:
        for slot in range(SLOT_COUNT):
            path = lock_path(slot, lock_dir)
            fd = _try_lock(path)
            if fd is not None:
                _held_fds[path] = fd
                return slot
        text = (f'all {SLOT_COUNT} DDS domain slots are held by other runs on this machine (lock files '
                f'{lock_path(0, lock_dir)} .. {lock_path(SLOT_COUNT - 1, lock_dir).name}; `fuser` on them names '
                f'the processes)')
        if not wait:
            raise RuntimeError(f'{text}: wait for one of those runs to end, or set {SLOT_ENV}=<slot> to share '
                               f'the domains of that slot knowingly')
        if not told:
            log(f'{text}; waiting for one to be released')
            told = True
        time.sleep(WAIT_POLL_S)


def process_tree_slot(lock_dir: Path = LOCK_DIR) -> int:
    """Return this run's slot: inherited from ``SLOT_ENV``, else claimed here and exported to it."""
    inherited = os.environ.get(SLOT_ENV)
    if inherited is not None:
        if not inherited.isdigit() or int(inherited) >= SLOT_COUNT:
            raise ValueError(f'{SLOT_ENV}={inherited!r} is not a DDS domain slot: use 0..{SLOT_COUNT - 1}, or unset '
                             f'it to claim a free one')
        return int(inherited)
    slot = claim_slot(lock_dir)
    os.environ[SLOT_ENV] = str(slot)
    return slot


def domain_id(base: int) -> int:
    """Return the ROS domain id this run uses for ``base``: base + slot x SLOT_STRIDE (claims the slot on first use)."""
    if base not in BASE_IDS:
        raise ValueError(f'DDS base domain id {base} is outside {BASE_IDS.start}..{BASE_IDS.stop - 1}: pick a free '
                         f'one in that range (slots shift it by {SLOT_STRIDE}, and Fast DDS stops at 232)')
    return base + process_tree_slot() * SLOT_STRIDE


def nodes_on_domain(domain_id: int, wait_s: float = 2.0) -> list[str]:
    """Return the ROS nodes already on ``domain_id`` (full names), looking for up to ``wait_s`` of discovery.

    A slot's lock goes with the process that claimed it, but nodes that process started outlive a
    kill of it (a timeout's SIGTERM, say); the next run claims the slot again and shares their
    domain, and their commands and statuses mix with its own. A benchmark checks here first.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    context = Context()
    rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    try:
        probe = rclpy.create_node(f'pi0_domain_probe_{os.getpid()}', context=context)
        until = time.monotonic() + wait_s
        while True:
            names = [f'{ns.rstrip("/")}/{name}' for name, ns in probe.get_node_names_and_namespaces()
                     if name != probe.get_name()]
            if names or time.monotonic() >= until:
                probe.destroy_node()
                return sorted(names)
            time.sleep(0.1)
    finally:
        context.try_shutdown()
