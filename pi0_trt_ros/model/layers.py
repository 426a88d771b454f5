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

"""Building blocks shared by the vision tower and the Gemma stacks.

Precision convention (what makes the FP16 export safe): the residual stream, norms, RoPE and
softmax run in float32; only matrix products run in the weights' dtype (``Linear`` casts its
input to its weight dtype and returns that dtype). In float32 mode every cast is a no-op.

Axis letters: B batch, S query tokens, K key tokens, H query heads, N key/value heads,
G query heads per KV head (H = N*G), D head dim, W width.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

# LeRobot's additive mask value (float32 min-ish; `prepare_attention_masks_4d`).
MASK_VALUE = -2.3819763e38


class Linear(nn.Linear):
    """nn.Linear that casts its input to the weight dtype (fp16/bf16 GEMMs, fp32 elsewhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias)


class GemmaRMSNorm(nn.Module):
    """Gemma RMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + w), all in float32."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        var = torch.mean(x * x, dim=-1, keepdim=True)
        return x * torch.rsqrt(var + self.eps) * (1.0 + self.weight.float())


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the parameter dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """Compute RoPE inverse frequencies float32 [D/2], as transformers' default rope computes them."""
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
    return torch.from_numpy((1.0 / (theta ** exponent)).astype(np.float32))


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute RoPE tables for positions float32 [B, S] (integer-valued) -> (cos, sin), each float32 [B, 1, S, D]."""
    freqs = positions[:, :, None] * inv_freq[None, None, :]  # [B, S, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [B, S, D]
    return emb.cos()[:, None], emb.sin()[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, S, D] (any float dtype) in float32; returns float32."""
    x = x.float()
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """Masked multi-query/grouped attention with a float32 softmax.

    q [B, H, S, D] float32, k/v [B, N, K, D] (compute dtype), mask [B, 1, S, K] additive float32.
    Returns [B, S, H*D] in the compute dtype of k.
    """
    b, h, s, d = q.shape
    n, kk = k.shape[1], k.shape[2]
    g = h // n
    q = (q * scale).to(k.dtype).reshape(b, n, g * s, d)  # query heads of one KV head side by side
    scores = torch.matmul(q, k.transpose(-1, -2)).float()  # [B, N, G*S, K]
    scores = scores.reshape(b, n, g, s, kk) + mask[:, :, None]  # mask broadcast over N and G
    probs = torch.softmax(scores, dim=-1).to(v.dtype).reshape(b, n, g * s, kk)
    out = torch.matmul(probs, v)  # [B, N, G*S, D]
    return out.reshape(b, h, s, d).transpose(1, 2).reshape(b, s, h * d)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (`gelu_pytorch_tanh`), computed in the input dtype."""
    return F.gelu(x, approximate='tanh')


def sinusoidal_time_embedding(times: np.ndarray, dim: int, min_period: float, max_period: float) -> np.ndarray:
    """Pi0 flow-matching time embedding of float32 times [N] -> float32 [N, dim].

    Computed in float64 like LeRobot (`create_sinusoidal_pos_embedding`), then cast. The
    Euler schedule is fixed, so the model keeps the table as a constant (no float64 in graphs).
    """
    fraction = np.linspace(0.0, 1.0, dim // 2, dtype=np.float64)
    period = min_period * (max_period / min_period) ** fraction
    scaling = 1.0 / period * 2 * math.pi  # [dim/2]
    arg = scaling[None, :] * np.asarray(times, dtype=np.float32).astype(np.float64)[:, None]
    return np.concatenate([np.sin(arg), np.cos(arg)], axis=1).astype(np.float32)
