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

"""Build TensorRT / TensorRT-RTX engine plans from an export directory, and load them checked.

``build_engines`` runs small named stages (``network_from_onnx`` -> ``check_tensors`` ->
``builder_config`` -> ``serialize_network`` -> ``save_plan`` -> ``record_engine``), logs the
config and the build time, and records the plan in ``ENGINE_DIR/pi0_export.json`` under
``engines[<runtime>]``::

    {"plan": "policy_fp16.tensorrt.plan", "tensorrt_version": "10.13.0.35",
     "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "targets": ["9.0"],
     "onnx_sha256": "...", "plan_sha256": "...", "build_seconds": 512.3, ...}

TensorRT plans run only on the GPU model and TensorRT version that built them. TensorRT-RTX
builds ahead of time without a GPU (``"gpu": "none (CPU build)"``); its plans run on the
compute capabilities in ``targets`` with the same TensorRT-RTX version. ``load_engine``
refuses a plan whose bytes, recorded version, GPU or ONNX hash differ from what is here now, with
the command that rebuilds it.

Batched exports (``pi0-trt export --batch-sizes``): ``build_engines(..., batched=True)`` builds the
dynamic-batch graph into ``policy_<precision>.batched.<runtime>.plan`` with one optimization profile
per exported batch size (min = opt = max = that size, so each size gets kernels tuned for it, as
the static batch-1 plan does) and records it under ``batched.engines[<runtime>]``, with the
profile order in ``batch_sizes``. The weights are in the plan once, whatever the number of sizes.

Runtimes: ``tensorrt`` (module ``tensorrt``) and ``tensorrt_rtx`` (module
``tensorrt_rtx_bindings``); both are imported lazily.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib
import logging
import os
from pathlib import Path
import time
from types import ModuleType
from typing import Any, Mapping, Sequence

import numpy as np

from pi0_trt_ros.cuda import cudart, current_gpu, GpuIdentity
from pi0_trt_ros.errors import BackendUnavailableError, EngineError, ExportError
from pi0_trt_ros.manifest import (batched_graph, EngineRecord, EXPORT_METADATA, ExportManifest, policy_io,
                                  PolicyIO, read_manifest, write_manifest)

LOG = logging.getLogger(__name__)

RUNTIMES = ('tensorrt', 'tensorrt_rtx')
_MODULES = {'tensorrt': 'tensorrt', 'tensorrt_rtx': 'tensorrt_rtx_bindings'}
_INSTALL = {
    'tensorrt': 'pip install tensorrt-cu12 (or tensorrt-cu13) --extra-index-url https://pypi.nvidia.com, '
                "or on Jetson use JetPack's python3-libnvinfer",
    'tensorrt_rtx': 'pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings',
}
CPU_BUILD = 'none (CPU build)'
# What a TensorRT-RTX plan built without explicit targets runs on (TensorRT-RTX docs, "CPU-only AOT").
RTX_DEFAULT_TARGETS = ('8.0', '8.6', '8.9', '12.0', '12.1')
TIMING_CACHE = 'timing.cache'
GIB = 1 << 30
DYNAMIC = -1  # TensorRT's size of a dynamic dimension (the batched graph's batch axis)

# (mode, shape, dtype) of one I/O tensor: mode 'input' or 'output'; dtype a numpy dtype, or the
# TensorRT type's name where numpy has none (bf16, fp8).
TensorSpec = tuple[str, tuple[int, ...], Any]


def plan_name(precision: str, runtime: str, batched: bool = False) -> str:
    """File name of the plan for ``precision`` built by ``runtime`` (``batched``: from the dynamic-batch graph)."""
    return f'policy_{precision}.{"batched." if batched else ""}{runtime}.plan'


def rebuild_hint(engine_dir: Path, runtime: str, batched: bool = False) -> str:
    return f'rebuild it: pi0-trt build {engine_dir} --runtime {runtime}{" --batched" if batched else ""}'


def import_tensorrt(runtime: str) -> ModuleType:
    """Import the Python module of ``runtime``, or say what to install."""
    if runtime not in RUNTIMES:
        raise EngineError(f'unknown TensorRT runtime {runtime!r}: use one of {", ".join(RUNTIMES)}')
    try:
        return importlib.import_module(_MODULES[runtime])
    except ImportError as exc:
        raise BackendUnavailableError(f'the {runtime} backend needs the {_MODULES[runtime]} module ({exc}): '
                                      f'{_INSTALL[runtime]}') from None


# -- logging -----------------------------------------------------------------------------------
_LOGGERS: dict[str, Any] = {}


def trt_logger(trt: ModuleType) -> Any:
    """One ``trt.ILogger`` per TensorRT module that forwards to Python logging and keeps errors.

    TensorRT wants a single logger per process; ``errors`` collects every error message so a
    failed build or load can quote them.
    """
    key = trt.__name__
    if key not in _LOGGERS:
        severity = trt.ILogger.Severity
        levels = {severity.INTERNAL_ERROR: logging.CRITICAL, severity.ERROR: logging.ERROR,
                  severity.WARNING: logging.WARNING, severity.INFO: logging.DEBUG}
        trt_log = logging.getLogger(f'{__name__}.{key}')

        class _Logger(trt.ILogger):  # type: ignore[name-defined, misc]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, sev: Any, msg: str) -> None:
                level = levels.get(sev)
                if level is None:  # VERBOSE
                    return
                if level >= logging.ERROR:
                    self.errors.append(msg)
                trt_log.log(level, '%s', msg)

        _LOGGERS[key] = _Logger()
    return _LOGGERS[key]


def _errors_since(logger: Any, start: int) -> str:
    errors = logger.errors[start:]
    return ('\n' + '\n'.join(f'  {e}' for e in errors)) if errors else ' (TensorRT logged no error)'


# -- build stages ------------------------------------------------------------------------------
def network_from_onnx(trt: ModuleType, builder: Any, path: Path) -> tuple[Any, Any]:
    """Parse ``path`` into a strongly typed network; returns (network, parser).

    ``parse_from_file`` finds ONNX external data (``<graph>.onnx.data``) beside the graph. Keep
    the parser alive until the build ends: it owns the weights.
    """
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED', None)
    if strongly_typed is not None:  # always on (and the flag ignored) in TensorRT 11 and TensorRT-RTX
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger(trt))
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        listed = '\n'.join(f'  [{i + 1}] ' + e.replace('\n', '\n      ') for i, e in enumerate(errors))
        raise EngineError(f'the {trt.__name__} ONNX parser rejected {path} with {len(errors)} error(s):\n'
                          f'{listed or "  (no parser error recorded)"}')
    return network, parser


def _np_dtype(trt: ModuleType, dtype: Any) -> np.dtype | str:
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError:  # no numpy equivalent (bf16, fp8, ...)
        return str(dtype)


def network_tensors(trt: ModuleType, network: Any) -> dict[str, TensorSpec]:
    """Name -> (mode, shape, dtype) of a parsed network's inputs and outputs."""
    specs: dict[str, TensorSpec] = {}
    for mode, count, get in (('input', network.num_inputs, network.get_input),
                             ('output', network.num_outputs, network.get_output)):
        for i in range(count):
            t = get(i)
            specs[t.name] = (mode, tuple(t.shape), _np_dtype(trt, t.dtype))
    return specs


