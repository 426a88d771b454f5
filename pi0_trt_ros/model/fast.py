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

"""The torch backend's fast path: Pi0's policy call on fused Triton kernels and cuBLAS GEMMs.

Same function as `Pi0Policy` (the reference and export source, whose weights it shares), laid
out for a GPU, at any batch size (rows of the batch one element after the other; the RoPE and
attention kernels take a batch axis, each element its own KV cache rows and mask):

* each Gemma layer is one fused QKV GEMM, a RoPE kernel that also writes K/V straight into the
  KV cache, one attention kernel (float32 online softmax, MQA rows side by side), the output
  GEMM, a residual-add + RMSNorm kernel, one gate/up GEMM, a GeGLU kernel and the down GEMM,
  whose residual add is folded into the next norm kernel;
* ``expert_gemm`` chooses how the action expert's GEMMs (51 rows per denoise step) run at
  batch 1 (larger batches, B x 51 rows, run them on cuBLAS):
  'skinny' (default: on an H100 0.45 ms faster per call than 'mixed', and closer to the fp32
  model) runs all four as skinny Triton GEMMs (QKV with the RoPE + KV write and gate/up with the
  GeGLU in their epilogues), each streaming its weights (the attention: the prefix's K/V) into
  L2 before it waits on the kernel before it; 'mixed' keeps QKV and gate/up on cuBLAS and runs
  o_proj and down as split-K Triton GEMMs (`pi0_trt_ros.kernels.skinny`) that add into the
  residual stream: the two shapes whose 1024 output columns leave cuBLAS few thread blocks
  (H200: 4.3 and 5.3 us against cuBLAS's 6.9 and 8.2); 'cublas' as in the first point; 'triton'
  all four as fused skinny GEMMs (QKV with the input RMSNorm in its prologue, gate/up with the
  RMSNorm and GeGLU);
* the vision tower's patch embedding (a stride-14 convolution) runs as one GEMM over the unfolded
  patches;
* the expert's KV cache is one [L, B, N, P + S, D] buffer per batch size: the prefix writes its
  part once, each denoise step overwrites the suffix rows in place (no concatenation per layer
  per step);
* the action-time MLP's time half (a constant of the fixed Euler schedule) is precomputed per
  step; the state token is projected once per call;
* the cameras go through SigLIP as one batch, with PyTorch's fused attention (no mask there);
* the VLM's last layer stops after its K/V: its attention output and MLP feed nothing;
* ``prefix_fp8``: the VLM's QKV, gate/up and down GEMMs in e4m3 (`pi0_trt_ros.kernels.fp8`:
  weights scaled per output channel, quantized once; activations per token, by the norm and
  GeGLU kernels that produce them), bf16 out; an explicit option, as it trades accuracy for speed.

Weights are shared with the reference: the fused QKV and gate/up matrices are built once and the
reference's q/k/v, gate/up (and SigLIP q/k/v) parameters become views into them. Intermediate
tensors are allocated per call, which under the runner's CUDA graph means once, at capture.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from pi0_trt_ros.errors import RunnerError
from pi0_trt_ros.kernels.attention import attention, HIDDEN_GROUP
from pi0_trt_ros.kernels.fp8 import E4M3, quantize_weight, scaled_linear
from pi0_trt_ros.kernels.geglu import geglu
from pi0_trt_ros.kernels.norm import add_norm
from pi0_trt_ros.kernels.rope import rope_qkv
from pi0_trt_ros.kernels.skinny import MAX_ROWS, skinny_linear, skinny_qkv_rope
from pi0_trt_ros.model.gemma import GemmaLayer, GemmaStack
from pi0_trt_ros.model.pi0 import Pi0Policy
from pi0_trt_ros.model.siglip import SiglipLayer
from pi0_trt_ros.runners.registry import DEFAULT_EXPERT_GEMM, TORCH_EXPERT_GEMMS as EXPERT_GEMMS


def _fuse_rows(linears: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack the weights (and biases) of Linears sharing an input; rebind each to a view of the stack."""
    weight = torch.cat([lin.weight.detach() for lin in linears])
    has_bias = linears[0].bias is not None
    bias = torch.cat([lin.bias.detach() for lin in linears]) if has_bias else None
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight = nn.Parameter(weight[start:start + rows], requires_grad=False)
        if bias is not None:
            lin.bias = nn.Parameter(bias[start:start + rows], requires_grad=False)
        start += rows
    return weight, bias


