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

"""Tiny random Pi0 artifacts for tests and benchmarks: weights, checkpoint, export bundle.

Nothing is downloaded: weights are drawn from a seeded generator with non-degenerate values
(norm weights away from their identity init, so `w` vs `1 + w` mistakes cannot hide).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pi0_trt_ros.checkpoint import NormStats, save_checkpoint
from pi0_trt_ros.manifest import PolicyIO
from pi0_trt_ros.model.config import Pi0Config

CAMERA_KEYS = ('observation.images.base_0_rgb', 'observation.images.left_wrist_0_rgb',
               'observation.images.right_wrist_0_rgb')
JOINT_NAMES = ('joint_1', 'joint_2', 'joint_3', 'joint_4', 'joint_5', 'joint_6')


def randomize_(model: Any, seed: int) -> None:
    """Overwrite every parameter of a Pi0Model in place with seeded, non-degenerate values.

    RMSNorm weight ~ N(0, 0.1) (applied as 1 + w); LayerNorm weight ~ 1 + N(0, 0.1); biases
    ~ N(0, 0.05); other tensors ~ N(0, 1/sqrt(fan_in)). Works on any device (CPU or CUDA).
    """
    import torch
    from torch import nn

    from pi0_trt_ros.model.layers import GemmaRMSNorm

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            owner = model.get_submodule(name.rsplit('.', 1)[0])
            leaf = name.rsplit('.', 1)[1]
            r = torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32)
            if isinstance(owner, GemmaRMSNorm):
                r = 0.1 * r
            elif isinstance(owner, nn.LayerNorm):
                r = (1.0 + 0.1 * r) if leaf == 'weight' else 0.05 * r
            elif leaf == 'bias':
                r = 0.05 * r
            else:
                r = r / math.sqrt(p[0].numel())
            p.copy_(r.to(p.dtype))


def tiny_io(camera_hw: tuple[int, int] = (480, 640), num_cameras: int = 3, state_dim: int = 6,
            action_dim: int = 6, n_action_steps: int = 50) -> PolicyIO:
    return PolicyIO(camera_keys=CAMERA_KEYS[:num_cameras] if num_cameras <= 3 else
                    tuple(f'observation.images.cam_{i}' for i in range(num_cameras)),
                    camera_hw=(camera_hw,) * num_cameras, state_dim=state_dim, action_dim=action_dim,
                    chunk_size=50, max_action_dim=32, token_len=48, n_action_steps=n_action_steps)


def make_tiny_checkpoint(out_dir: str | Path, seed: int = 0, io: PolicyIO | None = None) -> Path:
    """Write a tiny random pi0 checkpoint in LeRobot's layout (with its hf_configs.json)."""
    import torch

    from pi0_trt_ros.model.pi0 import Pi0Model

    io = io or tiny_io()
    config = Pi0Config.tiny()
    torch.manual_seed(seed)
    model = Pi0Model(config)
    randomize_(model, seed)
    rng = np.random.default_rng(seed)
    stats = NormStats(state_mean=(rng.normal(size=io.state_dim) * 0.1).astype(np.float32),
                      state_std=rng.uniform(0.5, 1.5, size=io.state_dim).astype(np.float32),
                      action_mean=(rng.normal(size=io.action_dim) * 0.1).astype(np.float32),
                      action_std=rng.uniform(0.5, 1.5, size=io.action_dim).astype(np.float32))
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return save_checkpoint(out_dir, config, io, weights, stats)


@dataclasses.dataclass(frozen=True)
class TinyBundle:
    """Everything the node needs, generated: checkpoint, tokenizer and ONNX export."""

    checkpoint: Path
    tokenizer: Path
    engine_dir: Path


def make_tiny_bundle(root: str | Path, seed: int = 0, precision: str = 'fp32',
                     io: PolicyIO | None = None, batch_sizes: Sequence[int] = (1,)) -> TinyBundle:
    """Create ROOT/checkpoint, ROOT/tokenizer.json and ROOT/engine (ONNX export) for a tiny random Pi0.

    ``batch_sizes`` beyond 1 adds the batched graph (``pi0-trt export --batch-sizes``), for a fleet.
    """
    from pi0_trt_ros.export.onnx import export_policy
    from pi0_trt_ros.testing.tiny_tokenizer import build_tiny_tokenizer_json

    root = Path(root)
    ckpt = make_tiny_checkpoint(root / 'checkpoint', seed=seed, io=io)
    tokenizer = build_tiny_tokenizer_json(root / 'tokenizer.json')
    engine_dir = export_policy(ckpt, root / 'engine', precision=precision, batch_sizes=batch_sizes)
    return TinyBundle(checkpoint=ckpt, tokenizer=Path(tokenizer), engine_dir=engine_dir)
