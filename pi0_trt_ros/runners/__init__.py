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

`make_runner` creates the runner of a backend named in ``registry.BACKENDS``: options are checked
there first, then only that backend's module is imported, so the ROS node with the TensorRT
backend never imports torch, and a missing backend fails with a message naming what to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, TYPE_CHECKING

from pi0_trt_ros.batch_sizes import SINGLE
from pi0_trt_ros.errors import RunnerError
from pi0_trt_ros.runners.registry import BACKENDS, get_backend

if TYPE_CHECKING:
    from pi0_trt_ros.runners.base import Runner

__all__ = ['BACKENDS', 'make_runner']


def make_runner(backend: str, *, engine_dir: str | Path | None = None, checkpoint: str | Path | None = None,
                arch: str | Path | None = None, batch_sizes: Sequence[int] = SINGLE, **options: Any) -> Runner:
    """Create (not activate) a runner.

    onnxruntime / tensorrt / tensorrt_rtx read an export directory (``engine_dir``, from
    `pi0-trt export`); torch reads a checkpoint directory. ``options`` go to the backend, checked
    against ``registry.BACKENDS[backend].options`` (unknown names and wrong types raise RunnerError).
    ``batch_sizes`` beyond (1,) makes a batched runner (see ``pi0_trt_ros.batch_sizes``); engine
    backends then need an export made with ``--batch-sizes``.
    """
    spec = get_backend(backend)
    options = spec.check_options(options)
    if spec.reads == 'export':
        if engine_dir is None:
            raise RunnerError(f'the {backend} backend needs an export directory (--engine-dir): '
                              f'create one with `pi0-trt export --checkpoint DIR --out ENGINE_DIR`')
        return spec.runner_class()(engine_dir, **spec.fixed, **options, batch_sizes=batch_sizes)
    return spec.runner_class()(checkpoint, arch, **spec.fixed, **options, batch_sizes=batch_sizes)
