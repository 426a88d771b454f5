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

"""Every inference backend in one table: its name, what it reads, the options it takes, where it lives.

``make_runner``, the ``pi0-trt --backend`` choices, the node's parameter check and the launch
file's argument description all read ``BACKENDS``, so a backend or an option is added here once.
Options are checked (names and types) before anything is imported: a YAML whose
``backend_options`` belong to another backend is refused with the options this one takes, not
with a TypeError from a constructor. This module imports only the standard library and
``errors``, so the launch file and the node's parameter check can use it without numpy or a
backend installed.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

from pi0_trt_ros.errors import RunnerError

ONNXRUNTIME_DEVICES = ('cpu', 'cuda')
TORCH_DTYPES = ('fp32', 'fp16', 'bf16')
TORCH_MODES = ('eager', 'cuda_graph')
# The torch fast path's ways of running the denoise steps' GEMMs (model/fast.py), the default first
TORCH_EXPERT_GEMMS = ('skinny', 'mixed', 'cublas', 'triton')
DEFAULT_EXPERT_GEMM = TORCH_EXPERT_GEMMS[0]
_JSON_KIND = {bool: 'true or false', int: 'an integer', str: 'a string'}


@dataclasses.dataclass(frozen=True)
class BackendOption:
    """One keyword option of a backend (``backend_options`` key), with its JSON type."""

    name: str
    kind: type  # bool, int or str (JSON types; true/false are not integers here)
    default: Any
    meaning: str
    choices: tuple[str, ...] = ()  # allowed values (str options); empty: any

    def check(self, value: Any, backend: str) -> Any:
        """Return ``value``; raise RunnerError if it has the wrong type or is not one of ``choices``."""
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise RunnerError(f'backend option {self.name!r} of {backend} must be {_JSON_KIND[self.kind]} '
                              f'({self.meaning}), got {value!r}')
        if self.choices and value not in self.choices:
            raise RunnerError(f'backend option {self.name!r} of {backend} must be one of '
                              f'{", ".join(self.choices)}, got {value!r}')
        return value

    def describe(self) -> str:
        return f'{self.name} ({self.kind.__name__}, default {self.default!r}: {self.meaning})'


@dataclasses.dataclass(frozen=True)
class Backend:
    """One backend: the runner class behind it (imported on use) and the options it takes."""

    name: str
    summary: str  # a few words, for help texts
    reads: str  # 'export' (an export directory, ``engine_dir``) or 'checkpoint'
    runner: str  # 'module:Class', imported by ``runner_class``
    options: tuple[BackendOption, ...]
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # constructor arguments set by the name

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``options`` checked against this backend's; raise one-line RunnerError on the first problem."""
        known = {o.name: o for o in self.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise RunnerError(f'backend_options {", ".join(map(repr, unknown))} not taken by the {self.name} '
                              f'backend; it takes {self.describe_options()}')
        return {name: known[name].check(value, self.name) for name, value in options.items()}

    def describe_options(self) -> str:
        return '; '.join(o.describe() for o in self.options) or 'no options'

    def runner_class(self) -> type:
        """Import the runner class (only now: importing torch or TensorRT costs seconds and memory)."""
        module, _, cls = self.runner.partition(':')
        return getattr(importlib.import_module(module), cls)


_WARMUP = 'policy calls at activation, before the first timed one'
_TENSORRT_OPTIONS = (
    BackendOption('use_cuda_graph', bool, True, 'capture the whole cycle in one CUDA graph'),
    BackendOption('device', int, 0, 'CUDA device index'),
    BackendOption('warmup', int, 2, _WARMUP),
)
BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend('onnxruntime', 'ONNX Runtime, CPU or CUDA EP', 'export',
            'pi0_trt_ros.runners.onnxruntime:OnnxRuntimeRunner',
            (BackendOption('device', str, 'cpu', 'execution provider', ONNXRUNTIME_DEVICES),
             BackendOption('threads', int, 0, 'intra-op threads, 0: one per core'),
             BackendOption('warmup', int, 1, _WARMUP))),
    Backend('tensorrt', 'TensorRT plan', 'export', 'pi0_trt_ros.runners.tensorrt:TensorRTRunner',
            _TENSORRT_OPTIONS, {'runtime': 'tensorrt'}),
    Backend('tensorrt_rtx', 'TensorRT-RTX plan (RTX GPUs)', 'export', 'pi0_trt_ros.runners.tensorrt:TensorRTRunner',
            _TENSORRT_OPTIONS, {'runtime': 'tensorrt_rtx'}),
    Backend('torch', 'PyTorch on the checkpoint', 'checkpoint', 'pi0_trt_ros.runners.torch:TorchRunner',
            (BackendOption('device', str, 'cuda', 'torch device: cuda, cuda:N or cpu'),
             BackendOption('dtype', str, 'fp16', 'compute dtype', TORCH_DTYPES),
             BackendOption('mode', str, 'cuda_graph', 'eager, or one CUDA graph per cycle', TORCH_MODES),
             BackendOption('warmup', int, 3, _WARMUP),
             BackendOption('compiled', bool, False, 'torch.compile the hot functions'),
             BackendOption('fast', bool, False, 'the fused Triton-kernel fast path (not with compiled)'),
             BackendOption('expert_gemm', str, DEFAULT_EXPERT_GEMM, "fast path's denoise-step GEMMs: all four on "
                           'Triton, split-K Triton o_proj/down with cuBLAS QKV and gate/up, all cuBLAS, or all fused '
                           'Triton',
                           TORCH_EXPERT_GEMMS),
             BackendOption('prefix_fp8', bool, False, "fast path, bf16: the VLM prefix's GEMMs in FP8 e4m3 "
                           '(faster on Hopper, less accurate)'))),
)}
EXPORT_BACKENDS = tuple(name for name, b in BACKENDS.items() if b.reads == 'export')


def get_backend(name: str) -> Backend:
    """Return the backend called ``name``; raise RunnerError listing the known ones."""
    backend = BACKENDS.get(name)
    if backend is None:
        raise RunnerError(f'unknown backend {name!r}; choose one of {", ".join(BACKENDS)}')
    return backend


def describe_backends() -> str:
    """One line naming each backend and what it is, for help texts."""
    return ', '.join(f'{b.name} ({b.summary})' for b in BACKENDS.values())


def describe_backend_options() -> str:
    """One line naming the options of each backend, for help texts."""
    return '; '.join(f'{b.name}: {", ".join(o.name for o in b.options)}' for b in BACKENDS.values())
