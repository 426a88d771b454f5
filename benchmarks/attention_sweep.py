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

"""Tile sizes of the fast path's attention kernel at Pi0's full-size shapes, timed on a GPU.

Two shapes: the prefix (8 query heads x 816 tokens over 816 keys) and the expert's suffix
(8 x 51 queries over 867 cached keys), head dim 256, one KV head, bf16; for the suffix also value
slices (``block_dv``: 64 or 128 of V's 256 columns per program), with all keys in one chunk (no
merge kernel) or in chunks of 256. Each configuration is
captured in a CUDA graph of 20 launches and timed by CUDA events; the table gives microseconds
per launch (median of the replays).

    python benchmarks/attention_sweep.py
"""

import itertools
from pathlib import Path
import sys

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pi0_trt_ros.kernels.attention import attention, HIDDEN_GROUP  # noqa: E402


def time_us(fn, reps: int = 20, replays: int = 30) -> float:
    """Median microseconds per ``fn`` call, ``reps`` calls per graph replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    ms = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        ms.append(start.elapsed_time(end))
    return float(np.median(ms)) * 1000 / reps


def main() -> None:
    dev, dtype, d, h = 'cuda', torch.bfloat16, 256, 8
    p, valid, s = 816, 780, 51
    pad = torch.arange(p, device=dev) < valid
    prefix_group = torch.where(pad, 0, HIDDEN_GROUP).to(torch.int32)
    suffix_group = torch.tensor([1] + [2] * (s - 1), dtype=torch.int32, device=dev)
    cases = {
        'prefix': (p, p, torch.zeros(p, dtype=torch.int32, device=dev), prefix_group),
        'suffix': (s, p + s, suffix_group, torch.cat([prefix_group, suffix_group])),
    }
    print(f'| shape ({torch.cuda.get_device_name()}) | block_m | block_n | chunk | block_dv | warps | stages | us |')
    print('|---|---|---|---|---|---|---|---|')
    best = {}
    for name, (sq, kk, qg, kg) in cases.items():
        q = torch.randn(sq, h * d, device=dev).to(dtype)
        k = torch.randn(1, kk, d, device=dev).to(dtype)
        v = torch.randn(1, kk, d, device=dev).to(dtype)
        out = torch.empty_like(q)
        ref = torch.empty_like(q)
        attention(q, k, v, qg, kg, ref, block_m=64, block_n=32, chunk=kk)
        if name == 'prefix':  # many rows: no split; the tile and the pipeline depth matter
            configs = list(itertools.product((64, 128), (32, 64), [kk], [d], (4, 8), (2, 3)))
        else:  # few rows: the split (a run-time argument) and the value slices matter
            configs = (list(itertools.product((16, 32), [64], (64, 128, 256), [d], (4,), (1, 2)))
                       + list(itertools.product((16, 32, 64), (32, 64), (kk, 256), (64, 128), (4,), (2, 3))))
        for bm, bn, chunk, dv, warps, stages in configs:
            if chunk < bn:
                continue
            try:
                def fn(bm=bm, bn=bn, chunk=chunk, dv=dv, warps=warps, stages=stages):
                    attention(q, k, v, qg, kg, out, block_m=bm, block_n=bn, chunk=chunk, block_dv=dv,
                              num_warps=warps, num_stages=stages)
                fn()
                err = float((out.float() - ref.float()).abs().max())
                us = time_us(fn)
            except Exception as e:  # a tile that does not fit (shared memory) is skipped, and said so
                print(f'| {name} | {bm} | {bn} | {chunk} | {dv} | {warps} | {stages} | failed: {type(e).__name__} |')
                continue
            flag = '' if err < 2e-2 else f' (max diff {err:.2e})'
            print(f'| {name} | {bm} | {bn} | {chunk} | {dv} | {warps} | {stages} | {us:.1f}{flag} |')
            if not flag and us < best.get(name, (float('inf'),))[0]:
                best[name] = (us, f'block_m {bm}, block_n {bn}, chunk {chunk}, block_dv {dv}, {warps} warps, '
                                  f'{stages} stages')
    for name, (us, config) in best.items():
        print(f'best {name}: {us:.1f} us with {config}')


if __name__ == '__main__':
    main()
