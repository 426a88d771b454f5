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

"""TensorRT / TensorRT-RTX backend: a checked plan, pinned staging, one stream, one CUDA graph.

Activation loads the plan (``load_engine`` refuses one built for another GPU, TensorRT version
or ONNX graph), allocates a pinned host buffer and a device buffer for every I/O tensor once,
binds the device buffers with ``set_tensor_address`` once, warms up, and captures the whole
cycle (host-to-device copies, ``execute_async_v3``, device-to-host copy of the chunk) into a
CUDA graph. A cycle is then one graph launch and one stream synchronization, with nothing
allocated. Where capture fails the runner logs why and enqueues the same work directly.

Batched (``batch_sizes`` beyond (1,)): the plan built from the export's dynamic-batch graph has
one optimization profile per exported batch size. Each served size gets its own execution context
on its profile, with its input shapes set once, its own activation memory, and its own CUDA graph;
all contexts read and write the same device buffers (sized for the largest batch), and a cycle
copies only the rows of its size up and down.

This module must not import torch: the ROS node with this backend runs without it.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
import time
from typing import Any, Sequence

import numpy as np

from pi0_trt_ros import cuda
from pi0_trt_ros.batch_sizes import SINGLE
from pi0_trt_ros.errors import EngineError, Pi0Error, RunnerError
from pi0_trt_ros.export.engine import load_engine, LoadedEngine, RUNTIMES, trt_logger
from pi0_trt_ros.manifest import batched_graph, policy_io, read_manifest
from pi0_trt_ros.runners.base import Runner, Staging

LOG = logging.getLogger(__name__)


class TensorRTRunner(Runner):
    """Runs ``ENGINE_DIR``'s plan for ``runtime`` ('tensorrt' or 'tensorrt_rtx') on one GPU.

    Build the plan first with ``pi0-trt build ENGINE_DIR --runtime RUNTIME``. ``infer`` returns
    a view of the pinned output buffer, overwritten by the next call.
    """

    name = 'tensorrt'

    def __init__(self, engine_dir: str | Path, runtime: str = 'tensorrt', use_cuda_graph: bool = True,
                 device: int = 0, warmup: int = 2, batch_sizes: Sequence[int] = SINGLE) -> None:
        if runtime not in RUNTIMES:
            raise RunnerError(f'TensorRT runner: runtime must be one of {", ".join(RUNTIMES)}, got {runtime!r}')
        self.engine_dir = Path(engine_dir)
        self.meta = read_manifest(self.engine_dir)
        super().__init__(policy_io(self.meta), batch_sizes)
        if self.batched:
            batched_graph(self.engine_dir, self.meta, self.batch_sizes)
        self.name = runtime
        self.runtime = runtime
        self.use_cuda_graph = use_cuda_graph
        self.device = device
        self.warmup = max(warmup, 1 if use_cuda_graph else 0)  # TensorRT wants one enqueue before capture
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0
        self.cuda_graph_reason: str | None = None  # why the cycle is not a CUDA graph, when it is not
        self._loaded: LoadedEngine | None = None
        self._runtime_config: Any = None
        self._runtime_cache: Any = None
        self._contexts: dict[int, Any] = {}  # batch size -> execution context (batch 1 alone: the static plan's)
        self._stream: cuda.Stream | None = None
        self._host: dict[str, cuda.PinnedBuffer] = {}  # [max_batch, ...] each
        self._dev: dict[str, cuda.DeviceBuffer] = {}
        self._inputs: tuple[str, ...] = tuple(self.io.input_specs())
        self._output = 'actions'
        self._out_views: dict[int, np.ndarray] = {}  # batch size -> [batch, chunk, action_dim] view
        self._graphs: dict[int, cuda.CudaGraph] = {}  # batch size -> CUDA graph of its cycle

    @property
    def uses_cuda_graph(self) -> bool:
        return len(self._graphs) == len(self.batch_sizes)

    # -- lifecycle -----------------------------------------------------------------------------
    def _activate_impl(self) -> Staging:
        try:
            return self._allocate_and_warm_up()
        except BaseException:
            self._release()
            raise

    def _allocate_and_warm_up(self) -> Staging:
        t0 = time.monotonic()
        self.cuda_graph_reason = None
        visible = cuda.device_count()
        if self.device >= visible:
            raise RunnerError(f'{self.runtime} runner: CUDA device {self.device} requested but {visible} visible '
                              '(check the NVIDIA driver and CUDA_VISIBLE_DEVICES)')
        cuda.set_device(self.device)
        self._loaded = load_engine(self.engine_dir, self.runtime, batched=self.batched)
        self._stream = cuda.Stream()
        specs = {**self.io.input_specs(self.max_batch), **self.io.output_specs(self.max_batch)}
        for name, (shape, dtype) in specs.items():
            self._host[name] = cuda.PinnedBuffer(shape, dtype)
            self._dev[name] = cuda.DeviceBuffer(self._host[name].nbytes)
        profiles = self._profiles(self._loaded)
        for batch in self.batch_sizes:
            self._contexts[batch] = self._bind_context(self._create_context(self._loaded), batch, profiles.get(batch))
            self._out_views[batch] = self._host[self._output].view[:batch]  # [batch, chunk, action_dim]
        staging = Staging.over(self.io, {name: self._host[name].view for name in self._inputs})
        self.load_seconds = time.monotonic() - t0

        t0 = time.monotonic()
        staging.buffers['token_mask'][:, 0] = True  # a valid prefix for warm-up (no fully masked attention row)
        for batch in self.batch_sizes:
            for _ in range(self.warmup):
                self._enqueue(batch)
        self._stream.synchronize()
        self._save_runtime_cache()  # TensorRT-RTX compiled its kernels during warm-up
        if self.use_cuda_graph:
            self._capture()
        else:
            self.cuda_graph_reason = 'disabled (use_cuda_graph=False)'
        staging.buffers['token_mask'][:, 0] = False
        self.warmup_seconds = time.monotonic() - t0
        LOG.info('%s runner ready on %s: load %.2f s, warm-up %.2f s (%d runs per batch size %s), cycle %s',
                 self.runtime, self._loaded.gpu.name, self.load_seconds, self.warmup_seconds, self.warmup,
                 ','.join(map(str, self.batch_sizes)),
                 'one CUDA graph' if self.uses_cuda_graph else f'direct enqueue ({self.cuda_graph_reason})')
        return staging

    def _profiles(self, loaded: LoadedEngine) -> dict[int, int]:
        """Batch size -> optimization profile index of a batched plan (empty for the static batch-1 plan)."""
        if not self.batched:
            return {}
        built = list(loaded.record.get('batch_sizes') or [])
        missing = [b for b in self.batch_sizes if b not in built]
        if missing or loaded.engine.num_optimization_profiles != len(built):
            listed, wanted = ','.join(map(str, built)) or 'none', ','.join(map(str, self.batch_sizes))
            raise EngineError(f'{loaded.plan_path.name} has optimization profiles for batch sizes {listed}, not '
                              f'{",".join(map(str, missing))}: re-export with `pi0-trt export --batch-sizes {wanted}` '
                              f'and rebuild with `pi0-trt build {self.engine_dir} --runtime {self.runtime} --batched`')
        return {batch: i for i, batch in enumerate(built)}

    def _create_context(self, loaded: LoadedEngine) -> Any:
        """Create an execution context; with TensorRT-RTX, backed by one runtime cache of JIT-compiled kernels."""
        engine = loaded.engine
        logger = trt_logger(loaded.trt)
        start = len(logger.errors)
        if self._runtime_config is None and hasattr(loaded.trt, 'IRuntimeCache'):  # TensorRT-RTX
            config = engine.create_runtime_config()
            cache = config.create_runtime_cache()
            path = self._runtime_cache_path()
            if path.is_file() and not cache.deserialize(path.read_bytes()):
                LOG.info('runtime cache %s is from another GPU/driver/version; kernels will be recompiled', path)
            if not config.set_runtime_cache(cache):
                raise EngineError('IRuntimeConfig.set_runtime_cache failed')
            self._runtime_cache = cache
            self._runtime_config = config
        config = self._runtime_config
        context = engine.create_execution_context(config) if config is not None else engine.create_execution_context()
        if context is None:
            errors = '; '.join(logger.errors[start:]) or 'TensorRT logged no error'
            raise EngineError(f'create_execution_context failed for {loaded.plan_path.name}: {errors}')
        return context

    def _bind_context(self, context: Any, batch: int, profile: int | None) -> Any:
        """Point ``context`` at the shared device buffers; on a batched plan, select ``profile`` and fix shapes."""
        assert self._stream is not None
        if profile is not None:
            if not context.set_optimization_profile_async(profile, self._stream.ptr):
                raise EngineError(f'set_optimization_profile_async({profile}) failed for batch {batch}')
            for name, (shape, _) in self.io.input_specs(batch).items():
                if not context.set_input_shape(name, shape):
                    raise EngineError(f"set_input_shape({name!r}, {shape}) failed: the plan's profile {profile} "
                                      f'does not cover batch {batch}')
        for name, buf in self._dev.items():
            if not context.set_tensor_address(name, buf.ptr):
                raise EngineError(f'set_tensor_address({name!r}) failed: the engine does not accept this tensor')
        return context

    def _runtime_cache_path(self) -> Path:
        assert self._loaded is not None
        return self._loaded.plan_path.with_suffix('.runtime_cache')

    def _save_runtime_cache(self) -> None:
        if self._runtime_cache is None:
            return
        path = self._runtime_cache_path()
        tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
        try:
            tmp.write_bytes(bytes(self._runtime_cache.serialize()))
            os.replace(tmp, path)
        except OSError as exc:  # a read-only engine dir only costs start-up time
            LOG.warning('could not save the runtime cache %s: %s', path, exc)

    def _capture(self) -> None:
        """Capture one CUDA graph per batch size; where one cannot be captured, every size enqueues directly."""
        stream = self._stream
        assert stream is not None
        for batch, context in self._contexts.items():
            capturable = getattr(context, 'is_stream_capturable', None)
            if capturable is not None and not capturable(stream.ptr):
                self.cuda_graph_reason = f'batch {batch}: the execution context reports the stream is not capturable'
                break
            try:
                graph = cuda.CudaGraph.capture(stream, functools.partial(self._enqueue, batch))
                self._graphs[batch] = graph
                graph.launch(stream)
                stream.synchronize()
            except Pi0Error as exc:
                self.cuda_graph_reason = f'batch {batch}: capture failed: {exc}'
                break
        else:
            return
        for graph in self._graphs.values():
            graph.destroy()
        self._graphs.clear()
        LOG.warning('%s runner: no CUDA graph, enqueueing each cycle directly: %s', self.runtime,
                    self.cuda_graph_reason)

    def _deactivate_impl(self) -> None:
        self._release()

    def _release(self) -> None:
        """Free everything ``_activate_impl`` made, in reverse order; log (not raise) CUDA errors."""
        steps = []
        if self._stream is not None:
            steps.append(('synchronize', self._stream.synchronize))
        steps += [(f'CUDA graph (batch {batch})', graph.destroy) for batch, graph in self._graphs.items()]
        self._graphs.clear()
        for step, fn in steps:
            self._try(step, fn)
        self._contexts.clear()  # TensorRT objects go before the memory they point to
        self._runtime_cache = None
        self._runtime_config = None
        self._loaded = None
        self._out_views.clear()
        for name, buf in list(self._dev.items()) + list(self._host.items()):
            self._try(f'buffer {name!r}', buf.free)
        self._dev.clear()
        self._host.clear()
        if self._stream is not None:
            self._try('stream', self._stream.destroy)
            self._stream = None

    def _try(self, what: str, fn: Any) -> None:
        try:
            fn()
        except Pi0Error as exc:
            LOG.warning('%s runner: freeing %s: %s', self.runtime, what, exc)

    # -- per cycle -----------------------------------------------------------------------------
    def _enqueue(self, batch: int) -> None:
        """Copy the first ``batch`` rows of every input up, run the engine, copy their chunks down; one stream."""
        stream = self._stream
        assert stream is not None
        rows = batch if self.batched else None  # the single-robot runner copies whole buffers, as it always has
        for name in self._inputs:
            try:
                self._dev[name].upload(self._host[name], stream, self._row_bytes(name, rows))
            except RunnerError as exc:
                raise RunnerError(f'input {name!r}: {exc}') from None
        if not self._contexts[batch].execute_async_v3(stream.ptr):
            raise EngineError(f'{self.runtime} execute_async_v3 failed (see the TensorRT log above)')
        try:
            self._dev[self._output].download(self._host[self._output], stream, self._row_bytes(self._output, rows))
        except RunnerError as exc:
            raise RunnerError(f'output {self._output!r}: {exc}') from None

    def _row_bytes(self, name: str, rows: int | None) -> int | None:
        """Bytes of the first ``rows`` rows of tensor ``name`` (None: the whole buffer)."""
        return None if rows is None else self._host[name].nbytes // self.max_batch * rows

    def _infer_impl(self, batch: int) -> np.ndarray:
        stream = self._stream
        assert stream is not None
        graph = self._graphs.get(batch)
        if graph is not None:
            graph.launch(stream)
        else:
            self._enqueue(batch)
        stream.synchronize()
        return self._out_views[batch]
