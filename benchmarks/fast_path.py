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

"""The torch fast path on a GPU: numerics against the fp32 model, and where its time goes.

Full-size Pi0 (random weights, real shapes, 3 cameras 640x480, 48 tokens of which 12 valid):

* numerics: the fp32 model (no TF32) is the reference; against it, the fast path (bf16, each
  way of running the expert's GEMMs, ``expert_gemm``) and the plain model in bf16 (what the
  previous CUDA-graph path computes), max and mean abs error of the action chunk over several
  noise draws;
* timing: each variant captured into a CUDA graph and replayed on one stream (device time by
  CUDA events, inputs already on the device): the whole call, the vision tower alone, the prefix
  (vision + VLM, KV cache filled) and one denoise step, for the fast path and the plain model;
  the whole call and one denoise step for each ``expert_gemm``; with ``--fp8``, the numerics,
  whole call and prefix with the VLM's GEMMs in e4m3 (``prefix_fp8``);
* ``--profile DIR``: one replay of the whole call's graph under the torch profiler: a kernel table,
  the trace, and the kernels' busy time against the span (what kernel boundaries cost).

    python benchmarks/fast_path.py [--iters 200] [--draws 3] [--expert-gemms cublas,mixed] [--fp8]
"""

import argparse
import copy
import json
from pathlib import Path
import sys

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pi0_trt_ros.bench import capture_cuda_graph, cuda_event_ms, random_full_size_policy  # noqa: E402
from pi0_trt_ros.checkpoint import cast_matmul_weights  # noqa: E402
from pi0_trt_ros.model.fast import EXPERT_GEMMS, FastPi0Policy  # noqa: E402
from pi0_trt_ros.testing.tiny import tiny_io  # noqa: E402


