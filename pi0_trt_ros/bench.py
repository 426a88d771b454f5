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

"""`pi0-trt bench`: latency of one batch-1 policy call through any backend, with peak memory.

The timed region is exactly what the node's cycle pays for inference: `runner.infer()` on the
staged observation (host-to-device copies, the policy, the chunk back to host, one sync).
Each iteration draws fresh noise into the staging buffer outside the timed region.

``--batch 1,2,4,8`` (``run_batch_benchmark``) times `runner.infer_batch(n)` of one batched runner
at each size instead, every row a different observation: p50/p99 latency of the batched call and
observations per second (n / mean latency), the figure batched serving of n robots is about.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from typing import Any, Callable

import numpy as np

from pi0_trt_ros.manifest import PolicyIO
from pi0_trt_ros.runners.base import Runner


def random_full_size_policy(io: PolicyIO, seed: int = 0, device: str = 'cuda') -> Any:
    """Build a full-size Pi0 (PaliGemma 3B + 300M expert, real shapes) with random weights on ``device``."""
    import torch

    from pi0_trt_ros.model.config import Pi0Config
    from pi0_trt_ros.model.pi0 import Pi0Model, Pi0Policy
    from pi0_trt_ros.testing.tiny import randomize_

    with torch.device('meta'):
        model = Pi0Model(Pi0Config.from_variants('gemma_2b', 'gemma_300m'))
    model = model.to_empty(device=device)
    for name, value in model.constant_tables().items():
        setattr(model, name, value.to(device))
    randomize_(model, seed)
    rng = np.random.default_rng(seed)
    stats = [torch.from_numpy(a.astype(np.float32)) for a in (
        rng.normal(size=io.state_dim) * 0.1, rng.uniform(0.5, 1.5, io.state_dim),
        rng.normal(size=io.action_dim) * 0.1, rng.uniform(0.5, 1.5, io.action_dim))]
    return Pi0Policy(model, *stats).to(device)


def cuda_event_ms(fn: Callable[[], object], iters: int) -> np.ndarray:
    """Time ``iters`` calls of ``fn`` (which launches GPU work) with CUDA events; float64 [iters] ms."""
    import torch

    out = np.zeros(iters)
    for i in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out[i] = start.elapsed_time(end)
    return out


def capture_cuda_graph(fn: Callable[[], object]) -> Any:
    """Warm ``fn`` up on a side stream (3 calls), then capture it into a ``torch.cuda.CUDAGraph``."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def stage_random_observation(runner: Runner, seed: int = 0, row: int = 0) -> np.random.Generator:
    """Fill staging (of batch row ``row``) with a plausible observation (noise frames, a 12-token instruction)."""
    rng = np.random.default_rng(seed)
    st = runner.row(row)
    for img in st.images:
        img[...] = rng.integers(0, 256, img.shape, dtype=np.uint8)
    st.state[:] = rng.normal(size=st.state.shape).astype(np.float32)
    st.tokens[:] = 0
    st.tokens[:12] = rng.integers(3, 1000, 12)
    st.tokens[0] = 2
    st.token_mask[:] = False
    st.token_mask[:12] = True
    return rng


def device_memory_peak_mib() -> float | None:
    """Peak device memory seen by PyTorch's allocator (MiB), or the device's used memory via CUDA."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_reserved() / 2 ** 20
    except ImportError:
        pass
    try:
        from cuda.bindings import runtime as cudart

        err, free, total = cudart.cudaMemGetInfo()
        if err == cudart.cudaError_t.cudaSuccess:
            return (total - free) / 2 ** 20
    except ImportError:
        pass
    return None


def device_name() -> str | None:
    """Name of the GPU PyTorch runs on (None without torch or CUDA), to label figures with the card used."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def _run_facts(activate_s: float, device_peak_mib: float | None, finite: bool) -> dict[str, Any]:
    """Return what every benchmark record states besides its timings: start-up, peak memory, sanity, machine."""
    return {
        'activate_s': activate_s,
        'peak_host_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'peak_device_mib': device_peak_mib,
        'actions_finite': finite,
        'host': platform.node(),
        'gpu': device_name(),
    }