def engine_tensors(trt: ModuleType, engine: Any) -> dict[str, TensorSpec]:
    """Name -> (mode, shape, dtype) of a deserialized engine's I/O tensors."""
    specs: dict[str, TensorSpec] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = 'input' if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else 'output'
        specs[name] = (mode, tuple(engine.get_tensor_shape(name)), _np_dtype(trt, engine.get_tensor_dtype(name)))
    return specs


def check_tensors(io: PolicyIO, found: Mapping[str, TensorSpec], where: str, batch: int = 1) -> None:
    """Raise EngineError naming the first tensor of ``found`` that differs from ``io``'s table.

    ``batch``: the leading dimension every tensor must have (``DYNAMIC`` for the batched graph).
    """
    want: dict[str, TensorSpec] = {}
    for mode, specs in (('input', io.input_specs(batch)), ('output', io.output_specs(batch))):
        for name, (shape, dtype) in specs.items():
            want[name] = (mode, shape, dtype)
    for name, (mode, shape, dtype) in want.items():
        got = found.get(name)
        if got is None:
            raise EngineError(f'{where} has no {mode} {name!r} ({list(shape)} {dtype}); it has '
                              f'{", ".join(sorted(found)) or "no tensors"}: re-export with `pi0-trt export`')
        if got != (mode, shape, dtype):
            raise EngineError(f'{where} {name!r}: expected {mode} {list(shape)} {dtype}, '
                              f'found {got[0]} {list(got[1])} {got[2]}: re-export with `pi0-trt export`')
    extra = sorted(set(found) - set(want))
    if extra:
        raise EngineError(f'{where} has unexpected tensors {extra}: re-export with `pi0-trt export`')