def errors(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    diff = (got.float() - want.float()).abs()
    return float(diff.max()), float(diff.mean())


def profile_graph(graph: 'torch.cuda.CUDAGraph', folder: Path) -> None:
    """Profile one replay of ``graph``: kernel table by total time, the trace, and the time between kernels.

    The gaps (one kernel's start minus the previous one's end) are what a call loses to kernel
    boundaries under a CUDA graph; summed with the kernel times they make the call's device time.
    """
    from torch.profiler import profile, ProfilerActivity

    folder.mkdir(parents=True, exist_ok=True)
    graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        graph.replay()
        torch.cuda.synchronize()
    (folder / 'kernels.txt').write_text(prof.key_averages().table(sort_by='cuda_time_total', row_limit=60))
    prof.export_chrome_trace(str(folder / 'trace.json'))
    kernels = sorted((e for e in prof.events() if e.device_type.name == 'CUDA'), key=lambda e: e.time_range.start)
    if not kernels:
        print('profile: the profiler saw no kernels in the graph replay')
        return
    busy = sum(e.time_range.elapsed_us() for e in kernels)
    span = kernels[-1].time_range.end - kernels[0].time_range.start
    print(f'profile: {len(kernels)} kernels, busy {busy / 1e3:.3f} ms of a {span / 1e3:.3f} ms span '
          f'({(span - busy) / len(kernels):.2f} us between kernels on average)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=200)
    parser.add_argument('--draws', type=int, default=3, help='noise draws for the numerics')
    parser.add_argument('--json', type=Path, help='write the figures here')
    parser.add_argument('--profile', type=Path,
                        help='write per-kernel tables of one fast call replayed from its CUDA graph into this folder')
    parser.add_argument('--fp8', action='store_true',
                        help='also the prefix in e4m3 (prefix_fp8): numerics, whole call and prefix timing')
    parser.add_argument('--expert-gemms', default=','.join(EXPERT_GEMMS),
                        help=f'comma-separated expert_gemm values to compare (of {EXPERT_GEMMS}); the first is '
                             'used for the stage rows')
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gpu = torch.cuda.get_device_name()
    io = tiny_io()
    dev = 'cuda'
    gen = torch.Generator(device=dev).manual_seed(0)
    frames = [torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, device=dev, generator=gen)
              for h, w in io.camera_hw]
    state = torch.randn(1, io.state_dim, device=dev, generator=gen)
    tokens = torch.zeros(1, io.token_len, dtype=torch.int64, device=dev)
    tokens[0, :12] = torch.randint(3, 1000, (12,), device=dev, generator=gen)
    mask = torch.zeros(1, io.token_len, dtype=torch.bool, device=dev)
    mask[0, :12] = True
    noises = [torch.randn(1, io.chunk_size, io.max_action_dim, device=dev, generator=gen) for _ in range(args.draws)]

    fp32 = random_full_size_policy(io).eval()
    with torch.inference_mode():
        want = [fp32(*frames, state, tokens, mask, z) for z in noises]
    plain = copy.deepcopy(fp32)
    del fp32
    cast_matmul_weights(plain, torch.bfloat16)
    gemms = args.expert_gemms.split(',')
    fast = FastPi0Policy(plain)  # shares (and re-lays out) plain's weights
    got = {}
    with torch.inference_mode():
        for gemm in gemms:
            fast.expert_gemm = gemm
            got[f'fast path bf16, expert_gemm={gemm}'] = [fast(*frames, state, tokens, mask, z) for z in noises]
        if args.fp8:
            fast.expert_gemm, fast.prefix_fp8 = gemms[0], True
            got[f'fast path bf16, expert_gemm={gemms[0]}, prefix e4m3'] = [
                fast(*frames, state, tokens, mask, z) for z in noises]
            fast.prefix_fp8 = False
        got['plain model bf16 (previous path)'] = [plain(*frames, state, tokens, mask, z) for z in noises]
    fast.expert_gemm = gemms[0]
    figures: dict = {'gpu': gpu, 'torch': torch.__version__, 'numerics': {}, 'timing_ms': {}}
    print(f'| numerics vs fp32 model, full-size random ({gpu}) | max abs | mean abs |')
    print('|---|---|---|')
    for name, outs in got.items():
        errs = [errors(g, w) for g, w in zip(outs, want)]
        mx, mean = max(e[0] for e in errs), float(np.mean([e[1] for e in errs]))
        figures['numerics'][name] = {'max_abs': mx, 'mean_abs': mean}
        print(f'| {name} | {mx:.3e} | {mean:.3e} |')

    noise = noises[0]
    images = torch.cat(plain.preprocess_images(frames))
    ctx: dict = {}
    x_t = noise.clone()  # [1, T, A]
    model = plain.model

    @torch.inference_mode()
    def fast_call():
        ctx['out'] = fast(*frames, state, tokens, mask, noise)

    @torch.inference_mode()
    def fast_vision():
        ctx['img'] = fast.vision(images)

    @torch.inference_mode()
    def fast_prefix():
        ctx['fast'] = fast.prefix(frames, tokens, mask)
        ctx['state_tok'] = model.state_proj(plain.normalize_state(state)).float()

    @torch.inference_mode()
    def fast_step():
        fast.denoise_step(ctx['fast'], ctx['state_tok'], x_t, 0)

    @torch.inference_mode()
    def plain_call():
        ctx['out'] = plain(*frames, state, tokens, mask, noise)

    @torch.inference_mode()
    def plain_vision():
        ctx['img'] = [model.vision(img[None]) for img in images]

    @torch.inference_mode()
    def plain_prefix():
        k, v, pad = model.fill_cache(plain.preprocess_images(frames), tokens, mask)
        ctx.update(k=k, v=v, pad=pad, state=plain.normalize_state(state))
        ctx['mask'], ctx['cos'], ctx['sin'] = model.suffix_attention(pad)

    @torch.inference_mode()
    def plain_step():
        v_t = model.denoise_step(ctx['state'], x_t, model.time_embeddings[0], ctx['k'], ctx['v'],
                                 ctx['mask'], ctx['cos'], ctx['sin'])
        x_t.add_(v_t, alpha=-0.1)

    if args.profile:
        profile_graph(capture_cuda_graph(fast_call), args.profile)

    rows = {}

    def time_graphs(label: str, fns: tuple, stages: tuple) -> None:
        graphs = [capture_cuda_graph(fn) for fn in fns]  # prefix before step: the step reads what the prefix wrote
        for stage, graph in zip(stages, graphs):
            ms = cuda_event_ms(graph.replay, args.iters)
            rows[f'{label}: {stage}'] = ms
            figures['timing_ms'][f'{label}: {stage}'] = {'p50': float(np.percentile(ms, 50)),
                                                         'p99': float(np.percentile(ms, 99))}

    if args.fp8:
        fast.expert_gemm, fast.prefix_fp8 = gemms[0], True
        time_graphs(f'fast, expert_gemm={gemms[0]}, prefix e4m3', (fast_call, fast_prefix),
                    ('whole call', 'prefix (vision + VLM)'))
        fast.prefix_fp8 = False
    for gemm in gemms[1:]:
        fast.expert_gemm = gemm
        time_graphs(f'fast, expert_gemm={gemm}', (fast_call, fast_prefix, fast_step),
                    ('whole call', 'prefix (vision + VLM)', 'one denoise step'))
    fast.expert_gemm = gemms[0]
    stages = ('whole call', 'vision (3 cameras)', 'prefix (vision + VLM)', 'one denoise step')
    time_graphs(f'fast, expert_gemm={gemms[0]}', (fast_call, fast_vision, fast_prefix, fast_step), stages)
    time_graphs('plain', (plain_call, plain_vision, plain_prefix, plain_step), stages)
    print(f'\n| stage, bf16, device time, CUDA graph ({gpu}) | p50 ms | p99 ms |')
    print('|---|---|---|')
    for name, ms in rows.items():
        print(f'| {name} | {np.percentile(ms, 50):.3f} | {np.percentile(ms, 99):.3f} |')
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == '__main__':
    main()
