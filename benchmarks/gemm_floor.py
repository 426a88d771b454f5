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

"""The GEMM-only floor of one full-size Pi0 call: its exact GEMM shapes, nothing else, on a GPU.

Every GEMM of a policy call at batch 1 (3 cameras -> 768 image tokens + 48 text tokens = 816
prefix rows; the expert's 51 suffix rows, 10 Euler steps), each with its own weight tensor as in
the model (the expert's 18 layers reused by every step), launched one after another in one CUDA
graph. No norms, attention, RoPE or activations: what is left when everything else is free. The
fast path's stage times (`benchmarks/fast_path.py`) sit above these rows; the gap is what fusion
can still win. ``--fp8`` adds the same shapes as e4m3 GEMMs with row-wise scales
(``torch._scaled_mm``, bf16 out) for the vision tower and the prefix.

    python benchmarks/gemm_floor.py [--iters 50] [--fp8]
"""

import argparse
from pathlib import Path
import sys

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pi0_trt_ros.bench import capture_cuda_graph, cuda_event_ms, device_name  # noqa: E402
from pi0_trt_ros.model.config import Pi0Config  # noqa: E402

PREFIX_ROWS, SUFFIX_ROWS, CAMERAS = 816, 51, 3


def stage_shapes(cfg: Pi0Config) -> dict[str, list[tuple[int, int, int, int]]]:
    """Stage -> [(rows M, in K, out N, times)] of every GEMM (a distinct weight per entry, ``times`` uses)."""
    vis, vlm, exp = cfg.vision, cfg.vlm, cfg.expert
    tokens = CAMERAS * vis.num_patches
    vision = [(tokens, 3 * vis.patch_size ** 2, vis.width, 1)]  # the patch embedding as a GEMM
    for _ in range(vis.depth):
        vision += [(tokens, vis.width, 3 * vis.width, 1), (tokens, vis.width, vis.width, 1),
                   (tokens, vis.width, vis.mlp_dim, 1), (tokens, vis.mlp_dim, vis.width, 1)]
    vision.append((tokens, vis.width, vlm.width, 1))  # projector

    def gemma(spec, rows: int, times: int) -> list[tuple[int, int, int, int]]:
        qkv = (spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim
        attn = spec.num_heads * spec.head_dim
        layer = [(rows, spec.width, qkv, times), (rows, attn, spec.width, times),
                 (rows, spec.width, 2 * spec.mlp_dim, times), (rows, spec.mlp_dim, spec.width, times)]
        return layer * spec.depth

    steps = cfg.num_inference_steps
    expert = gemma(exp, SUFFIX_ROWS, steps)
    expert += [(cfg.chunk_size, cfg.max_action_dim, exp.width, steps), (cfg.chunk_size, exp.width, exp.width, steps),
               (cfg.chunk_size, exp.width, exp.width, steps), (cfg.chunk_size, exp.width, cfg.max_action_dim, steps)]
    return {'vision (3 cameras)': vision, 'prefix VLM (816 rows)': gemma(vlm, PREFIX_ROWS, 1),
            f'expert ({steps} steps x 51 rows)': expert}


def bf16_launches(shapes: list[tuple[int, int, int, int]]) -> list:
    """One closure per GEMM use, over bf16 operands (weights [N, K] as nn.Linear keeps them)."""
    calls = []
    for m, k, n, times in shapes:
        a = torch.randn(m, k, device='cuda', dtype=torch.bfloat16)
        w = torch.randn(n, k, device='cuda', dtype=torch.bfloat16) / k ** 0.5
        out = torch.empty(m, n, device='cuda', dtype=torch.bfloat16)
        calls += [lambda a=a, w=w, out=out: torch.mm(a, w.t(), out=out)] * times
    return calls


def fp8_launches(shapes: list[tuple[int, int, int, int]]) -> list:
    """Build the same GEMMs in e4m3, with a scale per row of a and per output column (bf16 out)."""
    calls = []
    for m, k, n, times in shapes:
        k16 = (k + 15) // 16 * 16  # _scaled_mm wants K a multiple of 16 (the patch embedding: 588 -> 592)
        a = torch.randn(m, k16, device='cuda').to(torch.float8_e4m3fn)
        w = torch.randn(n, k16, device='cuda').to(torch.float8_e4m3fn)
        sa = torch.rand(m, 1, device='cuda') + 0.5
        sw = torch.rand(1, n, device='cuda') + 0.5
        calls += [lambda a=a, w=w, sa=sa, sw=sw: torch._scaled_mm(a, w.t(), scale_a=sa, scale_b=sw,
                                                                  out_dtype=torch.bfloat16)] * times
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=50)
    parser.add_argument('--fp8', action='store_true', help='also time the vision and prefix GEMMs in e4m3')
    args = parser.parse_args()
    cfg = Pi0Config.from_variants('gemma_2b', 'gemma_300m')
    print(f'| GEMM-only floor, CUDA graph ({device_name()}) | GEMMs | p50 ms |')
    print('|---|---|---|')
    total = 0.0
    fp8_rows = []
    for stage, shapes in stage_shapes(cfg).items():
        variants = [('bf16', bf16_launches)]
        if args.fp8 and not stage.startswith('expert'):
            variants.append(('fp8 e4m3, row-wise scales', fp8_launches))
        for label, make in variants:
            calls = make(shapes)
            graph = capture_cuda_graph(lambda calls=calls: [c() for c in calls])
            p50 = float(np.percentile(cuda_event_ms(graph.replay, args.iters), 50))
            del graph, calls
            torch.cuda.empty_cache()
            row = f'| {stage}, {label} | {sum(s[3] for s in shapes)} | {p50:.3f} |'
            if label == 'bf16':
                total += p50
                print(row)
            else:
                fp8_rows.append(row)
    print(f'| whole call, bf16 | | {total:.3f} |')
    for row in fp8_rows:
        print(row)


if __name__ == '__main__':
    main()
