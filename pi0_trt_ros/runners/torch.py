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

"""PyTorch backend: eager or CUDA-graph, fp32/fp16/bf16; the fast path on GPUs without TensorRT.

On CUDA, staging buffers are pinned host memory allocated once with ``cudaHostAlloc`` through
cuda-python (the same primary context PyTorch uses) and the whole cycle (host-to-device copies,
the policy call, device-to-host copy of the chunk) is captured once into a CUDA graph, so a
cycle is one graph launch and one stream synchronization. On CPU it runs eagerly.

Batched (``batch_sizes`` beyond (1,)): host and device buffers are allocated once for the largest
size, and each size gets its own CUDA graph (own memory pool: graphs never share intermediates)
over the first rows of those buffers; on CPU the same per-size views run eagerly. The fast path
(``fast``, fused Triton kernels) serves every size.
"""

from __future__ import annotations

import logging
from pathlib import Path
import time
from typing import Any, Sequence

import numpy as np

from pi0_trt_ros.batch_sizes import SINGLE
from pi0_trt_ros.errors import BackendUnavailableError, RunnerError
from pi0_trt_ros.manifest import PolicyIO
from pi0_trt_ros.runners.base import Runner, Staging
from pi0_trt_ros.runners.registry import DEFAULT_EXPERT_GEMM, TORCH_DTYPES, TORCH_MODES

LOG = logging.getLogger(__name__)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise BackendUnavailableError('the torch backend needs PyTorch: pip install "pi0_trt_ros[torch]"') from None
    return torch