def parse_compute_capabilities(trt: ModuleType, targets: Sequence[str]) -> list[Any]:
    """Map '8.6' / 'SM86' / 'current' to ``trt.ComputeCapability`` members (TensorRT-RTX only)."""
    members = trt.ComputeCapability.__members__
    caps = []
    for target in targets:
        key = target.strip().upper().replace('.', '')
        key = key if key == 'CURRENT' or key.startswith('SM') else f'SM{key}'
        if key not in members or key == 'NONE':
            choices = ', '.join(m for m in members if m != 'NONE')
            raise EngineError(f'unknown compute capability {target!r}: use one of {choices} (or e.g. 8.6)')
        caps.append(members[key])
    return caps


def builder_config(trt: ModuleType, builder: Any, runtime: str, precision: str, workspace_gib: float,
                   timing_cache: Path | None, targets: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
    """Builder config: workspace limit, TF32 off for fp32, timing cache, RTX targets.

    Returns (config, summary for the log). The batch-1 graph's shapes are static, so no optimization
    profile; a batched build adds its profiles with ``add_batch_profiles``.
    """
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * GIB))
    summary: dict[str, Any] = {'workspace_gib': workspace_gib, 'strongly_typed': True}
    if precision == 'fp32' and hasattr(trt.BuilderFlag, 'TF32'):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 graphs are the parity reference
        summary['tf32'] = False
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b''
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, False):
            LOG.warning('timing cache %s does not match this GPU/TensorRT; starting a fresh one', timing_cache)
            cache = config.create_timing_cache(b'')
            if not config.set_timing_cache(cache, False):
                raise EngineError('builder config: set_timing_cache refused a fresh timing cache')
        summary['timing_cache'] = f'{timing_cache} ({len(blob)} bytes loaded)'
    if targets:
        config.num_compute_capabilities = len(targets)
        for i, cap in enumerate(targets):
            if not config.set_compute_capability(cap, i):
                raise EngineError(f'builder config: set_compute_capability({cap}, {i}) failed')
        summary['targets'] = [str(c) for c in targets]
    return config, summary


def add_batch_profiles(builder: Any, config: Any, io: PolicyIO, batch_sizes: Sequence[int]) -> None:
    """Add one optimization profile per batch size (min = opt = max), in ``batch_sizes`` order."""
    for batch in batch_sizes:
        profile = builder.create_optimization_profile()
        for name, (shape, _) in io.input_specs(batch).items():
            profile.set_shape(name, shape, shape, shape)
        if config.add_optimization_profile(profile) < 0:
            raise EngineError(f'builder config: the optimization profile for batch {batch} was refused')


def serialize_network(trt: ModuleType, builder: Any, network: Any, config: Any, what: str) -> bytes:
    """Build and serialize; raise EngineError quoting TensorRT's errors when it returns nothing."""
    logger = trt_logger(trt)
    start = len(logger.errors)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f'{trt.__name__} could not build {what}:{_errors_since(logger, start)}')
    return bytes(plan)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_plan(path: Path, plan: bytes) -> None:
    _write_atomic(path, plan)


