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

"""SigLIP vision tower (PaliGemma's, no pooling head) and the multimodal projector."""

from __future__ import annotations

import torch
from torch import nn

from pi0_trt_ros.model.config import SiglipSpec
from pi0_trt_ros.model.layers import gelu_tanh, LayerNorm, Linear


class SiglipAttention(nn.Module):
    def __init__(self, spec: SiglipSpec) -> None:
        super().__init__()
        w = spec.width
        self.num_heads = spec.num_heads
        self.head_dim = w // spec.num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (Linear(w, w) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, w = x.shape  # x float32 [B, S, W]
        h, d = self.num_heads, self.head_dim

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, s, h, d).transpose(1, 2)  # [B, H, S, D]

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        scores = torch.matmul(q * (d ** -0.5), k.transpose(-1, -2)).float()  # [B, H, S, S]
        probs = torch.softmax(scores, dim=-1).to(v.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, w)
        return self.out_proj(out).float()


class SiglipMLP(nn.Module):
    def __init__(self, spec: SiglipSpec) -> None:
        super().__init__()
        self.fc1 = Linear(spec.width, spec.mlp_dim)
        self.fc2 = Linear(spec.mlp_dim, spec.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x))).float()


class SiglipLayer(nn.Module):
    def __init__(self, spec: SiglipSpec) -> None:
        super().__init__()
        self.layer_norm1 = LayerNorm(spec.width, eps=spec.ln_eps)
        self.self_attn = SiglipAttention(spec)
        self.layer_norm2 = LayerNorm(spec.width, eps=spec.ln_eps)
        self.mlp = SiglipMLP(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipVision(nn.Module):
    """Pixels [B, 3, 224, 224] in [-1, 1] -> image tokens float32 [B, 256, out_width] (projected)."""

    def __init__(self, spec: SiglipSpec, out_width: int) -> None:
        super().__init__()
        self.spec = spec
        self.patch_embedding = nn.Conv2d(3, spec.width, kernel_size=spec.patch_size, stride=spec.patch_size)
        self.position_embedding = nn.Embedding(spec.num_patches, spec.width)
        self.layers = nn.ModuleList(SiglipLayer(spec) for _ in range(spec.depth))
        self.post_layernorm = LayerNorm(spec.width, eps=spec.ln_eps)
        self.projector = Linear(spec.width, out_width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        w = self.patch_embedding.weight
        x = self.patch_embedding(pixels.to(w.dtype))  # [B, W, 16, 16]
        x = x.flatten(2).transpose(1, 2).float()  # [B, 256, W]
        x = x + self.position_embedding.weight.float()[None]
        for layer in self.layers:
            x = layer(x)
        return self.projector(self.post_layernorm(x)).float()  # [B, 256, out_width]
