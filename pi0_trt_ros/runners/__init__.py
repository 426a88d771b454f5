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

"""Inference backends behind one interface: staged observation in, action chunk out.

`make_runner` imports each backend lazily, so the ROS node with the TensorRT backend never
imports torch, and a missing backend fails with a message naming what to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pi0_trt_ros.errors import RunnerError
from pi0_trt_ros.runners.base import Runner

BACKENDS = ('onnxruntime', 'tensorrt', 'tensorrt_rtx', 'torch')


def make_runner(backend: str, *, engine_dir: str | Path | None = None, checkpoint: str | Path | None = None,
                arch: str | Path | None = None, **options: Any) -> Runner:
    """Create (not activate) a runner.

    onnxruntime / tensorrt / tensorrt_rtx read an export directory (``engine_dir``, from
    `pi0-trt export`); torch reads a checkpoint directory. ``options`` go to the backend
    (onnxruntime: device, threads; tensorrt: use_cuda_graph; torch: device, dtype, mode).
    """
    if backend in ('onnxruntime', 'tensorrt', 'tensorrt_rtx') and engine_dir is None:
        raise RunnerError(f'the {backend} backend needs an export directory (--engine-dir): '
                          f'create one with `pi0-trt export --checkpoint DIR --out ENGINE_DIR`')
    if backend == 'onnxruntime':
        from pi0_trt_ros.runners.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(engine_dir, **options)
    if backend in ('tensorrt', 'tensorrt_rtx'):
        from pi0_trt_ros.runners.tensorrt import TensorRTRunner

        return TensorRTRunner(engine_dir, runtime=backend, **options)
    if backend == 'torch':
        from pi0_trt_ros.runners.torch import TorchRunner

        return TorchRunner(checkpoint, arch, **options)
    raise RunnerError(f'unknown backend {backend!r}; choose one of {", ".join(BACKENDS)}')
