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

"""Multi-query attention with a float32 online softmax (FlashAttention-style), mask given by groups.

One kernel serves the three attentions of Pi0's Gemma stacks: the prefix over itself, and the
action expert's suffix over [prefix cache | suffix]. Key j is visible to query i iff
``key_group[j] <= query_group[i]``; this expresses LeRobot's masks exactly: padded prefix keys
get a group above every query's, the prefix's valid keys group 0, and the suffix keys the
cumulative sum of its autoregressive mask (state 1, actions 2). A fully masked row attends
uniformly to every key, as the plain model's additive mask (-2.38e38) makes it do.

The G query heads that share one KV head are laid side by side as G*S rows against the same
keys, so one tile of K/V serves them all. Scores and softmax stay float32; the probabilities
are cast to V's dtype for the second product, the output is normalized in float32 and cast.

Split-KV: with few query rows (the expert's 51 queries) one program per row block would walk all
867 keys alone. The keys are then cut into chunks, each program does one (row block, chunk) and
leaves its unnormalized partial output with its running max and sum; a second kernel merges the
chunks. Row blocks over one chunk each keep the GPU busy at any query count.

Value slices (``block_dv`` < the head dim): each program computes the scores over the whole head
dim as usual but accumulates only a slice of V's columns, so several programs share a row block
and a chunk. More programs without more chunks: with every key in one chunk, the expert's few
rows get enough programs and no merge kernel at all (the scores are computed once per slice).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pi0_trt_ros.kernels import gdc_launch_dependents, gdc_wait, interpreted, pdl, prefetch, prefetch_l2

HIDDEN_GROUP = 1 << 30  # key group that no query reaches (padded keys)


@triton.jit
def _attention_kernel(q_ptr, k_ptr, v_ptr, qg_ptr, kg_ptr, out_ptr, part_ptr, stat_ptr, S, K, G, N, chunk,
                      stride_q, stride_kb, stride_kn, stride_kk, stride_vb, stride_vn, stride_vk, stride_o,
                      D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, MASKED: tl.constexpr, SPLIT: tl.constexpr, UPCAST_DOT: tl.constexpr,
                      DOT_PRECISION: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr, LINE: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # row r = g * S + s of one batch element
    slot = tl.program_id(1)  # b * N + n: batch element b, KV head n
    b = slot // N
    n = slot % N
    slices: tl.constexpr = BLOCK_D // BLOCK_DV  # axis 2: (chunk, slice of V's columns)
    split = tl.program_id(2) // slices
    v_slice = tl.program_id(2) % slices
    row_ok = rows < G * S
    s = b * S + rows % S  # the query's row in q, the groups and out
    head = n * G + rows // S
    k_ptr += b * stride_kb
    v_ptr += b * stride_vb
    kg_ptr += b * K
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    dv = v_slice * BLOCK_DV + tl.arange(0, BLOCK_DV)  # this program's columns of V and of the output
    dv_ok = dv < D
    key_end = tl.minimum(K, (split + 1) * chunk)
    if PREFETCH:  # the chunk's K/V into L2 (the prefix's part is no earlier kernel's), once per chunk
        if (tl.program_id(0) == 0) & (v_slice == 0):
            lines = tl.arange(0, BLOCK_D // LINE) * LINE
            for start in range(split * chunk, key_end, BLOCK_N):
                keys = start + tl.arange(0, BLOCK_N)
                ok = (keys < key_end)[:, None] & (lines < D)[None, :]
                prefetch_l2(tl.where(ok, k_ptr + n * stride_kn + keys[:, None] * stride_kk + lines[None, :], k_ptr))
                prefetch_l2(tl.where(ok, v_ptr + n * stride_vn + keys[:, None] * stride_vk + lines[None, :], v_ptr))
    if PDL:
        gdc_wait()
    q = tl.load(q_ptr + s[:, None] * stride_q + head[:, None] * D + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST_DOT:
        q = q.to(tl.float32)
    qg = tl.load(qg_ptr + s, mask=row_ok, other=0)
    m_i = tl.full([BLOCK_M], float('-inf'), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start in range(split * chunk, key_end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < key_end
        kt = tl.load(k_ptr + n * stride_kn + cols[None, :] * stride_kk + d[:, None],
                     mask=col_ok[None, :] & d_ok[:, None], other=0.0)  # [BLOCK_D, BLOCK_N]
        if UPCAST_DOT:
            kt = kt.to(tl.float32)
        scores = tl.dot(q, kt, input_precision=DOT_PRECISION) * 1.4426950408889634  # log2(e): exp2 domain
        if MASKED:
            kg = tl.load(kg_ptr + cols, mask=col_ok, other=0)
            scores = tl.where(kg[None, :] <= qg[:, None], scores, -2.3819763e38)  # layers.MASK_VALUE
        scores = tl.where(col_ok[None, :], scores, float('-inf'))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + n * stride_vn + cols[:, None] * stride_vk + dv[None, :],
                    mask=col_ok[:, None] & dv_ok[None, :], other=0.0)  # [BLOCK_N, BLOCK_DV]
        if UPCAST_DOT:
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    if PDL:
        gdc_launch_dependents()
    if SPLIT:  # partial [splits, B*N, G*S, BLOCK_D], stats [splits, B*N, G*S, 2] (max, sum)
        rows_total = G * S
        at = (split * tl.num_programs(1) + slot) * rows_total + rows
        tl.store(part_ptr + at[:, None] * BLOCK_D + dv[None, :], acc, mask=row_ok[:, None])
        if v_slice == 0:  # every slice has the same max and sum: one writes them
            tl.store(stat_ptr + at * 2, m_i, mask=row_ok)
            tl.store(stat_ptr + at * 2 + 1, l_i, mask=row_ok)
    else:
        out = acc / l_i[:, None]
        tl.store(out_ptr + s[:, None] * stride_o + head[:, None] * D + dv[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & dv_ok[None, :])


@triton.jit
def _merge_kernel(part_ptr, stat_ptr, out_ptr, S, G, N, splits, stride_o, D: tl.constexpr, BLOCK_D: tl.constexpr,
                  ROWS: tl.constexpr, COLS: tl.constexpr, PDL: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    slot = tl.program_id(1)  # b * N + n
    d = tl.program_id(2) * COLS + tl.arange(0, COLS)  # a slice of the head dim: more programs in flight
    slots = tl.num_programs(1)
    rows_total = G * S
    row_ok = rows < rows_total
    m = tl.full([ROWS], float('-inf'), tl.float32)
    if PDL:
        gdc_wait()
    for split in range(0, splits):
        at = (split * slots + slot) * rows_total + rows
        m = tl.maximum(m, tl.load(stat_ptr + at * 2, mask=row_ok, other=0.0))
    acc = tl.zeros([ROWS, COLS], tl.float32)
    total = tl.zeros([ROWS], tl.float32)
    for split in range(0, splits):
        at = (split * slots + slot) * rows_total + rows
        w = tl.exp2(tl.load(stat_ptr + at * 2, mask=row_ok, other=0.0) - m)
        total += w * tl.load(stat_ptr + at * 2 + 1, mask=row_ok, other=0.0)
        acc += w[:, None] * tl.load(part_ptr + at[:, None] * BLOCK_D + d[None, :], mask=row_ok[:, None], other=0.0)
    if PDL:
        gdc_launch_dependents()
    s = slot // N * S + rows % S
    head = slot % N * G + rows // S
    tl.store(out_ptr + s[:, None] * stride_o + head[:, None] * D + d[None, :],
             (acc / total[:, None]).to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & (d < D)[None, :])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_group: torch.Tensor | None,
              key_group: torch.Tensor | None, out: torch.Tensor, block_m: int | None = None,
              block_n: int | None = None, chunk: int | None = None, block_dv: int | None = None,
              num_warps: int | None = None, num_stages: int | None = None, prefetch_kv: bool = False) -> torch.Tensor:
    """Attention of q [B*S, H*D] (already scaled) over k/v [B, N, K, D]; writes out [B*S, H*D]; returns ``out``.

    Batch element b's S query rows (rows b*S .. b*S + S - 1) read its own keys only; k/v [N, K, D]
    is batch 1. query_group int32 [B*S] and key_group int32 [B*K] (contiguous) define the mask
    (both None: no mask). Query head h reads KV head h // (H/N). Rows of q/out and of k/v may be
    strided; the last dim is contiguous. Tiles: ``block_m`` query rows by ``block_n`` keys; ``chunk`` keys per split
    (None: the defaults below; ``chunk >= K``: no split); ``block_dv`` columns of V per program (a power
    of two; None: the whole head dim). ``prefetch_kv``: when the keys are split,
    the first row block of each chunk asks L2 for the chunk's K/V before waiting on the kernel before
    (with PDL; see `pi0_trt_ros.kernels.prefetch`).
    """
    if k.dim() == 3:
        k, v = k[None], v[None]
    batch, n, kk, d = k.shape
    s = q.shape[0] // batch
    h = q.shape[1] // d
    g = h // n
    if (g * n != h or q.shape[1] != h * d or out.shape != q.shape or v.shape != k.shape
            or s * batch != q.shape[0]):
        raise ValueError(f'attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, '
                         f'out {tuple(out.shape)} do not describe grouped attention')
    masked = query_group is not None
    if masked != (key_group is not None):
        raise ValueError('attention: give both query_group and key_group, or neither')
    fp32 = k.dtype == torch.float32
    block_d = triton.next_power_of_2(d)
    rows = g * s
    if not q.is_cuda:  # the interpreter pays per program and per loop trip: few, large tiles
        block_m, block_n = block_m or 256, block_n or 256
        chunk = chunk or kk
    elif rows <= 1024:  # few query rows (the expert's suffix): split the keys (H200 sweep: 32 x 64, 128 keys)
        block_m, block_n, chunk = block_m or 32, block_n or (32 if fp32 else 64), chunk or 128
    else:  # the prefix: one pass (H200 sweep: 64 x 64 tiles, 4 warps, 3 stages)
        block_m, block_n, chunk = block_m or 64, block_n or (32 if fp32 else 64), chunk or kk
        num_stages = num_stages or (2 if fp32 else 3)
    chunk = triton.cdiv(chunk, block_n) * block_n
    splits = triton.cdiv(kk, chunk)
    block_dv = min(block_dv or block_d, block_d)
    if block_dv & (block_dv - 1):
        raise ValueError(f'attention: block_dv must be a power of two, got {block_dv}')
    part = stat = out  # placeholders when not split
    if splits > 1:
        part = torch.empty((splits, batch * n, rows, block_d), device=q.device, dtype=torch.float32)
        stat = torch.empty((splits, batch * n, rows, 2), device=q.device, dtype=torch.float32)
    _attention_kernel[(triton.cdiv(rows, block_m), batch * n, splits * (block_d // block_dv))](
        q, k, v, query_group if masked else q, key_group if masked else q, out, part, stat, s, kk, g, n, chunk,
        q.stride(0), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), out.stride(0),
        D=d, BLOCK_D=block_d, BLOCK_DV=block_dv,
        BLOCK_M=block_m, BLOCK_N=block_n, MASKED=masked, SPLIT=splits > 1,
        UPCAST_DOT=interpreted() and k.dtype == torch.bfloat16,  # Triton 3.9's interpreter mis-computes bf16 dots
        DOT_PRECISION='ieee' if fp32 else 'tf32', PDL=pdl(q), launch_pdl=pdl(q),
        PREFETCH=prefetch_kv and splits > 1 and prefetch(q),
        LINE=min(128 // k.element_size(), block_d),  # elements per 128-byte line (per row, if rows are shorter)
        num_warps=num_warps or (4 if block_m <= 64 else 8), num_stages=num_stages or 2)
    if splits > 1:
        merge_rows, merge_cols = 16 if q.is_cuda else 256, min(64, block_d)
        _merge_kernel[(triton.cdiv(rows, merge_rows), batch * n, block_d // merge_cols)](
            part, stat, out, s, g, n, splits, out.stride(0), D=d, BLOCK_D=block_d, ROWS=merge_rows, COLS=merge_cols,
            PDL=pdl(q), launch_pdl=pdl(q), num_warps=4)
    return out