def save_timing_cache(config: Any, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is not None:
        _write_atomic(path, bytes(cache.serialize()))


def record_engine(engine_dir: Path, runtime: str, record: EngineRecord, batched: bool = False) -> None:
    """Store ``record`` as ``engines[runtime]`` (or ``batched.engines[runtime]``) in ``pi0_export.json``.

    Read-modify-write, atomic.
    """
    meta = read_manifest(engine_dir)
    (meta['batched']['engines'] if batched else meta['engines'])[runtime] = record
    write_manifest(engine_dir, meta)


def _export_meta(engine_dir: Path) -> tuple[ExportManifest, PolicyIO]:
    meta = read_manifest(engine_dir)
    return meta, policy_io(meta)


# -- build -------------------------------------------------------------------------------------
def build_engines(engine_dir: str | Path, runtime: str = 'tensorrt', workspace_gib: float = 8.0,
                  timing_cache: bool = True, compute_capabilities: Sequence[str] | None = None,
                  batched: bool = False) -> Path:
    """Build the export's graph with ``runtime``, save the plan, record it; returns the plan path.

    ``compute_capabilities`` (TensorRT-RTX only) picks the GPUs the plan targets, e.g.
    ``['8.6']`` or ``['current']`` (needs a GPU); by default TensorRT-RTX builds one portable plan
    for 8.0/8.6/8.9/12.x without a GPU. ``timing_cache`` reuses ``ENGINE_DIR/timing.cache`` with
    TensorRT; TensorRT-RTX ignores timing caches (deprecated no-ops since 1.2). ``batched`` builds
    the dynamic-batch graph instead, one optimization profile per exported batch size.
    """
    engine_dir = Path(engine_dir)
    meta, io = _export_meta(engine_dir)
    source: Any = meta
    batch_sizes: list[int] = []
    if batched:
        source = batched_graph(engine_dir, meta)
        batch_sizes = list(source['batch_sizes'])
    graph = engine_dir / source['graph']
    if not graph.is_file():
        raise ExportError(f'{graph} not found: re-export with `pi0-trt export --out {engine_dir}`')
    trt = import_tensorrt(runtime)
    if runtime == 'tensorrt':
        cudart()  # TensorRT builds on a GPU: say so if cuda-python is missing, rather than "no GPU"
    gpu = current_gpu()
    if runtime == 'tensorrt' and gpu is None:
        raise EngineError('TensorRT builds need a CUDA GPU and none is visible here; to build without a GPU '
                          f'use TensorRT-RTX: pi0-trt build {engine_dir} --runtime tensorrt_rtx')
    if compute_capabilities and runtime != 'tensorrt_rtx':
        raise EngineError('compute_capabilities is a TensorRT-RTX setting; TensorRT builds for the GPU it runs on')
    targets = parse_compute_capabilities(trt, compute_capabilities) if compute_capabilities else []
    use_cache = timing_cache and runtime == 'tensorrt'
    if timing_cache and not use_cache:
        LOG.info('timing cache: not used with TensorRT-RTX (a deprecated no-op there)')
    plan_path = engine_dir / plan_name(meta['precision'], runtime, batched)
    what = f'{graph.name} ({meta["precision"]}{", batch sizes " + ",".join(map(str, batch_sizes)) if batched else ""})'

    t0 = time.monotonic()
    builder = trt.Builder(trt_logger(trt))
    network, parser = network_from_onnx(trt, builder, graph)
    check_tensors(io, network_tensors(trt, network), f'ONNX graph {graph.name}', DYNAMIC if batched else 1)
    config, summary = builder_config(trt, builder, runtime, meta['precision'], workspace_gib,
                                     engine_dir / TIMING_CACHE if use_cache else None, targets)
    if batched:
        add_batch_profiles(builder, config, io, batch_sizes)
        summary['batch_profiles'] = batch_sizes
    LOG.info('building %s with %s %s on %s: %s (%d layers)', what, runtime, trt.__version__,
             f'{gpu.name} (sm {gpu.cc})' if gpu else 'CPU', summary, network.num_layers)
    plan = serialize_network(trt, builder, network, config, what)
    build_seconds = time.monotonic() - t0
    del parser  # the network no longer needs the parser's weights

    save_plan(plan_path, plan)
    if use_cache:
        save_timing_cache(config, engine_dir / TIMING_CACHE)
    record: EngineRecord = {
        'plan': plan_path.name,
        'runtime': runtime,
        'tensorrt_version': trt.__version__,
        'gpu': gpu.name if gpu else CPU_BUILD,
        'compute_capability': gpu.cc if gpu else None,
        'targets': _recorded_targets(runtime, gpu, targets),
        'onnx_sha256': source['onnx_sha256'],
        'plan_sha256': hashlib.sha256(plan).hexdigest(),
        'precision': meta['precision'],
        'workspace_gib': workspace_gib,
        'plan_bytes': len(plan),
        'build_seconds': round(build_seconds, 3),
        'built_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    if batched:
        record['batch_sizes'] = batch_sizes  # profile i serves batch_sizes[i]
    record_engine(engine_dir, runtime, record, batched)
    LOG.info('built %s in %.1f s: %s (%.1f MB)', what, build_seconds, plan_path, len(plan) / 1e6)
    return plan_path


def _recorded_targets(runtime: str, gpu: GpuIdentity | None, targets: Sequence[Any]) -> list[str]:
    """Compute capabilities ('major.minor') the plan runs on."""
    if runtime == 'tensorrt':
        return [gpu.cc] if gpu else []
    if not targets:
        return list(RTX_DEFAULT_TARGETS)
    out = []
    for cap in targets:
        if cap.name == 'CURRENT':
            out.append(gpu.cc if gpu else 'current')
        else:  # SM86 = 86 -> '8.6', SM120 = 120 -> '12.0'
            out.append(f'{int(cap) // 10}.{int(cap) % 10}')
    return out


# -- load --------------------------------------------------------------------------------------
def check_engine_record(record: Mapping[str, Any], engine_dir: Path, runtime: str, trt_version: str,
                        onnx_sha256: str, gpu: GpuIdentity | None) -> None:
    """Refuse a plan built by another TensorRT version, for another GPU, or from another graph.

    ``record`` is ``engines[runtime]`` from ``pi0_export.json``; the other arguments describe
    this machine and the current export.
    """
    plan = record.get('plan', '?')
    hint = rebuild_hint(engine_dir, runtime, batched='batch_sizes' in record)
    built = record.get('tensorrt_version')
    if built != trt_version:
        raise EngineError(f'{plan} was built with {runtime} {built} but {runtime} {trt_version} is installed: {hint}')
    if record.get('onnx_sha256') != onnx_sha256:
        raise EngineError(f'{plan} was built from ONNX sha256 {str(record.get("onnx_sha256"))[:12]}... but the export '
                          f'now has {onnx_sha256[:12]}... (re-exported since): {hint}')
    if gpu is None:
        raise EngineError(f'{plan} needs a CUDA GPU and none is visible here (check the driver and '
                          'CUDA_VISIBLE_DEVICES)')
    if runtime == 'tensorrt':
        if (record.get('gpu'), record.get('compute_capability')) != (gpu.name, gpu.cc):
            raise EngineError(f'{plan} was built for {record.get("gpu")} (sm {record.get("compute_capability")}) '
                              f'but this is {gpu.name} (sm {gpu.cc}): {hint}')
    else:
        targets = record.get('targets') or []
        if gpu.cc not in targets:
            extra = ' (TensorRT-RTX does not run on Hopper: use --runtime tensorrt)' if gpu.cc == '9.0' else ''
            raise EngineError(f'{plan} targets compute capability {", ".join(targets) or "none"} but '
                              f'{gpu.name} is sm {gpu.cc}{extra}: {hint}')


@dataclasses.dataclass
class LoadedEngine:
    """A deserialized engine with what created it; keep ``runtime`` alive as long as ``engine``."""

    trt: ModuleType
    runtime: Any  # trt.Runtime
    engine: Any  # trt.ICudaEngine
    io: PolicyIO
    plan_path: Path
    record: EngineRecord
    gpu: GpuIdentity


def load_engine(engine_dir: str | Path, runtime: str = 'tensorrt', batched: bool = False) -> LoadedEngine:
    """Deserialize ``engines[runtime]`` (``batched``: ``batched.engines[runtime]``) on the current CUDA device, checked.

    Checks, in order: the plan is recorded, present and has the recorded sha256 (a corrupted plan
    never reaches the deserializer); TensorRT version, ONNX hash and GPU match
    (``check_engine_record``); TensorRT-RTX's own validity check; the engine's I/O tensors match
    the export's ``PolicyIO``. Each failure says what to do.
    """
    engine_dir = Path(engine_dir)
    meta, io = _export_meta(engine_dir)
    hint = rebuild_hint(engine_dir, runtime, batched)
    source: Any = batched_graph(engine_dir, meta) if batched else meta
    record = source['engines'].get(runtime)
    where = f'batched.engines[{runtime!r}]' if batched else f'engines[{runtime!r}]'
    if record is None:
        raise EngineError(f'{engine_dir} has no {"batched " if batched else ""}{runtime} engine yet: build it with '
                          f'`pi0-trt build {engine_dir} --runtime {runtime}{" --batched" if batched else ""}`')
    if not isinstance(record, dict) or not isinstance(record.get('plan'), str):
        raise EngineError(f'{where} in {engine_dir / EXPORT_METADATA} names no plan file: {hint}')
    plan_path = engine_dir / record['plan']
    if not plan_path.is_file():
        raise EngineError(f'{plan_path} is recorded in {EXPORT_METADATA} but missing: {hint}')
    plan = plan_path.read_bytes()
    recorded = record.get('plan_sha256')
    if recorded is not None and hashlib.sha256(plan).hexdigest() != recorded:
        raise EngineError(f'{plan_path.name} does not have the sha256 recorded when it was built '
                          f'({str(recorded)[:12]}...): the plan is corrupted or was replaced: {hint}')
    trt = import_tensorrt(runtime)
    cudart()  # the runner's buffers need cuda-python; fail here with the install hint
    gpu = current_gpu()
    check_engine_record(record, engine_dir, runtime, trt.__version__, source['onnx_sha256'], gpu)
    assert gpu is not None  # check_engine_record refuses a machine without one

    logger = trt_logger(trt)
    trt_runtime = trt.Runtime(logger)
    if hasattr(trt_runtime, 'get_engine_validity'):  # TensorRT-RTX: checks the plan header against this system
        validity, diagnostics = trt_runtime.get_engine_validity(plan)
        if validity == trt.EngineValidity.INVALID:
            reasons = [n for n, flag in trt.EngineInvalidityDiagnostics.__members__.items()
                       if int(diagnostics) & int(flag)] or [f'diagnostics {int(diagnostics):#x}']
            raise EngineError(f'{plan_path.name} is invalid on this system ({", ".join(reasons)}): {hint}')
    start = len(logger.errors)
    engine = trt_runtime.deserialize_cuda_engine(plan)
    if engine is None:
        errors = '; '.join(logger.errors[start:]) or 'TensorRT logged no error'
        raise EngineError(f'could not deserialize {plan_path.name} ({errors}): {hint}')
    check_tensors(io, engine_tensors(trt, engine), f'engine {plan_path.name}', DYNAMIC if batched else 1)
    LOG.info('loaded %s (%s %s, %.1f MB) on %s (sm %s)', plan_path.name, runtime, trt.__version__,
             len(plan) / 1e6, gpu.name, gpu.cc)
    return LoadedEngine(trt=trt, runtime=trt_runtime, engine=engine, io=io, plan_path=plan_path,
                        record=record, gpu=gpu)
