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

"""Bring the node's policy up: a checked, active, warmed-up runner and its tokenizer.

In the order that fails fastest: the tokenizer file is found before the (slow) engine load, the
exported policy is checked against the configuration (``check_against_policy``, the check offline
replay makes too) before the runner is activated, and a runner that was activated is deactivated
again if a later step fails. The warm-up calls run on a neutral observation (zero noise, one
valid token: an empty prompt would not be), so that first-call costs (allocations, kernel
selection, lazy initialization) are paid before the first real set; their times seed chunk
mode's lead before any chunk was measured.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, TYPE_CHECKING

from pi0_trt_ros.node.params import check_against_policy

if TYPE_CHECKING:
    from pi0_trt_ros.node.params import ControlParams
    from pi0_trt_ros.runners.base import Runner


@dataclasses.dataclass
class LoadedPolicy:
    """An active runner, its tokenizer, and what bringing it up cost."""

    runner: Runner
    tokenizer: Any  # a Pi0Tokenizer for the runner's token_len
    load_s: float  # runner created, checked and activated (s)
    warmup_ms: list[float]  # each warm-up call (ms)

    def summary(self, backend: str, iterations: int) -> str:
        """Return the start-up log line: load and warm-up times, cameras, chunk shape."""
        io, calls = self.runner.io, self.warmup_ms
        return (f'{backend} runner ready in {self.load_s:.2f} s; warm-up {iterations} calls in '
                f'{sum(calls) / 1e3:.3f} s (last {calls[-1] if calls else 0.0:.2f} ms); '
                f'cameras {list(io.camera_keys)} {[f"{w}x{h}" for h, w in io.camera_hw]}, '
                f'chunk {io.chunk_size}x{io.action_dim}')


def load_policy(p: ControlParams) -> LoadedPolicy:
    """Create, check and activate the runner ``p`` names, load its tokenizer and warm it up."""
    from pi0_trt_ros.runners import make_runner  # lazy: only the chosen backend gets imported
    from pi0_trt_ros.tokenizer import Pi0Tokenizer, resolve_tokenizer_file

    resolve_tokenizer_file(p.tokenizer)  # fail before the (slow) engine load
    t0 = time.monotonic()
    runner = make_runner(p.backend, engine_dir=p.engine_dir or None, checkpoint=p.checkpoint or None,
                         **p.backend_options)
    check_against_policy(p, runner.io)
    runner.activate()
    try:
        load_s = time.monotonic() - t0
        tokenizer = Pi0Tokenizer.from_path(p.tokenizer, runner.io.token_len)
        return LoadedPolicy(runner, tokenizer, load_s, warm_up(runner, p.warmup_iterations))
    except BaseException:
        runner.deactivate()
        raise


def warm_up(runner: Runner, iterations: int) -> list[float]:
    """Run ``iterations`` policy calls on a neutral observation; return each call's time (ms)."""
    staging = runner.staging
    staging.token_mask[:] = False
    staging.token_mask[0] = True  # one valid token, as an empty prompt would not be
    staging.noise[:] = 0.0
    calls_ms = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        runner.infer()
        calls_ms.append((time.perf_counter() - t0) * 1e3)
    staging.token_mask[:] = False
    return calls_ms
