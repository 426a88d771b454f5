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

"""LeRobot's own PI0Policy on this GPU, the setup of `pi0-trt bench --random-full-size`: the anchor row.

Full-size Pi0 with random weights, 3 cameras 480x640, a state of 6, 48 tokens of which 12 valid,
batch 1; ``predict_action_chunk`` (10 Euler steps, chunk 50) timed wall-clock with a device sync
per call, after warm-up. Prints one markdown row per dtype, labelled with the GPU, and writes JSON.
LeRobot is not a dependency of this package: on a GPU machine without network, install the wheels
that ``benchmarks/fetch_lerobot_wheels.sh`` downloads (see there) and point PYTHONPATH at them.

    PYTHONPATH=/tmp/lerobot_site python benchmarks/lerobot_baseline.py --dtypes bfloat16 float32
"""

import argparse
from importlib.metadata import version
import json
from pathlib import Path
import time

import numpy as np
import torch

CAMERAS = ('observation.images.base_0_rgb', 'observation.images.left_wrist_0_rgb',
           'observation.images.right_wrist_0_rgb')


def time_policy(dtype: str, iters: int, warmup: int) -> dict:
    """Build LeRobot's PI0Policy in ``dtype`` on CUDA and time ``iters`` calls; returns the figures."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.pi0 import PI0Config, PI0Policy

    features = {key: PolicyFeature(type=FeatureType.VISUAL, shape=(3, 480, 640)) for key in CAMERAS}
    features['observation.state'] = PolicyFeature(type=FeatureType.STATE, shape=(6,))
    config = PI0Config(input_features=features,
                       output_features={'action': PolicyFeature(type=FeatureType.ACTION, shape=(6,))},
                       device='cuda', dtype=dtype)
    torch.manual_seed(0)
    t0 = time.monotonic()
    with torch.device('cuda'):  # random initialization on the GPU: on the host it takes minutes at this size
        policy = PI0Policy(config)
    policy = policy.to('cuda').eval()
    build_s = time.monotonic() - t0
    batch = {key: torch.rand(1, 3, 480, 640, device='cuda') for key in CAMERAS}
    batch['observation.state'] = torch.randn(1, 6, device='cuda')
    tokens = torch.zeros(1, 48, dtype=torch.long, device='cuda')
    tokens[0, :12] = torch.randint(3, 1000, (12,))
    batch['observation.language.tokens'] = tokens
    batch['observation.language.attention_mask'] = torch.arange(48, device='cuda')[None] < 12
    latencies = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            t = time.perf_counter()
            actions = policy.predict_action_chunk(batch)
            torch.cuda.synchronize()
            if i >= warmup:
                latencies.append((time.perf_counter() - t) * 1e3)
    ms = np.asarray(latencies)
    figures = {'impl': 'LeRobot PI0Policy.predict_action_chunk', 'dtype': dtype, 'gpu': torch.cuda.get_device_name(),
               'iters': iters, 'p50_ms': float(np.percentile(ms, 50)), 'p99_ms': float(np.percentile(ms, 99)),
               'min_ms': float(ms.min()), 'build_s': build_s, 'actions_shape': list(actions.shape),
               'peak_device_gib': torch.cuda.max_memory_allocated() / 2 ** 30}
    del policy
    torch.cuda.empty_cache()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dtypes', nargs='+', default=['bfloat16', 'float32'])
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--json', type=Path)
    args = parser.parse_args()
    rows = []
    for dtype in args.dtypes:
        f = time_policy(dtype, args.iters, args.warmup)
        rows.append(f)
        print(f'| LeRobot {version("lerobot")} PI0Policy, {dtype}, 3x480x640 ({f["gpu"]}) | {f["p50_ms"]:.2f} | '
              f'{f["p99_ms"]:.2f} | {f["iters"]} calls |', flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()
