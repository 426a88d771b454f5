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

"""Fused vs split policy call on a GPU: the measurement behind exporting one fused graph.

Full-size Pi0 (random weights, real shapes, 3 cameras 640x480), bf16, each variant captured in
CUDA graphs and replayed on one stream:

* fused: preprocessing + prefix + 10 Euler steps in one graph (what `pi0-trt export` writes);
* split: a prefix graph (KV cache out) then 10 launches of a one-step denoise graph, the way a
  prefix/denoise engine pair would run, with the host looping over the steps;
* the prefix graph and one denoise step alone, to show where the time goes.

    python benchmarks/stage_split.py [--iters 50] [--compile]
"""

import argparse
from pathlib import Path
import sys

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pi0_trt_ros.bench import capture_cuda_graph, cuda_event_ms, device_name, random_full_size_policy  # noqa: E402
from pi0_trt_ros.checkpoint import cast_matmul_weights  # noqa: E402
from pi0_trt_ros.testing.tiny import tiny_io  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=50)
    parser.add_argument('--compile', action='store_true', help='torch.compile the prefix and the denoise step')
    args = parser.parse_args()
    io = tiny_io()
    policy = random_full_size_policy(io)
    cast_matmul_weights(policy, torch.bfloat16)
    policy.eval()
    model = policy.model
    if args.compile:
        model.vlm.fill_cache = torch.compile(model.vlm.fill_cache, fullgraph=True)
        model.vision.forward = torch.compile(model.vision.forward, fullgraph=True)
        model.denoise_step = torch.compile(model.denoise_step, fullgraph=True)
    dev = 'cuda'
    frames = [torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, device=dev) for h, w in io.camera_hw]
    state = torch.randn(1, io.state_dim, device=dev)
    tokens = torch.zeros(1, io.token_len, dtype=torch.int64, device=dev)
    tokens[0, :12] = torch.randint(3, 1000, (12,), device=dev)
    mask = torch.zeros(1, io.token_len, dtype=torch.bool, device=dev)
    mask[0, :12] = True
    noise = torch.randn(1, io.chunk_size, io.max_action_dim, device=dev)
    cache: dict = {}
    x = noise.clone()

    @torch.inference_mode()
    def fused():
        cache['out'] = policy(*frames, state, tokens, mask, noise)

    @torch.inference_mode()
    def prefix():
        images = policy.preprocess_images(frames)
        k, v, pad = model.fill_cache(images, tokens, mask)
        cache.update(k=k, v=v, pad=pad, state=policy.normalize_state(state))
        cache['mask'], cache['cos'], cache['sin'] = model.suffix_attention(pad)

    @torch.inference_mode()
    def step():
        v_t = model.denoise_step(cache['state'], x, model.time_embeddings[0], cache['k'], cache['v'],
                                 cache['mask'], cache['cos'], cache['sin'])
        x.add_(v_t, alpha=-1.0 / model.config.num_inference_steps)

    fused_graph, prefix_graph = capture_cuda_graph(fused), capture_cuda_graph(prefix)
    step_graph = capture_cuda_graph(step)

    def split():
        prefix_graph.replay()
        for _ in range(model.config.num_inference_steps):
            step_graph.replay()

    rows = {'fused (one graph)': cuda_event_ms(fused_graph.replay, args.iters),
            'split (prefix + 10 step launches)': cuda_event_ms(split, args.iters),
            'prefix alone': cuda_event_ms(prefix_graph.replay, args.iters),
            'one denoise step': cuda_event_ms(step_graph.replay, args.iters)}
    label = 'compiled' if args.compile else 'eager ops'
    print(f'| variant ({label}, bf16, {device_name()}) | p50 ms | p99 ms |')
    print('|---|---|---|')
    for name, ms in rows.items():
        print(f'| {name} | {np.percentile(ms, 50):.2f} | {np.percentile(ms, 99):.2f} |')


if __name__ == '__main__':
    main()