class _GemmaWeights:
    """Per-layer fused matrices of one Gemma stack."""

    def __init__(self, stack: GemmaStack) -> None:
        self.stack = stack
        self.spec = stack.spec
        self.qkv: list[torch.Tensor] = []
        self.gate_up: list[torch.Tensor] = []
        for layer in stack.layers:
            assert isinstance(layer, GemmaLayer)
            attn, mlp = layer.self_attn, layer.mlp
            self.qkv.append(_fuse_rows([attn.q_proj, attn.k_proj, attn.v_proj])[0])
            self.gate_up.append(_fuse_rows([mlp.gate_proj, mlp.up_proj])[0])


class _Fp8Weights:
    """Per-layer e4m3 copies (with their per-channel scales) of a Gemma stack's QKV, gate/up and down."""

    def __init__(self, stack: _GemmaWeights) -> None:
        if stack.qkv[0].dtype != torch.bfloat16:
            raise RunnerError(f'fast path: prefix_fp8 needs the model in bf16 (its GEMMs write bf16), '
                              f'got {stack.qkv[0].dtype}')
        self.qkv = [quantize_weight(w) for w in stack.qkv]
        # The prefix's last layer stops after its K/V: its MLP is never run.
        self.gate_up = [quantize_weight(w) for w in stack.gate_up[:-1]]
        self.down = [quantize_weight(layer.mlp.down_proj.weight) for layer in stack.stack.layers[:-1]]


