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

"""Export a LeRobot pi0 checkpoint to one static-shape, batch-1 ONNX graph plus its metadata.

The graph is the whole policy call (DESIGN §4): raw uint8 frames are cast, resized with padding
and scaled inside it; the prefix fills the KV cache once; ten Euler steps of the action expert
are unrolled; state normalization and action unnormalization are baked in. One graph means one
engine launch per control cycle, which TensorRT fuses end to end and a CUDA graph captures whole.

Precision: ``fp32`` for parity; ``fp16`` stores GEMM/conv/embedding weights in float16 while
norms, RoPE, softmax and the residual stream stay float32 with explicit casts (Gemma's
activations overflow pure FP16), so the graph is strongly typed as TensorRT-RTX requires.

Batched serving (``batch_sizes`` beyond 1) adds a second graph, ``policy_<precision>.batched.onnx``,
the same trace with a dynamic batch axis ('batch', dim 0 of every input and of ``actions``). One
dynamic graph rather than one static graph per size: the weights are stored once (a full-size
FP16 Pi0 is ~7 GB; four per-size graphs would be four copies on disk and, as TensorRT plans,
on the GPU), ONNX Runtime runs every size in one session, and TensorRT serves the sizes from one
plan with an optimization profile each. The static batch-1 graph stays the single-robot graph, so
that path is unchanged by batching. The batched graph is traced at batch 2, so no size-1
broadcast of the batch axis can be baked into it.
"""

from __future__ import annotations

import logging
from pathlib import Path
import tempfile
import time
from typing import Any, Sequence
import warnings

import numpy as np

from pi0_trt_ros.batch_sizes import check_batch_sizes, SINGLE
from pi0_trt_ros.checkpoint import load_checkpoint
from pi0_trt_ros.errors import ExportError
from pi0_trt_ros.manifest import BatchedGraph, ExportManifest, file_sha256, FORMAT_VERSION, PolicyIO, write_manifest

LOG = logging.getLogger(__name__)
OPSET = 18
PROTOBUF_LIMIT = 2 ** 31 - 1  # bytes; larger graphs keep weights in external data


TRACE_BATCH = 2  # the batch the dynamic-batch graph is traced at


def graph_name(precision: str, batched: bool = False) -> str:
    return f'policy_{precision}.batched.onnx' if batched else f'policy_{precision}.onnx'


def example_inputs(io: PolicyIO, batch: int = 1) -> tuple[Any, ...]:
    """Zero inputs of the graph's shapes (a valid first token so no attention row is empty)."""
    import torch

    tensors = []
    for name, (shape, dtype) in io.input_specs(batch).items():
        t = torch.from_numpy(np.zeros(shape, dtype))
        if name == 'token_mask':
            t[:, 0] = True
        tensors.append(t)
    return tuple(tensors)


def trace_to_onnx(policy: Any, io: PolicyIO, path: Path, batched: bool = False) -> None:
    """Trace ``policy`` into ``path`` (weights external if > 2 GB).

    Static batch-1 shapes; with ``batched``, dim 0 of every input and output is the dynamic 'batch'.
    """
    import onnx
    import torch

    names = list(io.input_specs())
    dynamic = {name: {0: 'batch'} for name in names + ['actions']} if batched else None
    inputs = example_inputs(io, TRACE_BATCH if batched else 1)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the tracer warns about every Python int it bakes in
        raw = Path(tmp) / 'raw.onnx'
        torch.onnx.export(policy, inputs, str(raw), input_names=names, output_names=['actions'],
                          opset_version=OPSET, do_constant_folding=True, dynamo=False, dynamic_axes=dynamic)
        model = onnx.load(str(raw), load_external_data=True)
        size = sum(t.ByteSize() for t in model.graph.initializer)
        external = size > PROTOBUF_LIMIT - (64 << 20)
        onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                        location=path.name + '.data', size_threshold=1024)
    if not external:
        onnx.checker.check_model(str(path))


def _graph_paths(out: Path, precision: str, batched: bool) -> tuple[Path, Path]:
    """(graph, its external data file) as the export names them."""
    path = out / graph_name(precision, batched)
    return path, path.with_name(path.name + '.data')


def _trace_graph(policy: Any, io: PolicyIO, out: Path, precision: str, batched: bool) -> list[Path]:
    """Trace one graph into ``out`` (replacing a stale one); returns [graph, external data if any]."""
    path, data = _graph_paths(out, precision, batched)
    for stale in (path, data):
        stale.unlink(missing_ok=True)
    trace_to_onnx(policy, io, path, batched)
    return [path] + ([data] if data.exists() else [])


def export_policy(checkpoint: str | Path, out_dir: str | Path, arch: str | Path | None = None,
                  precision: str = 'fp16', batch_sizes: Sequence[int] = SINGLE) -> Path:
    """Export ``checkpoint`` to ``out_dir`` (graph + `pi0_export.json`); returns ``out_dir``.

    ``batch_sizes`` beyond (1,) also writes the dynamic-batch graph for batched runners.
    """
    import torch

    if precision not in ('fp16', 'fp32'):
        raise ExportError(f'precision must be fp16 or fp32, got {precision!r}')
    sizes = check_batch_sizes(batch_sizes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    ckpt = load_checkpoint(checkpoint, arch)
    policy = ckpt.build_policy(dtype=torch.float16 if precision == 'fp16' else None)
    t_load = time.monotonic() - t0
    LOG.info('exporting %s (%s, %d cameras %s) to %s', ckpt.path, precision, ckpt.io.num_cameras,
             ckpt.io.camera_hw, out / graph_name(precision))
    graph_files = _trace_graph(policy, ckpt.io, out, precision, batched=False)
    path = graph_files[0]
    batched: BatchedGraph | None = None
    if sizes != SINGLE:
        LOG.info('exporting the dynamic-batch graph for batch sizes %s', ','.join(map(str, sizes)))
        files = _trace_graph(policy, ckpt.io, out, precision, batched=True)
        batched = {'graph': files[0].name, 'external_data': files[1].name if len(files) > 1 else None,
                   'onnx_sha256': file_sha256(*files), 'batch_sizes': list(sizes), 'engines': {}}
    else:
        for stale in _graph_paths(out, precision, batched=True):  # a re-export without batching
            stale.unlink(missing_ok=True)
    t_export = time.monotonic() - t0 - t_load
    meta: ExportManifest = {
        'format_version': FORMAT_VERSION,
        'io': ckpt.io.to_json(),
        'precision': precision,
        'graph': path.name,
        'external_data': graph_files[1].name if len(graph_files) > 1 else None,
        'onnx_sha256': file_sha256(*graph_files),
        'opset': OPSET,
        'model': ckpt.config.to_json(),
        'num_inference_steps': ckpt.config.num_inference_steps,
        'normalization': {k: getattr(ckpt.stats, k).tolist()
                          for k in ('state_mean', 'state_std', 'action_mean', 'action_std')},
        'checkpoint': {'path': str(ckpt.path.resolve()), 'sha256': ckpt.sha256, 'dtype': ckpt.dtype},
        'torch_version': torch.__version__,
        'export_seconds': round(t_export, 2),
        'engines': {},
    }
    if batched is not None:
        meta['batched'] = batched
    write_manifest(out, meta)
    LOG.info('exported in %.1f s (load %.1f s): %s%s', t_export, t_load, ', '.join(p.name for p in graph_files),
             f' + {batched["graph"]}' if batched else '')
    return out
