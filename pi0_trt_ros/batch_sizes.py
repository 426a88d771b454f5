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

"""The batch sizes a batched runner serves, and how a partial batch is padded to one of them.

A batched runner (several robots' observations in one policy call) runs only at the sizes it was
built for: one CUDA graph, TensorRT optimization profile and ONNX Runtime binding each, all over
staging buffers allocated once for the largest. A call with ``n`` observations runs at the
smallest size >= ``n``; the rows past ``n`` are padding whose actions are discarded. Batch 1
alone (``SINGLE``) is the single-robot path: the static batch-1 graph, exactly as before batching.

Standard library only: the CLI's argument parser and the export manifest read it without numpy.
"""

from __future__ import annotations

from typing import Iterable

from pi0_trt_ros.errors import RunnerError

SINGLE = (1,)  # the single-robot runner: the static batch-1 graph
DEFAULT_BATCH_SIZES = (1, 2, 4, 8)  # batched serving, when no sizes are given
MAX_BATCH_SIZE = 256  # a sanity bound on what a typo can ask for (full-size Pi0 at 64 already takes 656 ms)


def check_batch_sizes(sizes: Iterable[int]) -> tuple[int, ...]:
    """Return ``sizes`` sorted and de-duplicated; raise RunnerError unless each is in 1..MAX_BATCH_SIZE."""
    out = sorted(set(sizes))
    if not out:
        raise RunnerError('batch sizes: give at least one, e.g. 1,2,4,8')
    for size in out:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
            raise RunnerError(f'batch sizes must be integers in 1..{MAX_BATCH_SIZE}, got {size!r} '
                              f'(e.g. {",".join(map(str, DEFAULT_BATCH_SIZES))})')
    return tuple(out)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """Parse '1,2,4,8' (commas, optional spaces) into checked batch sizes."""
    try:
        sizes = [int(part) for part in text.split(',') if part.strip()]
    except ValueError:
        raise RunnerError(f'batch sizes: expected comma-separated integers such as 1,2,4,8, got {text!r}') from None
    return check_batch_sizes(sizes)


def padded_size(n: int, sizes: tuple[int, ...]) -> int:
    """Return the smallest of ``sizes`` (sorted, as ``check_batch_sizes`` returns them) that holds ``n`` rows."""
    for size in sizes:
        if size >= n:
            if n < 1:
                break
            return size
    raise RunnerError(f'a batch of {n} observations does not fit: this runner serves 1..{sizes[-1]} '
                      f'(batch sizes {",".join(map(str, sizes))}); split the batch or build with larger sizes')
