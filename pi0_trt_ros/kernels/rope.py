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

"""RoPE on the fused QKV GEMM's output, with the KV-cache write in the same pass.

Reads qkv [S, (H + 2N) * D] (query heads, then key heads, then value heads, as the fused weight
stacks them) and writes: queries rotated and pre-scaled by ``scale`` into q [S, H * D]; keys
rotated and values copied straight into their slots of a KV cache ([N, K, D] views, rows at
the tokens' positions). Rotation in float32 as `pi0_trt_ros.model.layers.apply_rope`:
``(x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)`` with cos/sin [S, D/2].
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pi0_trt_ros.kernels import gdc_launch_dependents, gdc_wait, pdl


@triton.jit
def _rope_qkv_kernel(qkv_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, S, S_ELEMENT, H, N, stride_qkv, stride_cs,
                     stride_q, stride_kb, stride_kn, stride_ks, stride_vb, stride_vn, stride_vs, scale,
                     HALF: tl.constexpr, ROWS: tl.constexpr, BLOCK_HALF: tl.constexpr, PDL: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # of all B * S_ELEMENT rows
    element, cache_row = rows // S_ELEMENT, rows % S_ELEMENT  # the row's batch element and its row in the cache
    head = tl.program_id(1)  # 0..H-1 query heads, H..H+N-1 key heads (each with its value head)
    j = tl.arange(0, BLOCK_HALF)
    ok = (rows < S)[:, None] & (j < HALF)[None, :]
    row_in = qkv_ptr + rows[:, None] * stride_qkv + j[None, :]
    cs = rows[:, None] * stride_cs + j[None, :]
    if PDL:
        gdc_wait()
    x1 = tl.load(row_in + head * 2 * HALF, mask=ok, other=0.0).to(tl.float32)
    x2 = tl.load(row_in + head * 2 * HALF + HALF, mask=ok, other=0.0).to(tl.float32)
    c = tl.load(cos_ptr + cs, mask=ok, other=0.0)
    s = tl.load(sin_ptr + cs, mask=ok, other=0.0)
    if PDL:
        gdc_launch_dependents()
    o1 = x1 * c - x2 * s
    o2 = x2 * c + x1 * s
    if head < H:
        q_at = q_ptr + rows[:, None] * stride_q + head * 2 * HALF + j[None, :]
        tl.store(q_at, (o1 * scale).to(q_ptr.dtype.element_ty), mask=ok)
        tl.store(q_at + HALF, (o2 * scale).to(q_ptr.dtype.element_ty), mask=ok)
    else:
        n = head - H
        k_at = k_ptr + element[:, None] * stride_kb + n * stride_kn + cache_row[:, None] * stride_ks + j[None, :]
        tl.store(k_at, o1.to(k_ptr.dtype.element_ty), mask=ok)
        tl.store(k_at + HALF, o2.to(k_ptr.dtype.element_ty), mask=ok)
        v_in = row_in + (H + N + n) * 2 * HALF
        v_at = v_ptr + element[:, None] * stride_vb + n * stride_vn + cache_row[:, None] * stride_vs + j[None, :]
        tl.store(v_at, tl.load(v_in, mask=ok, other=0.0).to(v_ptr.dtype.element_ty), mask=ok)
        tl.store(v_at + HALF, tl.load(v_in + HALF, mask=ok, other=0.0).to(v_ptr.dtype.element_ty), mask=ok)


def rope_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int, scale: float,
             q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
    """Split, rotate and store a fused QKV projection.

    qkv [B*S, (H + 2N) * D] (rows contiguous); cos/sin float32 [B*S, D/2]; q [B*S, H * D] receives
    the rotated queries times ``scale``; k_cache/v_cache [B, N, S, D] ([N, S, D] at batch 1; views
    into a cache, last dim contiguous) receive the rotated keys and the values, batch element b's
    from rows b*S .. b*S + S - 1.
    """
    if k_cache.dim() == 3:
        k_cache, v_cache = k_cache[None], v_cache[None]
    rows, width = qkv.shape
    batch, n, s, d = k_cache.shape
    if width != (num_heads + 2 * n) * d or cos.shape != (rows, d // 2) or rows != batch * s:
        raise ValueError(f'rope_qkv: qkv {tuple(qkv.shape)} / cos {tuple(cos.shape)} do not match '
                         f'{batch} x {s} rows of {num_heads} query heads, {n} KV heads of dim {d}')
    block = 1 if qkv.is_cuda else 256
    _rope_qkv_kernel[(triton.cdiv(rows, block), num_heads + n)](
        qkv, cos, sin, q, k_cache, v_cache, rows, s, num_heads, n, qkv.stride(0), cos.stride(0), q.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0), v_cache.stride(1),
        v_cache.stride(2), scale, HALF=d // 2, ROWS=block, BLOCK_HALF=triton.next_power_of_2(d // 2), PDL=pdl(qkv),
        launch_pdl=pdl(qkv), num_warps=1 if d <= 128 else 2)
