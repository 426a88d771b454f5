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

"""What the fleet node reports on ``/diagnostics`` besides each robot's own statuses.

Two statuses, named after the fleet node: ``<fleet>: batcher`` (aggregate throughput, how busy
the runner was, the batch-size histogram with each size's mean batch time, and per robot its
latency and misses, read from the robot's deadline monitor) and ``<fleet>: gpu`` (utilization and
memory of the process's GPU through NVML). NVML comes from the optional ``pynvml`` module
(``pip install nvidia-ml-py``); without it, or on a CPU, the GPU status says why there are no
figures and carries none. Apart from NVML, every figure is a function of plain values and a
given time, as in ``diagnostics.py``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from diagnostic_msgs.msg import DiagnosticStatus

from pi0_trt_ros.node.batcher import BatchStats
from pi0_trt_ros.node.chunk_monitor import ChunkMonitor
from pi0_trt_ros.node.deadline import DeadlineMonitor, Level
from pi0_trt_ros.node.diagnostics import diagnostic_status, KeyValues

MIB = 1 << 20


def robot_key_values(name: str, monitor: DeadlineMonitor | ChunkMonitor) -> KeyValues:
    """One robot's latency (p50/p99 over its window, ms) and misses, keys prefixed ``robot.<name>.``.

    every_set: compute time per cycle against ``deadline_ms``; chunk mode: chunk latency (wanted or
    set handed over -> chunk ready), chunks late and control ticks without their command.
    """
    key = f'robot.{name}'
    if isinstance(monitor, DeadlineMonitor):
        s = monitor.stats('compute')
        return [(f'{key}.cycles', str(monitor.cycles)), (f'{key}.compute_ms_p50', f'{s.p50:.3f}'),
                (f'{key}.compute_ms_p99', f'{s.p99:.3f}'), (f'{key}.deadline_misses', str(monitor.misses))]
    s = monitor.stats('chunk_latency')
    return [(f'{key}.chunks', str(monitor.chunks)), (f'{key}.chunk_latency_ms_p50', f'{s.p50:.3f}'),
            (f'{key}.chunk_latency_ms_p99', f'{s.p99:.3f}'), (f'{key}.chunks_late', str(monitor.chunks_late)),
            (f'{key}.ticks_missed', str(monitor.ticks_missed))]


class Throughput:
    """Observations per second and runner busy fraction over the time since the previous ``update``."""

    def __init__(self, start_ns: int) -> None:
        self._start_ns = self._last_ns = start_ns
        self._last = BatchStats({}, {}, 0, 0, 0)

    def update(self, now_ns: int, stats: BatchStats) -> KeyValues:
        """Return the figures since the last update and since the start; remember ``stats`` for the next."""
        span_s = max(now_ns - self._last_ns, 1) / 1e9
        total_s = max(now_ns - self._start_ns, 1) / 1e9
        pairs = [('observations', str(stats.observations)),
                 ('observations_per_s', f'{(stats.observations - self._last.observations) / span_s:.2f}'),
                 ('observations_per_s_since_start', f'{stats.observations / total_s:.2f}'),
                 ('runner_busy_fraction', f'{(stats.busy_ns - self._last.busy_ns) / 1e9 / span_s:.3f}'),
                 ('batches', str(sum(stats.histogram.values()))), ('failed_batches', str(stats.failed_batches))]
        for size in sorted(stats.histogram):
            count = stats.histogram[size]
            pairs.append((f'batch_size.{size}', str(count)))
            pairs.append((f'batch_size.{size}.mean_ms', f'{stats.batch_ns[size] / count / 1e6:.3f}'))
        self._last, self._last_ns = stats, now_ns
        return pairs


def batcher_status(name: str, hardware_id: str, robots: Sequence[str], batch_sizes: Sequence[int],
                   max_wait_ms: float, throughput: KeyValues,
                   monitors: Sequence[DeadlineMonitor | ChunkMonitor]) -> DiagnosticStatus:
    """Return the ``<fleet>: batcher`` status: settings, ``Throughput.update``'s figures, then each robot's.

    WARN while batches fail (each robot in them holds, as on an inference error).
    """
    figures = dict(throughput)
    failed = int(figures.get('failed_batches', '0'))
    level = Level.WARN if failed else Level.OK
    message = (f'{len(robots)} robots, {figures.get("observations_per_s", "0")} observations/s'
               f'{f", {failed} batches failed" if failed else ""}')
    pairs = [('robots', ','.join(robots)), ('batch_sizes', ','.join(map(str, batch_sizes))),
             ('max_wait_ms', f'{max_wait_ms:g}')] + list(throughput)
    for robot, monitor in zip(robots, monitors):
        pairs += robot_key_values(robot.strip('/'), monitor)
    return diagnostic_status(f'{name}: batcher', hardware_id, level, message, pairs)


class GpuMonitor:
    """Utilization and memory of one GPU through NVML, or why there are none (``pynvml`` absent, a CPU)."""

    def __init__(self, device: str, gpu: int | str | None) -> None:
        """``device``: where the runner runs ('cpu', 'cuda:N'); ``gpu``: NVML's index or UUID of it (None: no GPU)."""
        self.device = device
        self._nvml: Any = None
        self._handle: Any = None
        self.unavailable = ''  # why there are no figures ('' when NVML answers)
        if gpu is None:
            self.unavailable = f'runner on {device}: no GPU to report'
            return
        try:
            import pynvml
        except ImportError:
            self.unavailable = 'NVML not available: pynvml is not installed (pip install nvidia-ml-py)'
            return
        try:
            pynvml.nvmlInit()
            self._handle = (pynvml.nvmlDeviceGetHandleByIndex(gpu) if isinstance(gpu, int)
                            else pynvml.nvmlDeviceGetHandleByUUID(gpu))
            self._nvml = pynvml
        except Exception as err:  # pynvml.NVMLError and its many subclasses
            self.unavailable = f'NVML not available for {device} (GPU {gpu}): {err}'

    def close(self) -> None:
        """Release NVML. Idempotent."""
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None

    def status(self, name: str, hardware_id: str) -> DiagnosticStatus:
        """Return the ``<fleet>: gpu`` status: utilization %, memory used, total and this process's, or why none."""
        if self._nvml is None:
            return diagnostic_status(f'{name}: gpu', hardware_id, Level.OK, self.unavailable,
                                     [('device', self.device), ('nvml', 'unavailable')])
        nvml, handle = self._nvml, self._handle
        try:
            util = nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpu_name = nvml.nvmlDeviceGetName(handle)
            mine = [p.usedGpuMemory for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                    if p.pid == os.getpid() and p.usedGpuMemory is not None]
        except Exception as err:  # a GPU lost or reset under the process
            return diagnostic_status(f'{name}: gpu', hardware_id, Level.WARN, f'NVML query failed: {err}',
                                     [('device', self.device)])
        pairs = [('device', self.device), ('name', gpu_name if isinstance(gpu_name, str) else gpu_name.decode()),
                 ('utilization_percent', str(util.gpu)), ('memory_utilization_percent', str(util.memory)),
                 ('memory_used_mib', f'{memory.used / MIB:.0f}'), ('memory_total_mib', f'{memory.total / MIB:.0f}'),
                 ('process_memory_mib', f'{sum(mine) / MIB:.0f}' if mine else 'unknown')]
        return diagnostic_status(f'{name}: gpu', hardware_id, Level.OK,
                                 f'{util.gpu}% busy, {memory.used / MIB:.0f} of {memory.total / MIB:.0f} MiB', pairs)
