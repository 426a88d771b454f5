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

"""Pi0: prefix (SigLIP + Gemma VLM -> KV cache), action-expert denoise step, Euler sampler.

Mirrors LeRobot 0.6.1's `PI0Pytorch` (see shared docs PI0_INFERENCE_SPEC.md) with static
shapes, an explicit KV-cache tensor and no data-dependent Python control flow, so one
`torch.onnx.export` trace covers the whole policy call. `Pi0Policy` adds the in-graph
preprocessing and (un)normalization around it: raw uint8 frames and robot-unit state in,
robot-unit action chunk out.

Axis letters: B batch, C cameras, P prefix tokens (C*256 + L), L language tokens,
S suffix tokens (1 state + T actions), T chunk size, A max action dim, W width.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from pi0_trt_ros.model.config import Pi0Config
from pi0_trt_ros.model.gemma import GemmaStack
from pi0_trt_ros.model.layers import Linear, MASK_VALUE, rope_cos_sin, rope_inv_freq, sinusoidal_time_embedding
from pi0_trt_ros.model.preprocess import preprocess_frame
from pi0_trt_ros.model.siglip import SiglipVision

STD_EPS = 1e-8  # LeRobot NormalizerProcessorStep eps for MEAN_STD


def additive_mask(visible: torch.Tensor) -> torch.Tensor:
    """Bool visibility [B, S, K] -> additive float32 mask [B, 1, S, K] (0 or MASK_VALUE)."""
    zero = torch.zeros((), dtype=torch.float32, device=visible.device)
    neg = torch.full((), MASK_VALUE, dtype=torch.float32, device=visible.device)
    return torch.where(visible, zero, neg)[:, None]


class Pi0Model(nn.Module):
    """The flow-matching network on preprocessed inputs (normalized state, [-1, 1] images)."""

    def __init__(self, config: Pi0Config) -> None:
        super().__init__()
        self.config = config
        vlm, exp = config.vlm, config.expert
        self.vision = SiglipVision(config.vision, vlm.width)
        self.embed_tokens = nn.Embedding(config.vocab_size, vlm.width)
        self.vlm = GemmaStack(vlm)
        self.expert = GemmaStack(exp)
        self.state_proj = Linear(config.max_state_dim, exp.width)
        self.action_in_proj = Linear(config.max_action_dim, exp.width)
        self.action_time_mlp_in = Linear(2 * exp.width, exp.width)
        self.action_time_mlp_out = Linear(exp.width, exp.width)
        self.action_out_proj = Linear(exp.width, config.max_action_dim)
        for name, value in self.constant_tables().items():
            self.register_buffer(name, value, persistent=False)

    def constant_tables(self) -> dict[str, torch.Tensor]:
        """Input-independent tables, kept as buffers so no host data is created during a forward.

        ``time_embeddings`` [n, W]: the Euler schedule t_k = float32(1 + k*dt), dt = -1/n (t=1 noise,
        t=0 data), embedded; ``*_inv_freq`` [D/2]: RoPE; ``suffix_ar_cumsum`` [S]: cumsum of the
        suffix ar-mask [1 (state), 1, 0, ..., 0 (actions)] = [1, 2, ..., 2].
        """
        cfg = self.config
        n = cfg.num_inference_steps
        times = np.array([1.0 + k * (-1.0 / n) for k in range(n)], dtype=np.float32)
        table = sinusoidal_time_embedding(times, cfg.expert.width, cfg.min_period, cfg.max_period)
        return {
            'time_embeddings': torch.from_numpy(table),
            'vlm_inv_freq': rope_inv_freq(cfg.vlm.head_dim, cfg.vlm.rope_theta),
            'expert_inv_freq': rope_inv_freq(cfg.expert.head_dim, cfg.expert.rope_theta),
            'suffix_ar_cumsum': torch.from_numpy(np.array([1] + [2] * cfg.chunk_size, dtype=np.float32)),
        }

    # -- prefix ----------------------------------------------------------------------------
    def embed_prefix(self, images: Sequence[torch.Tensor], tokens: torch.Tensor,
                     token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images C x [B, 3, 224, 224], tokens int64 [B, L], token_mask bool [B, L].

        Returns (embeddings float32 [B, P, W], pad mask bool [B, P]).
        """
        b = tokens.shape[0]
        n_img = self.config.vision.num_patches
        embs = [self.vision(img) for img in images]  # C x [B, 256, W]
        word = self.embed_tokens(tokens)  # [B, L, W]
        embs.append((word * math.sqrt(self.config.vlm.width)).float())  # LeRobot scales in the table dtype
        pads = [torch.ones(b, n_img, dtype=torch.bool, device=tokens.device) for _ in images]
        pads.append(token_mask)
        return torch.cat(embs, dim=1), torch.cat(pads, dim=1)

    def fill_cache(self, images: Sequence[torch.Tensor], tokens: torch.Tensor, token_mask: torch.Tensor,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the prefix; returns (k_cache, v_cache [L_layers, B, N, P, D], prefix pad bool [B, P])."""
        x, pad = self.embed_prefix(images, tokens, token_mask)
        # ar-mask is all zero: valid prefix tokens see each other bidirectionally.
        mask = additive_mask(pad[:, None, :] & pad[:, :, None])  # [B, 1, P, P]
        positions = torch.cumsum(pad.float(), dim=1) - 1  # padding repeats positions; float32 [B, P]
        cos, sin = rope_cos_sin(positions, self.vlm_inv_freq)
        k_cache, v_cache = self.vlm.fill_cache(x, cos, sin, mask)
        return k_cache, v_cache, pad

    # -- suffix ----------------------------------------------------------------------------
    def suffix_attention(self, prefix_pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask [B, 1, S, P+S] and RoPE tables [B, 1, S, D] of the suffix; constant across steps."""
        b, p = prefix_pad.shape
        t = self.config.chunk_size
        s = t + 1
        cum = self.suffix_ar_cumsum  # key j visible to query i iff cum[j] <= cum[i]
        suffix_visible = (cum[None, :] <= cum[:, None])[None].expand(b, s, s)  # [B, S, S]
        visible = torch.cat([prefix_pad[:, None, :].expand(b, s, p), suffix_visible], dim=2)
        offsets = prefix_pad.float().sum(dim=1, keepdim=True)  # [B, 1]
        positions = offsets + torch.arange(s, dtype=torch.float32, device=prefix_pad.device)[None, :]  # [B, S]
        cos, sin = rope_cos_sin(positions, self.expert_inv_freq)
        return additive_mask(visible), cos, sin

    def denoise_step(self, state: torch.Tensor, x_t: torch.Tensor, time_emb: torch.Tensor, k_cache: torch.Tensor,
                     v_cache: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     ) -> torch.Tensor:
        """Velocity v_t float32 [B, T, A] for x_t [B, T, A] at the time embedded as time_emb float32 [W].

        state: normalized, zero-padded float32 [B, max_state_dim]; time_emb: a row of
        ``time_embeddings`` (or [B, W], one time per sample, as in training); mask/cos/sin from
        `suffix_attention`; caches from `fill_cache`.
        """
        state_tok = self.state_proj(state).float()[:, None, :]  # [B, 1, W]
        action_emb = self.action_in_proj(x_t).float()  # [B, T, W]
        time_emb = time_emb[..., None, :].expand_as(action_emb)  # [W] or [B, W] -> [B, T, W]
        h = self.action_time_mlp_in(torch.cat([action_emb, time_emb], dim=2))
        action_tok = self.action_time_mlp_out(F.silu(h)).float()  # [B, T, W]
        x = torch.cat([state_tok, action_tok], dim=1)  # [B, S, W]
        out = self.expert.attend_cache(x, cos, sin, mask, k_cache, v_cache)
        return self.action_out_proj(out[:, -self.config.chunk_size:]).float()

    def sample_actions(self, images: Sequence[torch.Tensor], tokens: torch.Tensor, token_mask: torch.Tensor,
                       state: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Euler integration from noise (t=1) to actions (t=0): float32 [B, T, A], normalized."""
        k_cache, v_cache, pad = self.fill_cache(images, tokens, token_mask)
        mask, cos, sin = self.suffix_attention(pad)
        n = self.config.num_inference_steps
        dt = -1.0 / n
        x_t = noise
        for step in range(n):  # unrolled: static step count
            v_t = self.denoise_step(state, x_t, self.time_embeddings[step], k_cache, v_cache, mask, cos, sin)
            x_t = x_t + dt * v_t
        return x_t


class Pi0Policy(nn.Module):
    """The deployable policy call: raw frames + robot-unit state -> robot-unit action chunk.

    forward(image_0..image_{C-1} uint8 [B, H_i, W_i, 3], state float32 [B, state_dim],
    tokens int64 [B, L], token_mask bool [B, L], noise float32 [B, T, A]) -> float32 [B, T, action_dim].
    """

    def __init__(self, model: Pi0Model, state_mean: torch.Tensor, state_std: torch.Tensor,
                 action_mean: torch.Tensor, action_std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer('state_mean', state_mean.float().clone())
        self.register_buffer('state_std', state_std.float().clone())
        self.register_buffer('action_mean', action_mean.float().clone())
        self.register_buffer('action_std', action_std.float().clone())

    @property
    def state_dim(self) -> int:
        return int(self.state_mean.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.action_mean.shape[0])

    def preprocess_images(self, frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        size = self.model.config.vision.image_size
        return [preprocess_frame(f, size) for f in frames]

    def normalize_state(self, state: torch.Tensor) -> torch.Tensor:
        """Robot-unit state [B, state_dim] -> normalized, zero-padded [B, max_state_dim]."""
        norm = (state.float() - self.state_mean) / (self.state_std + STD_EPS)
        return F.pad(norm, (0, self.model.config.max_state_dim - self.state_dim))

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Map normalized padded actions [B, T, A] to robot units [B, T, action_dim] (x*std + mean, no eps)."""
        return actions[..., :self.action_dim] * self.action_std + self.action_mean

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *frames, state, tokens, token_mask, noise = inputs
        images = self.preprocess_images(frames)
        actions = self.model.sample_actions(images, tokens, token_mask, self.normalize_state(state), noise)
        return self.unnormalize_actions(actions)