class FastPi0Policy(nn.Module):
    """Drop-in for a `Pi0Policy` (same inputs, same outputs), on Triton kernels.

    ``expert_gemm``: 'skinny' (default) all four on skinny GEMMs, the norms in kernels of their
    own; 'mixed' QKV and gate/up on cuBLAS, o_proj and down on split-K skinny GEMMs that add into
    the residual stream; 'cublas' all the denoise steps' GEMMs on cuBLAS
    with separate norm/GeGLU kernels; 'triton' all on fused skinny Triton GEMMs
    (`pi0_trt_ros.kernels.skinny`: RMSNorm prologue, GeGLU and residual-add epilogues).
    ``prefix_fp8``: the VLM's QKV, gate/up and down GEMMs in e4m3 (bf16 models only).
    """

    def __init__(self, policy: Pi0Policy, expert_gemm: str = DEFAULT_EXPERT_GEMM, prefix_fp8: bool = False) -> None:
        super().__init__()
        if expert_gemm not in EXPERT_GEMMS:
            raise RunnerError(f'fast path: expert_gemm must be one of {EXPERT_GEMMS}, got {expert_gemm!r}')
        self.policy = policy
        self.expert_gemm = expert_gemm
        model = policy.model
        self.cfg = model.config
        self.vlm = _GemmaWeights(model.vlm)
        self.expert = _GemmaWeights(model.expert)
        self.vlm_fp8: _Fp8Weights | None = None
        self.prefix_fp8 = prefix_fp8
        patch = model.vision.patch_embedding  # Conv2d [Wv, 3, P, P] -> the same weights as a [Wv, 3*P*P] matrix
        self.patch_weight = patch.weight.detach().reshape(patch.weight.shape[0], -1).contiguous()
        self.siglip_qkv = []
        for layer in model.vision.layers:
            assert isinstance(layer, SiglipLayer)
            a = layer.self_attn
            self.siglip_qkv.append(_fuse_rows([a.q_proj, a.k_proj, a.v_proj]))
        with torch.no_grad():
            # The time half of action_time_mlp_in, one row per Euler step: time_emb @ W_t^T + b.
            mlp_in = model.action_time_mlp_in
            width = self.cfg.expert.width
            # The GEMM sees the time embedding in the weights' dtype, as the reference's Linear casts it.
            time_emb = model.time_embeddings.to(mlp_in.weight.dtype).float()
            time_bias = time_emb @ mlp_in.weight[:, width:].float().T + mlp_in.bias.float()  # [n_steps, W]
            self.register_buffer('time_bias', time_bias.to(mlp_in.weight.dtype), persistent=False)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # (shape, device, dtype) -> K, V

    @property
    def prefix_fp8(self) -> bool:
        """Whether the VLM's GEMMs run in e4m3; setting it quantizes the weights (once) or drops the copies."""
        return self.vlm_fp8 is not None

    @prefix_fp8.setter
    def prefix_fp8(self, on: bool) -> None:
        self.vlm_fp8 = (self.vlm_fp8 or _Fp8Weights(self.vlm)) if on else None

    # -- buffers ---------------------------------------------------------------------------
    def _kv_cache(self, batch: int, prefix_len: int, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the expert's [L, B, N, P + S, D] K and V buffers, allocated on the first call only."""
        spec = self.cfg.expert
        shape = (spec.depth, batch, spec.num_kv_heads, prefix_len + self.cfg.chunk_size + 1, spec.head_dim)
        key = (shape, device, dtype)  # one pair per batch size: each size's CUDA graph keeps its own
        if key not in self._cache:
            self._cache[key] = (torch.empty(shape, device=device, dtype=dtype),
                                torch.empty(shape, device=device, dtype=dtype))
        return self._cache[key]

    # -- stages ----------------------------------------------------------------------------
    def vision(self, images: torch.Tensor) -> torch.Tensor:
        """Images [C, 3, 224, 224] in [-1, 1] -> projected image tokens float32 [C * 256, W_vlm]."""
        tower = self.policy.model.vision
        spec = tower.spec
        w = self.patch_weight
        c, size, ps = images.shape[0], images.shape[2], spec.patch_size
        side = size // ps  # patches per side: 16
        # The patch embedding (a stride-P convolution) as one GEMM over the unfolded patches.
        patches = images.to(w.dtype).reshape(c, 3, side, ps, side, ps).permute(0, 2, 4, 1, 3, 5)
        x = F.linear(patches.reshape(c * side * side, 3 * ps * ps), w, tower.patch_embedding.bias)  # [C*256, Wv]
        x = x.float().view(c, spec.num_patches, spec.width) + tower.position_embedding.weight.float()[None]
        x = x.view(c * spec.num_patches, spec.width)  # the residual stream, float32 [C*256, Wv]
        h = torch.empty(x.shape, device=x.device, dtype=w.dtype)
        heads, head_dim = spec.num_heads, spec.width // spec.num_heads
        delta = None
        for layer, (qkv_w, qkv_b) in zip(tower.layers, self.siglip_qkv):
            ln1, attn, ln2, mlp = layer.layer_norm1, layer.self_attn, layer.layer_norm2, layer.mlp
            add_norm(x, delta, ln1.weight, ln1.bias, ln1.eps, h)
            qkv = F.linear(h, qkv_w, qkv_b).view(c, spec.num_patches, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [C, heads, 256, hd]
            o = o.transpose(1, 2).reshape(x.shape)
            add_norm(x, attn.out_proj(o), ln2.weight, ln2.bias, ln2.eps, h)
            delta = mlp.fc2(F.gelu(mlp.fc1(h), approximate='tanh'))
        post = tower.post_layernorm
        add_norm(x, delta, post.weight, post.bias, post.eps, h)
        return tower.projector(h).float()

    def _gemma_layers(self, stack: _GemmaWeights, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      k_cache: torch.Tensor, v_cache: torch.Tensor, rows: slice, query_group: torch.Tensor,
                      key_group: torch.Tensor, keys: int, final_norm: torch.Tensor | None,
                      fp8: _Fp8Weights | None = None) -> torch.Tensor | None:
        """Run a Gemma stack on x float32 [B*S, W] (in place), writing its K/V to cache rows ``rows``.

        k_cache/v_cache [L, B, N, K, D]: batch element b's rows of x are b*S .. b*S + S - 1.
        Attention of layer i reads cache rows [0, keys). With ``final_norm``, returns the final
        norm of the output; without, the last layer stops after writing its K/V. With ``fp8``,
        the QKV, gate/up and down GEMMs run in e4m3 on those weights.
        """
        spec = stack.spec
        s = x.shape[0]
        dtype = stack.qkv[0].dtype
        act = E4M3 if fp8 is not None else dtype  # what the norms and the GeGLU write: the GEMMs' inputs
        h = torch.empty(x.shape, device=x.device, dtype=act)
        q = torch.empty((s, spec.num_heads * spec.head_dim), device=x.device, dtype=dtype)
        att = torch.empty_like(q)
        mlp_out = torch.empty((s, spec.mlp_dim), device=x.device, dtype=act)
        h_scale = mlp_scale = None  # float32 [S]: the e4m3 rows' scales
        if fp8 is not None:
            h_scale = torch.empty(s, device=x.device, dtype=torch.float32)
            mlp_scale = torch.empty(s, device=x.device, dtype=torch.float32)
        delta = None
        last = len(stack.stack.layers) - 1
        for i, layer in enumerate(stack.stack.layers):
            ln1 = layer.input_layernorm
            add_norm(x, delta, ln1.weight, None, ln1.eps, h, h_scale)
            qkv = F.linear(h, stack.qkv[i]) if fp8 is None else scaled_linear(h, h_scale, *fp8.qkv[i])
            rope_qkv(qkv, cos, sin, spec.num_heads, spec.head_dim ** -0.5, q, k_cache[i, :, :, rows],
                     v_cache[i, :, :, rows])
            if i == last and final_norm is None:
                return None
            attention(q, k_cache[i, :, :, :keys], v_cache[i, :, :, :keys], query_group, key_group, att)
            ln2 = layer.post_attention_layernorm
            add_norm(x, layer.self_attn.o_proj(att), ln2.weight, None, ln2.eps, h, h_scale)
            if fp8 is None:
                delta = layer.mlp.down_proj(geglu(F.linear(h, stack.gate_up[i]), mlp_out))
            else:
                geglu(scaled_linear(h, h_scale, *fp8.gate_up[i]), mlp_out, mlp_scale)
                delta = scaled_linear(mlp_out, mlp_scale, *fp8.down[i])
        assert final_norm is not None and fp8 is None  # e4m3 serves the prefix only
        add_norm(x, delta, final_norm, None, spec.rms_eps, h)
        return h

    def _skinny_layers(self, stack: _GemmaWeights, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                       k_cache: torch.Tensor, v_cache: torch.Tensor, rows: slice, query_group: torch.Tensor,
                       key_group: torch.Tensor, keys: int, final_norm: torch.Tensor) -> torch.Tensor:
        """`_gemma_layers` for at most 64 rows on fused skinny GEMMs; returns the final norm of x.

        Per layer: QKV GEMM with the input RMSNorm in its prologue, RoPE + KV write, attention,
        o_proj accumulated into x, gate/up GEMM with the post-attention RMSNorm and GeGLU, down
        accumulated into x.
        """
        spec = stack.spec
        s = x.shape[0]
        dtype = stack.qkv[0].dtype
        qkv = torch.empty((s, stack.qkv[0].shape[0]), device=x.device, dtype=dtype)
        q = torch.empty((s, spec.num_heads * spec.head_dim), device=x.device, dtype=dtype)
        att = torch.empty_like(q)
        mlp_out = torch.empty((s, spec.mlp_dim), device=x.device, dtype=dtype)
        for i, layer in enumerate(stack.stack.layers):
            ln1, ln2 = layer.input_layernorm, layer.post_attention_layernorm
            skinny_linear(x, stack.qkv[i], qkv, norm_weight=ln1.weight, eps=ln1.eps)
            rope_qkv(qkv, cos, sin, spec.num_heads, spec.head_dim ** -0.5, q, k_cache[i, 0, :, rows],
                     v_cache[i, 0, :, rows])
            attention(q, k_cache[i, 0, :, :keys], v_cache[i, 0, :, :keys], query_group, key_group, att)
            skinny_linear(att, layer.self_attn.o_proj.weight, x, residual=True)
            skinny_linear(x, stack.gate_up[i], mlp_out, norm_weight=ln2.weight, eps=ln2.eps, geglu=True)
            skinny_linear(mlp_out, layer.mlp.down_proj.weight, x, residual=True)
        h = torch.empty(x.shape, device=x.device, dtype=dtype)
        add_norm(x, None, final_norm, None, spec.rms_eps, h)
        return h

    def _mixed_layers(self, stack: _GemmaWeights, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      k_cache: torch.Tensor, v_cache: torch.Tensor, rows: slice, query_group: torch.Tensor,
                      key_group: torch.Tensor, keys: int, final_norm: torch.Tensor) -> torch.Tensor:
        """`_gemma_layers` for at most 64 rows, o_proj and down as split-K GEMMs into x; returns the final norm.

        Per layer: RMSNorm, QKV GEMM, RoPE + KV write, attention, o_proj added into x, RMSNorm,
        gate/up GEMM, GeGLU, down added into x. QKV and gate/up run on cuBLAS ('mixed') or as
        skinny Triton GEMMs with the RoPE + KV write and the GeGLU in their epilogues ('skinny').
        """
        spec = stack.spec
        dtype = stack.qkv[0].dtype
        all_skinny = self.expert_gemm == 'skinny'
        h = torch.empty(x.shape, device=x.device, dtype=dtype)
        q = torch.empty((x.shape[0], spec.num_heads * spec.head_dim), device=x.device, dtype=dtype)
        att = torch.empty_like(q)
        mlp_out = torch.empty((x.shape[0], spec.mlp_dim), device=x.device, dtype=dtype)
        for i, layer in enumerate(stack.stack.layers):
            ln1, ln2 = layer.input_layernorm, layer.post_attention_layernorm
            add_norm(x, None, ln1.weight, None, ln1.eps, h)
            qkv_out = (cos, sin, spec.num_heads, spec.head_dim ** -0.5, q, k_cache[i, 0, :, rows],
                       v_cache[i, 0, :, rows])
            if all_skinny:
                skinny_qkv_rope(h, stack.qkv[i], *qkv_out)
            else:
                rope_qkv(F.linear(h, stack.qkv[i]), *qkv_out)
            attention(q, k_cache[i, 0, :, :keys], v_cache[i, 0, :, :keys], query_group, key_group, att,
                      prefetch_kv=all_skinny)
            skinny_linear(att, layer.self_attn.o_proj.weight, x, residual=True, prefetch_weights=all_skinny)
            add_norm(x, None, ln2.weight, None, ln2.eps, h)
            if all_skinny:
                skinny_linear(h, stack.gate_up[i], mlp_out, geglu=True, prefetch_weights=True)
            else:
                geglu(F.linear(h, stack.gate_up[i]), mlp_out)
            skinny_linear(mlp_out, layer.mlp.down_proj.weight, x, residual=True, prefetch_weights=all_skinny)
        add_norm(x, None, final_norm, None, spec.rms_eps, h)
        return h

    @staticmethod
    def _rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map positions float32 [S] to cos, sin float32 [S, D/2] (the halves `rope_cos_sin` repeats)."""
        freqs = positions[:, None] * inv_freq[None, :]
        return freqs.cos(), freqs.sin()

    # -- the call --------------------------------------------------------------------------
    def prefix(self, frames: Sequence[torch.Tensor], tokens: torch.Tensor,
               token_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fill the expert's KV cache from the prefix; returns what the denoise steps need.

        frames: C x uint8 [B, H, W, 3]; tokens int64 [B, L]; token_mask bool [B, L]. Rows of the
        batch are laid out element after element (element b's P prefix rows, then its S suffix rows).
        """
        policy, model, cfg = self.policy, self.policy.model, self.cfg
        dev = tokens.device
        b, n_tokens = tokens.shape
        images = torch.stack(policy.preprocess_images(frames), dim=1).flatten(0, 1)  # [B*C, 3, 224, 224]
        word = (model.embed_tokens(tokens) * math.sqrt(cfg.vlm.width)).float()  # [B, L, W]
        image_tokens = self.vision(images).view(b, -1, word.shape[-1])  # [B, C*256, W]
        x = torch.cat([image_tokens, word], dim=1)  # [B, P, W] float32
        p = x.shape[1]
        x = x.view(b * p, -1)
        pad = torch.cat([torch.ones(b, p - n_tokens, dtype=torch.bool, device=dev), token_mask], dim=1)  # [B, P]
        cos, sin = self._rope_tables((torch.cumsum(pad.float(), 1) - 1).flatten(), model.vlm_inv_freq)
        prefix_group = torch.where(pad, 0, HIDDEN_GROUP).to(torch.int32)  # [B, P]
        k_cache, v_cache = self._kv_cache(b, p, dev, self.vlm.qkv[0].dtype)
        self._gemma_layers(self.vlm, x, cos, sin, k_cache, v_cache, slice(0, p),
                           torch.zeros(b * p, dtype=torch.int32, device=dev), prefix_group.flatten(), p, None,
                           self.vlm_fp8)
        # What the suffix needs, constant across the Euler steps.
        suffix_group = model.suffix_ar_cumsum.to(torch.int32).expand(b, -1)  # [B, S]: state 1, actions 2
        s = suffix_group.shape[1]
        positions = pad.float().sum(1, keepdim=True) + torch.arange(s, dtype=torch.float32, device=dev)  # [B, S]
        cos_s, sin_s = self._rope_tables(positions.flatten(), model.expert_inv_freq)
        return {'k_cache': k_cache, 'v_cache': v_cache, 'suffix_group': suffix_group.flatten(), 'cos': cos_s,
                'sin': sin_s, 'key_group': torch.cat([prefix_group, suffix_group], dim=1).flatten(),  # [B*(P+S)]
                'x': torch.empty((b * s, cfg.expert.width), device=dev, dtype=torch.float32)}

    def denoise_step(self, ctx: dict[str, torch.Tensor], state_tok: torch.Tensor, x_t: torch.Tensor,
                     step: int) -> None:
        """One Euler step in place on x_t float32 [B, T, A]; state_tok float32 [B, W] (projected state)."""
        model, n = self.policy.model, self.cfg.num_inference_steps
        width = self.cfg.expert.width
        x, k_cache = ctx['x'], ctx['k_cache']
        b = k_cache.shape[1]
        s = x.shape[0] // b
        p = k_cache.shape[3] - s
        action_emb = model.action_in_proj(x_t)  # [B, T, W]
        w_action = model.action_time_mlp_in.weight[:, :width]
        hidden = F.silu(F.linear(action_emb, w_action, self.time_bias[step]))
        rows = x.view(b, s, width)
        rows[:, 0].copy_(state_tok)
        rows[:, 1:].copy_(model.action_time_mlp_out(hidden))
        layers = self._gemma_layers
        if b == 1 and s <= MAX_ROWS and self.expert_gemm != 'cublas':
            layers = self._skinny_layers if self.expert_gemm == 'triton' else self._mixed_layers
        out = layers(self.expert, x, ctx['cos'], ctx['sin'], k_cache, ctx['v_cache'], slice(p, p + s),
                     ctx['suffix_group'], ctx['key_group'], p + s, model.expert.norm.weight)
        assert out is not None
        x_t.add_(model.action_out_proj(out.view(b, s, width)[:, 1:]), alpha=-1.0 / n)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Run the policy call: same contract as `Pi0Policy.forward`."""
        *frames, state, tokens, token_mask, noise = inputs
        ctx = self.prefix(frames, tokens, token_mask)
        state_tok = self.policy.model.state_proj(self.policy.normalize_state(state)).float()  # [B, W]
        x_t = noise.clone()  # [B, T, A] float32
        for step in range(self.cfg.num_inference_steps):
            self.denoise_step(ctx, state_tok, x_t, step)
        return self.policy.unnormalize_actions(x_t)