def run_benchmark(runner: Runner, iters: int = 200, warmup: int = 20, seed: int = 0) -> dict[str, Any]:
    """Time ``iters`` calls of ``runner.infer()`` (after ``warmup`` untimed ones); returns figures."""
    t0 = time.monotonic()
    runner.activate()
    activate_s = time.monotonic() - t0
    try:
        rng = stage_random_observation(runner, seed)
        noise = runner.staging.noise
        for _ in range(warmup):
            rng.standard_normal(out=noise, dtype=np.float32)
            runner.infer()
        times_ns = np.zeros(iters, dtype=np.int64)
        for i in range(iters):
            rng.standard_normal(out=noise, dtype=np.float32)
            start = time.perf_counter_ns()
            actions = runner.infer()
            times_ns[i] = time.perf_counter_ns() - start
        finite = bool(np.isfinite(actions).all())
    finally:
        device_peak = device_memory_peak_mib()
        runner.deactivate()
    ms = times_ns / 1e6
    return {
        'backend': runner.name,
        'iters': iters,
        'min_ms': float(ms.min()), 'p50_ms': float(np.percentile(ms, 50)), 'p95_ms': float(np.percentile(ms, 95)),
        'p99_ms': float(np.percentile(ms, 99)), 'max_ms': float(ms.max()), 'mean_ms': float(ms.mean()),
        'throughput_hz': float(1000.0 / ms.mean()),
        **_run_facts(activate_s, device_peak, finite),
    }


def _draw_noise(rngs: list[np.random.Generator], noise: list[np.ndarray]) -> None:
    """Fresh flow-matching noise into each row's staging, from that row's generator."""
    for rng, buf in zip(rngs, noise):
        rng.standard_normal(out=buf, dtype=np.float32)


def run_batch_benchmark(runner: Runner, iters: int = 200, warmup: int = 20, seed: int = 0) -> dict[str, Any]:
    """Time ``iters`` calls of ``runner.infer_batch(n)`` for each of the runner's batch sizes n.

    Every row holds its own observation; fresh noise is drawn into the n rows outside the timed
    region. Returns the run's figures with ``sizes``: one entry per batch size.
    """
    t0 = time.monotonic()
    runner.activate()
    activate_s = time.monotonic() - t0
    sizes = []
    try:
        rngs = [stage_random_observation(runner, seed + row, row) for row in range(runner.max_batch)]
        finite = True
        for n in runner.batch_sizes:
            noise = [runner.row(row).noise for row in range(n)]
            for _ in range(warmup):
                _draw_noise(rngs, noise)
                runner.infer_batch(n)
            times_ns = np.zeros(iters, dtype=np.int64)
            for i in range(iters):
                _draw_noise(rngs, noise)
                start = time.perf_counter_ns()
                actions = runner.infer_batch(n)
                times_ns[i] = time.perf_counter_ns() - start
            finite = finite and bool(np.isfinite(actions).all())
            ms = times_ns / 1e6
            sizes.append({'batch': n, 'p50_ms': float(np.percentile(ms, 50)), 'p99_ms': float(np.percentile(ms, 99)),
                          'mean_ms': float(ms.mean()), 'obs_per_s': float(n * 1000.0 / ms.mean())})
    finally:
        device_peak = device_memory_peak_mib()
        runner.deactivate()
    for entry in sizes:
        entry['throughput_x'] = entry['obs_per_s'] / sizes[0]['obs_per_s']
    return {
        'backend': runner.name,
        'iters': iters,
        'sizes': sizes,
        **_run_facts(activate_s, device_peak, finite),
    }


def format_batch_table(results: dict[str, Any], label: str) -> str:
    """Markdown table of ``run_batch_benchmark``'s figures, one row per batch size."""
    if results.get('gpu'):
        label = f'{label} ({results["gpu"]})'
    lines = [f'{label}: {results["iters"]} calls per batch size', '',
             '| batch | p50 ms | p99 ms | mean ms | observations/s | throughput vs first size |',
             '|---:|---:|---:|---:|---:|---:|']
    for e in results['sizes']:
        lines.append(f'| {e["batch"]} | {e["p50_ms"]:.2f} | {e["p99_ms"]:.2f} | {e["mean_ms"]:.2f} | '
                     f'{e["obs_per_s"]:.1f} | {e["throughput_x"]:.2f}x |')
    return '\n'.join(lines)


def format_table(results: dict[str, Any], label: str) -> str:
    cols = ('min_ms', 'p50_ms', 'p95_ms', 'p99_ms', 'max_ms', 'throughput_hz', 'peak_host_rss_mib', 'peak_device_mib')
    head = '| case | ' + ' | '.join(cols) + ' |'
    rule = '|' + '---|' * (len(cols) + 1)
    cells = [f'{results[c]:.2f}' if isinstance(results[c], float) else str(results[c]) for c in cols]
    if results.get('gpu'):
        label = f'{label} ({results["gpu"]})'
    return '\n'.join([head, rule, f'| {label} | ' + ' | '.join(cells) + ' |'])


def report(results: dict[str, Any], label: str) -> str:
    return format_table(results, label) + '\n' + json.dumps({'case': label, **results})
