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

"""The export manifest: what `pi0-trt export` writes beside the graph, typed, and checked on load.

``ENGINE_DIR/pi0_export.json`` is an ``ExportManifest``; each TensorRT build adds an
``EngineRecord`` under ``engines[<runtime>]``. Every runner reads it with ``read_manifest``,
which refuses unreadable JSON, another ``FORMAT_VERSION`` and missing or mistyped fields with
the command that fixes them; ``verify_graph`` checks the ONNX files against ``onnx_sha256``, so
a corrupted or replaced graph is refused before a parser sees it.

A batched export adds ``batched`` (``BatchedGraph``): a second graph whose batch axis is
dynamic, the batch sizes it is meant for, and its own TensorRT plans.

``PolicyIO`` (the shapes of one batch-1 policy call) lives here too: the checkpoint reader, the
exporter, every runner and the node size their buffers from it. This module is the ground floor
of the package: it imports nothing of it but ``errors``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np

from pi0_trt_ros.errors import ExportError

FORMAT_VERSION = 1  # of pi0_export.json; bump when a reader of the old layout would misread the new
EXPORT_METADATA = 'pi0_export.json'
REEXPORT = 're-export with `pi0-trt export --checkpoint DIR --out {engine_dir}`'


@dataclasses.dataclass(frozen=True)
class PolicyIO:
    """Shapes of one batch-1 policy call; everything a runner or the node needs to size buffers."""

    camera_keys: tuple[str, ...]  # checkpoint camera keys, in graph input order
    camera_hw: tuple[tuple[int, int], ...]  # raw frame (height, width) per camera, pixels
    state_dim: int
    action_dim: int
    chunk_size: int  # actions per chunk (T)
    max_action_dim: int  # padded action width of the model (noise width)
    token_len: int  # tokenizer_max_length (L)
    n_action_steps: int  # actions executed from each chunk before the next inference

    def __post_init__(self) -> None:
        if len(self.camera_keys) != len(self.camera_hw):
            raise ValueError('camera_keys and camera_hw differ in length')
        if not 0 < self.n_action_steps <= self.chunk_size:
            raise ValueError(f'n_action_steps={self.n_action_steps} must be in 1..chunk_size={self.chunk_size}')

    @property
    def num_cameras(self) -> int:
        return len(self.camera_keys)

    def input_specs(self, batch: int = 1) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Graph input name -> (shape, dtype), in graph order; ``batch`` leads every shape (-1: dynamic)."""
        specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for i, (h, w) in enumerate(self.camera_hw):
            specs[f'image_{i}'] = ((batch, h, w, 3), np.dtype(np.uint8))
        specs['state'] = ((batch, self.state_dim), np.dtype(np.float32))
        specs['tokens'] = ((batch, self.token_len), np.dtype(np.int64))
        specs['token_mask'] = ((batch, self.token_len), np.dtype(np.bool_))
        specs['noise'] = ((batch, self.chunk_size, self.max_action_dim), np.dtype(np.float32))
        return specs

    def output_specs(self, batch: int = 1) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        return {'actions': ((batch, self.chunk_size, self.action_dim), np.dtype(np.float32))}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> 'PolicyIO':
        d = dict(d)
        d['camera_keys'] = tuple(d['camera_keys'])
        d['camera_hw'] = tuple(tuple(hw) for hw in d['camera_hw'])
        return cls(**d)


class CheckpointRecord(TypedDict):
    """The checkpoint an export came from."""

    path: str
    sha256: str  # of model.safetensors
    dtype: str


class EngineRecord(TypedDict):
    """One TensorRT / TensorRT-RTX plan built from the export (``engines[<runtime>]``)."""

    plan: str  # file name, in the export directory
    runtime: str  # 'tensorrt' or 'tensorrt_rtx'
    tensorrt_version: str
    gpu: str  # GPU name, or 'none (CPU build)'
    compute_capability: str | None  # 'major.minor' of the building GPU
    targets: list[str]  # compute capabilities the plan runs on
    onnx_sha256: str  # of the graph the plan was built from
    plan_sha256: NotRequired[str]  # of the plan file (absent in records written before it was kept)
    precision: str
    workspace_gib: float
    plan_bytes: int
    build_seconds: float
    built_at: str  # ISO 8601, UTC
    batch_sizes: NotRequired[list[int]]  # batched plans: optimization profile i serves batch_sizes[i]


class BatchedGraph(TypedDict):
    """The dynamic-batch graph of a batched export (``batched`` in ``pi0_export.json``)."""

    graph: str  # ONNX file name, in the export directory; dim 0 of every I/O tensor is 'batch'
    external_data: str | None
    onnx_sha256: str  # of graph + external data, concatenated
    batch_sizes: list[int]  # what runners and TensorRT profiles serve (sorted)
    engines: dict[str, EngineRecord]  # runtime -> plan record (one optimization profile per batch size)


class ExportManifest(TypedDict):
    """``pi0_export.json``."""

    format_version: int  # FORMAT_VERSION
    io: dict[str, Any]  # PolicyIO.to_json()
    precision: str  # 'fp16' or 'fp32'
    graph: str  # ONNX file name, in the export directory
    external_data: NotRequired[str | None]  # ONNX external data file name (graphs > 2 GB)
    onnx_sha256: str  # of graph + external data, concatenated
    opset: NotRequired[int]
    model: NotRequired[dict[str, Any]]  # Pi0Config.to_json()
    num_inference_steps: NotRequired[int]
    normalization: NotRequired[dict[str, list[float]]]  # state/action mean and std
    checkpoint: NotRequired[CheckpointRecord]
    torch_version: NotRequired[str]
    export_seconds: NotRequired[float]
    engines: dict[str, EngineRecord]  # runtime -> plan record
    batched: NotRequired[BatchedGraph]  # with `pi0-trt export --batch-sizes`


