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

"""The process settings the node changes for steady control cycles: GIL switch interval, malloc, GC, scheduling.

Each is a parameter (``switch_interval_ms``, ``tune_malloc``, ``gc_mode``, ``realtime_priority``)
because each changes the whole process or its threads, not just the node: an application embedding
the node may want its own.

* GIL: two busy threads (the executor draining DDS, the control thread) share the GIL; a thread
  waiting for it gets it after at most the switch interval (Python's default 5 ms, a quarter of
  a 20 ms cycle).
* malloc: each received frame (0.9 MB at 640x480) is allocated and freed several times on its way
  from DDS to Python; above glibc's mmap threshold every allocation is a fresh mapping whose
  pages fault in on first touch (~140 faults per frame).
* GC: a full collection walks every object of the model and its buffers (tens of ms); after
  start-up those objects are frozen out of the collector's reach, automatic collection is off,
  and the young generations are collected in the control thread's idle time instead.
* Scheduling: on a loaded robot computer another process can take the core in the middle of a
  cycle (a whole time slice, milliseconds). With ``realtime_priority`` the node's own threads run
  SCHED_FIFO: the control thread, the sensor thread and chunk mode's inference thread, all at one
  priority, so that none of them waits for the GIL behind a preempted lower-priority thread of the
  node. They block whenever they have nothing to do, so other processes keep the rest.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import threading
from typing import Sequence

MALLOC_MMAP_THRESHOLD = 64 << 20  # bytes: allocations below come from the heap, not a fresh mmap
MALLOC_TRIM_THRESHOLD = 256 << 20  # bytes: free heap kept before returning memory to the OS


def tune_malloc() -> bool:
    """Make glibc serve multi-megabyte messages from its heap instead of fresh mmaps.

    A fixed 64 MiB threshold and a 256 MiB trim threshold keep frame-sized memory in the heap,
    reused. Returns False where mallopt is unavailable.
    """
    name = ctypes.util.find_library('c')
    if sys.platform != 'linux' or name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, 'mallopt'):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)
                and libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD))


def set_realtime(thread: threading.Thread, priority: int) -> bool:
    """Make a started ``thread`` SCHED_FIFO at ``priority`` (Linux); False when refused or not available."""
    if not hasattr(os, 'sched_setscheduler') or thread.native_id is None:
        return False
    try:
        os.sched_setscheduler(thread.native_id, os.SCHED_FIFO, os.sched_param(priority))  # a thread id, on Linux
    except OSError:  # PermissionError: not allowed
        return False
    return True


class RuntimeTuning:
    """Applies the node's interpreter settings after start-up and runs the GC where ``gc_mode`` says.

    ``gc_mode`` 'tuned' freezes and disables the collector (``apply``), collects young
    generations from the control thread between cycles (``after_cycle``) and the executor's
    garbage with each diagnostics period (``between_diagnostics``), and re-enables it on
    ``release``; 'default' leaves Python's GC alone and makes those calls do nothing.
    """

    def __init__(self, gc_mode: str, switch_interval_ms: float, malloc: bool, realtime_priority: int = 0) -> None:
        if gc_mode not in ('tuned', 'default'):
            raise ValueError(f"gc_mode must be 'tuned' or 'default', got {gc_mode!r}")
        self.tuned_gc = gc_mode == 'tuned'
        self.switch_interval_ms = switch_interval_ms  # 0: leave the interpreter's
        self.malloc = malloc
        self.realtime_priority = realtime_priority  # SCHED_FIFO priority of the node's threads; 0: leave them
        self._applied = False

    def apply(self) -> list[str]:
        """Set the switch interval and malloc thresholds, freeze and disable the GC; return warnings."""
        warnings = []
        if self.switch_interval_ms > 0:
            sys.setswitchinterval(self.switch_interval_ms / 1e3)
        if self.malloc and not tune_malloc():
            warnings.append('tune_malloc: mallopt is not available here (not glibc?); left as is')
        if self.tuned_gc:
            # Everything allocated so far (modules, model, buffers) is long-lived: freeze it out of
            # the collector's reach; then collect only young generations, in idle time.
            gc.collect()
            gc.freeze()
            gc.disable()
        self._applied = True
        return warnings

    def realtime(self, threads: Sequence[threading.Thread]) -> list[str]:
        """Run ``threads`` (started) SCHED_FIFO at ``realtime_priority``; return a warning if the OS refused."""
        if not self.realtime_priority:
            return []
        for thread in threads:
            if not set_realtime(thread, self.realtime_priority):
                return [f'realtime_priority {self.realtime_priority}: the OS refused SCHED_FIFO for thread '
                        f'{thread.name} (needs CAP_SYS_NICE or an rtprio limit of at least {self.realtime_priority}, '
                        'e.g. `@realtime - rtprio 98` in /etc/security/limits.conf and the user in group realtime); '
                        "the node's threads keep the default scheduling"]
        return []

    def after_cycle(self, cycles: int) -> None:
        """Control thread, idle after a cycle: collect generation 0 (every 64th cycle also 1), ~tens of µs."""
        if self.tuned_gc:
            gc.collect(0 if cycles % 64 else 1)

    def between_diagnostics(self) -> None:
        """Executor thread, each diagnostics period: its garbage (gen 2 holds only post-freeze survivors)."""
        if self.tuned_gc:
            gc.collect(1)

    def release(self) -> None:
        """Turn automatic GC back on (the node is closing; the process may go on). Idempotent."""
        if self.tuned_gc and self._applied:
            gc.enable()
        self._applied = False