class TorchRunner(Runner):
    """Runs the PyTorch `Pi0Policy` built from a checkpoint (or given directly)."""

    name = 'torch'

    def __init__(self, checkpoint: str | Path | None = None, arch: str | Path | None = None, *,
                 policy: Any = None, io: PolicyIO | None = None, device: str = 'cuda', dtype: str = 'fp16',
                 mode: str = 'cuda_graph', warmup: int = 3, compiled: bool = False, fast: bool = False,
                 expert_gemm: str = DEFAULT_EXPERT_GEMM, prefix_fp8: bool = False,
                 batch_sizes: Sequence[int] = SINGLE) -> None:
        if dtype not in TORCH_DTYPES or mode not in TORCH_MODES:
            raise RunnerError(f'torch runner: dtype must be one of {TORCH_DTYPES}, mode one of {TORCH_MODES}')
        if fast and compiled:
            raise RunnerError('torch runner: choose the fast path (Triton kernels) or torch.compile, not both')
        if prefix_fp8 and not (fast and dtype == 'bf16'):
            raise RunnerError('torch runner: prefix_fp8 (e4m3 prefix GEMMs) is part of the fast path in bf16: '
                              'set fast: true and dtype: bf16')
        if device == 'cpu' and mode == 'cuda_graph':
            mode = 'eager'
        if policy is None:
            if checkpoint is None:
                raise RunnerError('torch runner needs --checkpoint (or a policy object)')
            from pi0_trt_ros.checkpoint import load_checkpoint

            t0 = time.monotonic()
            ckpt = load_checkpoint(checkpoint, arch)
            LOG.info('checkpoint mapped and checked in %.2f s (%.2f GB, read as the weights move)',
                     time.monotonic() - t0, sum(w.nbytes for w in ckpt.weights.values()) / 1e9)
            self._source: Any = ckpt
            io = ckpt.io
        else:
            if io is None:
                raise RunnerError('torch runner: a policy object needs its PolicyIO')
            self._source = policy
        super().__init__(io, batch_sizes)
        self.device, self.dtype, self.mode, self.warmup = device, dtype, mode, warmup
        self.compiled = compiled  # torch.compile the vision tower, the prefix and the denoise step
        self.fast = fast  # run `FastPi0Policy` (fused Triton kernels, batch 1) over the same weights
        self.expert_gemm = expert_gemm  # fast path's denoise-step GEMMs: one of model/fast.py's EXPERT_GEMMS
        self.prefix_fp8 = prefix_fp8  # fast path's VLM GEMMs in e4m3
        self.warmup_seconds = 0.0
        self._policy: Any = None  # the plain `Pi0Policy`
        self._fast_policy: Any = None  # `FastPi0Policy` over the same weights, when ``fast``
        self._host: dict[str, Any] = {}  # input name -> host tensor [max_batch, ...]
        self._dev: dict[str, Any] = {}  # input name -> device tensor [max_batch, ...] (CPU: the host tensor)
        self._host_out: Any = None  # [max_batch, chunk, action_dim]
        self._views: dict[int, tuple[list[Any], list[Any], Any]] = {}  # batch -> (host in, device in, host out)
        self._out_views: dict[int, np.ndarray] = {}  # batch -> numpy view [batch, chunk, action_dim]
        self._pinned: list[Any] = []
        self._graphs: dict[int, Any] = {}  # batch -> CUDAGraph of its whole cycle
        self._stream: Any = None

    def _activate_impl(self) -> Staging:
        torch = _torch()
        if self.device.startswith('cuda') and not torch.cuda.is_available():
            raise BackendUnavailableError('torch backend: CUDA requested but torch.cuda.is_available() is False')
        tdtype = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}[self.dtype]
        if self.dtype == 'fp32':  # fp32 means parity: no TF32 in convolutions or matmuls
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        t0 = time.monotonic()
        if hasattr(self._source, 'build_policy'):
            self._policy = self._source.build_policy(dtype=tdtype, device=self.device)
        else:
            from pi0_trt_ros.checkpoint import cast_matmul_weights

            self._policy = self._source.to(self.device).eval()
            if tdtype is not None:
                cast_matmul_weights(self._policy, tdtype)
        LOG.info('weights on %s as %s in %.2f s', self.device, self.dtype, time.monotonic() - t0)
        if self.compiled:
            self._compile_hot_functions(torch)
        if self.fast:
            from pi0_trt_ros.kernels import require_triton

            require_triton()
            from pi0_trt_ros.model.fast import FastPi0Policy

            self._fast_policy = FastPi0Policy(self._policy, expert_gemm=self.expert_gemm, prefix_fp8=self.prefix_fp8)
        cuda = self.device.startswith('cuda')
        for name, (shape, dtype) in self.io.input_specs(self.max_batch).items():
            self._host[name] = self._host_tensor(shape, dtype, cuda)
            self._dev[name] = torch.zeros_like(self._host[name], device=self.device) if cuda else self._host[name]
        (out_shape, out_dtype), = self.io.output_specs(self.max_batch).values()
        self._host_out = self._host_tensor(out_shape, out_dtype, cuda)
        for batch in self.batch_sizes:  # views of the first rows, made once: the cycle slices nothing
            self._views[batch] = ([t[:batch] for t in self._host.values()], [t[:batch] for t in self._dev.values()],
                                  self._host_out[:batch])
            self._out_views[batch] = self._host_out.numpy()[:batch]
        staging = Staging.over(self.io, {n: t.numpy() for n, t in self._host.items()})
        staging.buffers['token_mask'][:, 0] = True  # a valid prefix for warm-up and capture
        t0 = time.monotonic()
        if cuda:
            self._stream = torch.cuda.Stream(device=self.device)
            with torch.cuda.stream(self._stream):
                for batch in self.batch_sizes:
                    for _ in range(self.warmup):
                        self._cycle(batch)
            self._stream.synchronize()
            if self.mode == 'cuda_graph':
                for batch in self.batch_sizes:
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, stream=self._stream):
                        self._cycle(batch)
                    self._graphs[batch] = graph
        else:
            for batch in self.batch_sizes:
                for _ in range(self.warmup):
                    self._cycle(batch)
        self.warmup_seconds = time.monotonic() - t0
        staging.buffers['token_mask'][:, 0] = False
        LOG.info('torch %s %s %s%s ready (batch sizes %s); warm-up%s %.2f s', self.device, self.dtype, self.mode,
                 ' fast' if self.fast else '', ','.join(map(str, self.batch_sizes)),
                 ' + capture' if self._graphs else '', self.warmup_seconds)
        return staging

    def _compile_hot_functions(self, torch: Any) -> None:
        """Fuse each stage's small kernels (norms, RoPE, GeGLU, casts) with Inductor.

        CUDA graphs stay ours (the whole cycle is captured once), so Inductor's own are off.
        """
        model = self._policy.model
        options = {'fullgraph': True}  # default mode: max-autotune takes many minutes at full size
        model.vision.forward = torch.compile(model.vision.forward, **options)
        model.vlm.fill_cache = torch.compile(model.vlm.fill_cache, **options)
        model.denoise_step = torch.compile(model.denoise_step, **options)

    def _host_tensor(self, shape: tuple[int, ...], dtype: np.dtype, pinned: bool) -> Any:
        """Allocate a zeroed host tensor; on CUDA over cudaHostAlloc memory (kept alive in ``_pinned``)."""
        torch = _torch()
        if not pinned:
            return torch.from_numpy(np.zeros(shape, dtype))
        from pi0_trt_ros.cuda import PinnedBuffer

        buf = PinnedBuffer(shape, dtype)
        self._pinned.append(buf)
        tensor = torch.from_numpy(buf.view)
        if not tensor.is_pinned():
            raise RunnerError('cudaHostAlloc memory is not seen as pinned by PyTorch (another CUDA context?)')
        return tensor

    def _cycle(self, batch: int) -> None:
        """Copy the first ``batch`` rows in, run the policy, copy their chunks out (all on the current stream)."""
        torch = _torch()
        host, dev, host_out = self._views[batch]
        policy = self._fast_policy if self._fast_policy is not None else self._policy
        with torch.inference_mode():
            if self._stream is not None:  # on CPU the device tensors are the staging tensors: nothing to copy
                for d, h in zip(dev, host):
                    d.copy_(h, non_blocking=True)
            out = policy(*dev)
            host_out.copy_(out, non_blocking=True)

    def _deactivate_impl(self) -> None:
        self._graphs.clear()
        self._policy = None
        self._fast_policy = None
        self._views.clear()
        self._out_views.clear()
        self._host.clear()
        self._dev.clear()
        self._host_out = None
        self._stream = None
        for buf in self._pinned:
            buf.free()
        self._pinned.clear()

    def _infer_impl(self, batch: int) -> np.ndarray:
        if self._stream is not None:
            torch = _torch()
            with torch.cuda.stream(self._stream):  # CUDAGraph.replay launches on the current stream
                graph = self._graphs.get(batch)
                if graph is not None:
                    graph.replay()
                else:
                    self._cycle(batch)
            self._stream.synchronize()
        else:
            self._cycle(batch)
        return self._out_views[batch]
