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

"""ONNX Runtime backend: CPU (the embedded default) or the CUDA execution provider when present.

Inputs and the output are bound once (`IOBinding` over the preallocated staging arrays), so
a cycle is one `run_with_iobinding` call with no allocation of I/O tensors. Activation first
checks the graph against the export's recorded sha256, so a corrupted file is refused with advice.

Batched (``batch_sizes`` beyond (1,)): one session over the export's dynamic-batch graph and one
binding per batch size, each over the first rows of the same staging and output arrays.
"""

from __future__ import annotations

import logging
from pathlib import Path
import time
from typing import Any, Sequence

import numpy as np

from pi0_trt_ros.batch_sizes import SINGLE
from pi0_trt_ros.errors import BackendUnavailableError, ExportError, RunnerError
from pi0_trt_ros.manifest import batched_graph, policy_io, read_manifest, REEXPORT, verify_graph
from pi0_trt_ros.runners.base import Runner, Staging
from pi0_trt_ros.runners.registry import ONNXRUNTIME_DEVICES

LOG = logging.getLogger(__name__)


class OnnxRuntimeRunner(Runner):
    """Runs ``ENGINE_DIR/policy_<precision>.onnx`` (batched: ``policy_<precision>.batched.onnx``) with ONNX Runtime."""

    name = 'onnxruntime'

    def __init__(self, engine_dir: str | Path, device: str = 'cpu', threads: int = 0, warmup: int = 1,
                 batch_sizes: Sequence[int] = SINGLE) -> None:
        self.engine_dir = Path(engine_dir)
        self.meta = read_manifest(self.engine_dir)
        super().__init__(policy_io(self.meta), batch_sizes)
        if self.batched:
            batched_graph(self.engine_dir, self.meta, self.batch_sizes)
        if device not in ONNXRUNTIME_DEVICES:
            raise RunnerError(f'onnxruntime device must be one of {", ".join(ONNXRUNTIME_DEVICES)}, got {device!r}')
        self.device = device
        self.threads = threads
        self.warmup = warmup
        self.warmup_seconds = 0.0
        self._session = None
        self._bindings: dict[int, Any] = {}  # batch size -> IOBinding over the first rows
        self._outputs: dict[int, np.ndarray] = {}  # batch size -> view [batch, chunk, action_dim]

    def _activate_impl(self) -> Staging:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError('onnxruntime is not installed: pip install onnxruntime '
                                          '(or onnxruntime-gpu for the CUDA provider)') from None
        providers = ['CPUExecutionProvider']
        if self.device == 'cuda':
            if 'CUDAExecutionProvider' not in ort.get_available_providers():
                raise BackendUnavailableError('onnxruntime has no CUDAExecutionProvider: pip install onnxruntime-gpu')
            providers.insert(0, 'CUDAExecutionProvider')
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        graph = verify_graph(self.engine_dir, self.meta, batched=self.batched)
        try:
            self._session = ort.InferenceSession(str(graph), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime's own types (InvalidProtobuf, InvalidGraph, Fail, ...)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'
            raise ExportError(f'ONNX Runtime could not load {graph} ({type(exc).__name__}: {reason}): '
                              f'{REEXPORT.format(engine_dir=self.engine_dir)}') from None
        self._check_graph_io()
        staging = Staging.allocate(self.io, self.max_batch)
        (out_shape, out_dtype), = self.io.output_specs(self.max_batch).values()
        output = np.zeros(out_shape, out_dtype)
        for batch in self.batch_sizes:
            binding = self._session.io_binding()
            for name, buf in staging.buffers.items():
                binding.bind_cpu_input(name, buf[:batch])
            binding.bind_output('actions', 'cpu', 0, out_dtype, [batch, *out_shape[1:]], output.ctypes.data)
            self._bindings[batch] = binding
            self._outputs[batch] = output[:batch]
        staging.buffers['token_mask'][:, 0] = True  # a valid prefix for the warm-up runs
        t0 = time.monotonic()
        for batch in self.batch_sizes:
            for _ in range(self.warmup):
                self._session.run_with_iobinding(self._bindings[batch])
        self.warmup_seconds = time.monotonic() - t0
        staging.buffers['token_mask'][:, 0] = False
        LOG.info('onnxruntime %s session ready (%s, batch sizes %s); warm-up %.3f s', self.device, graph.name,
                 ','.join(map(str, self.batch_sizes)), self.warmup_seconds)
        return staging

    def _check_graph_io(self) -> None:
        """Refuse a graph whose tensors are not the export's (batched: with the dynamic 'batch' dim 0)."""
        assert self._session is not None
        batch: int | str = 'batch' if self.batched else 1
        got = {t.name: tuple(t.shape) for t in self._session.get_inputs() + self._session.get_outputs()}
        for name, (shape, _) in {**self.io.input_specs(), **self.io.output_specs()}.items():
            want = (batch, *shape[1:])
            if got.get(name) != want:
                raise RunnerError(f'graph tensor {name!r}: expected shape {want}, graph has {got.get(name)}: '
                                  f'{REEXPORT.format(engine_dir=self.engine_dir)}')

    def _deactivate_impl(self) -> None:
        self._bindings.clear()
        self._outputs.clear()
        self._session = None

    def _infer_impl(self, batch: int) -> np.ndarray:
        assert self._session is not None
        self._session.run_with_iobinding(self._bindings[batch])
        return self._outputs[batch]
