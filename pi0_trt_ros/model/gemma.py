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

"""Gemma decoder stacks: the PaliGemma VLM (fills the KV cache) and the action expert (reads it).

The KV cache is one explicit tensor pair per stack, post-RoPE, in the compute dtype:
``k_cache, v_cache`` of shape [L, B, N, P, D] (L layers, P prefix tokens). The expert's layer i
attends over [prefix K/V of VLM layer i ‖ its own suffix K/V], as in LeRobot's `denoise_step`.
"""

from __future__ import annotations

import torch
from torch import nn

from pi0_trt_ros.model.config import GemmaSpec
from pi0_trt_ros.model.layers import apply_rope, gelu_tanh, GemmaRMSNorm, grouped_attention, Linear


class GemmaAttentionProj(nn.Module):
    """q/k/v/o projections of one layer (no bias); named as in transformers' GemmaAttention."""

    def __init__(self, spec: GemmaSpec) -> None:
        super().__init__()
        self.q_proj = Linear(spec.width, spec.num_heads * spec.head_dim, bias=False)
        self.k_proj = Linear(spec.width, spec.num_kv_heads * spec.head_dim, bias=False)
        self.v_proj = Linear(spec.width, spec.num_kv_heads * spec.head_dim, bias=False)
        self.o_proj = Linear(spec.num_heads * spec.head_dim, spec.width, bias=False)


class GemmaMLP(nn.Module):
    """GeGLU: down(gelu_tanh(gate(x)) * up(x))."""

    def __init__(self, spec: GemmaSpec) -> None:
        super().__init__()
        self.gate_proj = Linear(spec.width, spec.mlp_dim, bias=False)
        self.up_proj = Linear(spec.width, spec.mlp_dim, bias=False)
        self.down_proj = Linear(spec.mlp_dim, spec.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(gelu_tanh(self.gate_proj(x)) * self.up_proj(x))


class GemmaLayer(nn.Module):
    def __init__(self, spec: GemmaSpec) -> None:
        super().__init__()
        self.spec = spec
        self.input_layernorm = GemmaRMSNorm(spec.width, spec.rms_eps)
        self.self_attn = GemmaAttentionProj(spec)
        self.post_attention_layernorm = GemmaRMSNorm(spec.width, spec.rms_eps)
        self.mlp = GemmaMLP(spec)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past_k: torch.Tensor | None = None, past_v: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder layer.

        x float32 [B, S, W]; cos/sin float32 [B, 1, S, D]; mask additive float32 [B, 1, S, K]
        with K = P + S when past_k/past_v [B, N, P, D] are given, else K = S.
        Returns (x float32 [B, S, W], k, v [B, N, S, D] of this layer's own tokens, post-RoPE).
        """
        spec = self.spec
        b, s, _ = x.shape
        attn = self.self_attn
        h = self.input_layernorm(x)
        q = attn.q_proj(h).reshape(b, s, spec.num_heads, spec.head_dim).transpose(1, 2)  # [B, H, S, D]
        k = attn.k_proj(h).reshape(b, s, spec.num_kv_heads, spec.head_dim).transpose(1, 2)  # [B, N, S, D]
        v = attn.v_proj(h).reshape(b, s, spec.num_kv_heads, spec.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin).to(v.dtype)
        keys = k if past_k is None else torch.cat([past_k, k], dim=2)  # [B, N, K, D]
        values = v if past_v is None else torch.cat([past_v, v], dim=2)
        out = grouped_attention(q, keys, values, mask, spec.head_dim ** -0.5)  # [B, S, H*D]
        x = x + attn.o_proj(out).float()
        x = x + self.mlp(self.post_attention_layernorm(x)).float()
        return x, k, v


class GemmaStack(nn.Module):
    """A stack of Gemma layers plus its final norm (the VLM's final norm is loaded, never needed)."""

    def __init__(self, spec: GemmaSpec) -> None:
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleList(GemmaLayer(spec) for _ in range(spec.depth))
        self.norm = GemmaRMSNorm(spec.width, spec.rms_eps)

    def fill_cache(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the prefix x [B, P, W]; return (k_cache, v_cache), each [L, B, N, P, D]."""
        ks, vs = [], []
        for layer in self.layers:
            x, k, v = layer(x, cos, sin, mask)
            ks.append(k)
            vs.append(v)
        return torch.stack(ks), torch.stack(vs)

    def attend_cache(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                     k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        """Run the suffix x [B, S, W] over the cache; returns the normed output float32 [B, S, W]."""
        for i, layer in enumerate(self.layers):
            x, _, _ = layer(x, cos, sin, mask, k_cache[i], v_cache[i])
        return self.norm(x)
