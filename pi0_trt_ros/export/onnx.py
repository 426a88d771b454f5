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
"""

from __future__ import annotations

import logging
from pathlib import Path
import tempfile
import time
from typing import Any
import warnings

import numpy as np

from pi0_trt_ros.checkpoint import load_checkpoint
from pi0_trt_ros.errors import ExportError
from pi0_trt_ros.manifest import ExportManifest, file_sha256, FORMAT_VERSION, PolicyIO, write_manifest

LOG = logging.getLogger(__name__)
OPSET = 18
PROTOBUF_LIMIT = 2 ** 31 - 1  # bytes; larger graphs keep weights in external data


def graph_name(precision: str) -> str:
    return f'policy_{precision}.onnx'


def example_inputs(io: PolicyIO) -> tuple[Any, ...]:
    """Zero inputs of the graph's shapes (a valid first token so no attention row is empty)."""
    import torch

    tensors = []
    for name, (shape, dtype) in io.input_specs().items():
        t = torch.from_numpy(np.zeros(shape, dtype))
        if name == 'token_mask':
            t[:, 0] = True
        tensors.append(t)
    return tuple(tensors)


def trace_to_onnx(policy: Any, io: PolicyIO, path: Path) -> None:
    """Trace ``policy`` with static batch-1 shapes into ``path`` (weights external if > 2 GB)."""
    import onnx
    import torch

    names = list(io.input_specs())
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the tracer warns about every Python int it bakes in
        raw = Path(tmp) / 'raw.onnx'
        torch.onnx.export(policy, example_inputs(io), str(raw), input_names=names, output_names=['actions'],
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
        model = onnx.load(str(raw), load_external_data=True)
        size = sum(t.ByteSize() for t in model.graph.initializer)
        external = size > PROTOBUF_LIMIT - (64 << 20)
        onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                        location=path.name + '.data', size_threshold=1024)
    if not external:
        onnx.checker.check_model(str(path))


def export_policy(checkpoint: str | Path, out_dir: str | Path, arch: str | Path | None = None,
                  precision: str = 'fp16') -> Path:
    """Export ``checkpoint`` to ``out_dir`` (graph + `pi0_export.json`); returns ``out_dir``."""
    import torch

    if precision not in ('fp16', 'fp32'):
        raise ExportError(f'precision must be fp16 or fp32, got {precision!r}')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    ckpt = load_checkpoint(checkpoint, arch)
    policy = ckpt.build_policy(dtype=torch.float16 if precision == 'fp16' else None)
    t_load = time.monotonic() - t0
    path = out / graph_name(precision)
    for stale in (path, path.with_name(path.name + '.data')):
        stale.unlink(missing_ok=True)
    LOG.info('exporting %s (%s, %d cameras %s) to %s', ckpt.path, precision, ckpt.io.num_cameras,
             ckpt.io.camera_hw, path)
    trace_to_onnx(policy, ckpt.io, path)
    data = path.with_name(path.name + '.data')
    graph_files = [path] + ([data] if data.exists() else [])
    t_export = time.monotonic() - t0 - t_load
    meta: ExportManifest = {
        'format_version': FORMAT_VERSION,
        'io': ckpt.io.to_json(),
        'precision': precision,
        'graph': path.name,
        'external_data': data.name if data.exists() else None,
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
    write_manifest(out, meta)
    LOG.info('exported in %.1f s (load %.1f s): %s', t_export, t_load, ', '.join(p.name for p in graph_files))
    return out