# Fields every reader relies on, and their JSON types.
_REQUIRED: dict[str, type] = {
    'format_version': int, 'io': dict, 'precision': str, 'graph': str, 'onnx_sha256': str, 'engines': dict,
}


def file_sha256(*paths: Path) -> str:
    """Hex sha256 of the concatenated contents of ``paths`` (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    for path in paths:
        with path.open('rb') as f:
            for chunk in iter(lambda: f.read(1 << 22), b''):
                h.update(chunk)
    return h.hexdigest()


def read_manifest(engine_dir: str | Path) -> ExportManifest:
    """Load and check ``ENGINE_DIR/pi0_export.json``: readable JSON, this format, every required field.

    Raises ExportError naming what is wrong and the command that writes a good one.
    """
    engine_dir = Path(engine_dir)
    path = engine_dir / EXPORT_METADATA
    fix = REEXPORT.format(engine_dir=engine_dir)
    if not path.is_file():
        raise ExportError(f'{path} not found: run `pi0-trt export --checkpoint DIR --out {engine_dir}` first')
    try:
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise ExportError(f'{path} is unreadable ({type(exc).__name__}: {exc}): {fix}') from None
    if not isinstance(meta, dict):
        raise ExportError(f'{path} is not a JSON object: {fix}')
    if meta.get('format_version') != FORMAT_VERSION:
        raise ExportError(f'{path}: format_version {meta.get("format_version")!r}, this package reads '
                          f'{FORMAT_VERSION}: {fix}')
    for key, kind in _REQUIRED.items():
        if not isinstance(meta.get(key), kind):
            got = 'missing' if key not in meta else f'a {type(meta[key]).__name__}'
            raise ExportError(f'{path}: {key!r} is {got}, expected a {kind.__name__}: {fix}')
    try:
        PolicyIO.from_json(meta['io'])
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"{path}: invalid 'io' ({type(exc).__name__}: {exc}): {fix}") from None
    return meta  # type: ignore[return-value]  # checked above


def policy_io(manifest: ExportManifest) -> PolicyIO:
    """Return the ``PolicyIO`` of a manifest that ``read_manifest`` checked."""
    return PolicyIO.from_json(manifest['io'])


def graph_files(engine_dir: str | Path, manifest: ExportManifest | BatchedGraph) -> list[Path]:
    """Return the ONNX graph and its external data file (when it has one), in hashing order."""
    engine_dir = Path(engine_dir)
    files = [engine_dir / manifest['graph']]
    if manifest.get('external_data'):
        files.append(engine_dir / str(manifest['external_data']))
    return files


def batched_graph(engine_dir: str | Path, manifest: ExportManifest,
                  batch_sizes: tuple[int, ...] | None = None) -> BatchedGraph:
    """Return the manifest's ``batched`` record, checked to serve ``batch_sizes`` when given.

    Raises ExportError with the export command that writes one when the export has no batched
    graph, or one exported for smaller batches.
    """
    sizes = ','.join(map(str, batch_sizes or (1, 2, 4, 8)))
    fix = f're-export with `pi0-trt export --checkpoint DIR --out {engine_dir} --batch-sizes {sizes}`'
    record = manifest.get('batched')
    if not isinstance(record, dict) or not isinstance(record.get('graph'), str):
        raise ExportError(f'{engine_dir} has no batched graph: {fix}')
    exported = record.get('batch_sizes') or []
    if batch_sizes and max(batch_sizes) > max(exported, default=0):
        raise ExportError(f'{engine_dir}: the batched graph was exported for batch sizes '
                          f'{",".join(map(str, exported))}, not {sizes}: {fix}')
    return record


def verify_graph(engine_dir: str | Path, manifest: ExportManifest, batched: bool = False) -> Path:
    """Check the ONNX files against the manifest's ``onnx_sha256``; return the graph's path.

    ``batched``: the ``batched`` graph instead (its record must exist: see ``batched_graph``).
    Hashes the whole graph (about 1 s per GB): a truncated or bit-flipped file is refused here
    with advice, rather than by the parser with a traceback, or not at all.
    """
    record: Any = manifest['batched'] if batched else manifest
    files = graph_files(engine_dir, record)
    fix = REEXPORT.format(engine_dir=engine_dir)
    for path in files:
        if not path.is_file():
            raise ExportError(f'{path} is recorded in {EXPORT_METADATA} but missing: {fix}')
    digest = file_sha256(*files)
    if digest != record['onnx_sha256']:
        names = ' + '.join(p.name for p in files)
        raise ExportError(f'{names} has sha256 {digest[:12]}... but {EXPORT_METADATA} records '
                          f'{record["onnx_sha256"][:12]}...: the graph is corrupted or was replaced: {fix}')
    return files[0]


def write_manifest(engine_dir: str | Path, manifest: ExportManifest) -> None:
    """Write ``pi0_export.json`` atomically (a reader never sees half a file)."""
    path = Path(engine_dir) / EXPORT_METADATA
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
