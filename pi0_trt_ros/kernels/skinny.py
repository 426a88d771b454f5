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

"""GEMMs for few rows (the action expert's 51 tokens) with the layer's small ops folded in.

``out = a @ w^T`` with a [M, K] (M <= 64: one row block holds every row), w [N, K] as nn.Linear
stores it. At this M a GEMM is bound by streaming w, so the grid is spread over N (and over K for
the projections back into the residual stream) until every SM streams its share, and the ops
around the GEMM ride along instead of launching kernels of their own:

* ``rms_norm``: a is the float32 residual stream; Gemma's RMSNorm is folded into the prologue.
  ``norm(x) @ w^T = rsqrt(mean(x^2) + eps) * ((x * (1 + g)) @ w^T)``: the K loop feeds
  ``x * (1 + g)`` (cast to w's dtype) to the dot and sums ``x^2`` on the way; the row scale is
  applied to the accumulator at the end. Needs the whole of K in one program (no split-K).
* ``geglu``: w is the fused [gate; up] matrix [2F, K]; each program accumulates the same F
  columns of both halves and writes ``gelu_tanh(gate) * up`` [M, F], rounded like `GemmaMLP`.
* ``residual``: out is the float32 residual stream and receives ``out += a @ w^T`` by atomic
  adds, so split-K needs no reduction kernel and the residual add costs nothing. The order of
  the adds varies from run to run (float32 rounding, ~1e-7 relative).

On the H200 (triton 3.6) the split-K residual GEMMs beat cuBLAS at the expert's o_proj and down
shapes (4.3 and 5.3 us against 6.9 and 8.2), which is what ``expert_gemm='mixed'`` uses; with
every fused op the step took 1.12 ms against 0.94 ms on cuBLAS (``expert_gemm='triton'``).
With programmatic dependent launch and ``prefetch_weights`` (`skinny_qkv_rope` always), each
program first asks L2 for its share of w (PTX ``prefetch``; w needs nothing from the kernel before)
and only then waits on the kernel before it, so the weights stream while that kernel finishes.
On CUDA the tile sizes are autotuned per shape on the first call (results cached on disk where
Triton supports it); under the interpreter one large tile keeps the program count small.
"""

from __future__ import annotations

import inspect

import torch
import triton
import triton.language as tl

from pi0_trt_ros.kernels import gdc_launch_dependents, gdc_wait, interpreted, pdl, prefetch, prefetch_l2

MAX_ROWS = 64  # one row block: the expert's 51 suffix tokens
EPILOGUE_STORE, EPILOGUE_GEGLU, EPILOGUE_RESIDUAL = 0, 1, 2


@triton.jit
def _gelu_tanh(x):
    """GELU, tanh approximation, float32; tanh written with exp (the interpreter has no tanh)."""
    inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)  # sqrt(2/pi) (x + 0.044715 x^3)
    return 0.5 * x * (2.0 - 2.0 / (tl.exp(2.0 * inner) + 1.0))


@triton.jit
def _accumulate(a_ptr, w_ptr, g_ptr, rows, row_ok, cols, col_ok, paired_rows, k_begin, k_end, K, stride_a, stride_w,
                RMS_NORM: tl.constexpr, PAIRED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, PDL: tl.constexpr,
                PREFETCH: tl.constexpr, LINE: tl.constexpr):
    """Run the K loop over [k_begin, k_end); return (acc, acc2, ssq).

    ``acc = a @ w[cols]^T`` float32 [BLOCK_M, BLOCK_N]; with ``PAIRED``, ``acc2 = a @ w[cols +
    paired_rows]^T`` on the same a tiles; with ``RMS_NORM``, ``ssq`` the rows' sum of squares (a is
    then the float32 residual stream, fed as ``a * (1 + g)``). The program's weights are prefetched
    into L2 (``PREFETCH``) before it waits on the kernel before (``PDL``).
    """
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    acc2 = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    ssq = tl.zeros([BLOCK_M], tl.float32)
    if PREFETCH:  # the weights need nothing from the kernel before: stream this program's share into L2 now
        for k0 in range(k_begin, k_end, BLOCK_K):
            lines = k0 + tl.arange(0, BLOCK_K // LINE) * LINE  # the first element of each 128-byte line
            at = w_ptr + cols[:, None] * stride_w + lines[None, :]
            line_ok = col_ok[:, None] & (lines < K)[None, :]
            prefetch_l2(tl.where(line_ok, at, w_ptr))
            if PAIRED:
                prefetch_l2(tl.where(line_ok, at + paired_rows * stride_w, w_ptr))
    if PDL:
        gdc_wait()
    for k0 in range(k_begin, k_end, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        a_at = a_ptr + rows[:, None] * stride_a + ks[None, :]
        a_ok = row_ok[:, None] & k_ok[None, :]
        a = tl.load(a_at, mask=a_ok, other=0.0)
        if RMS_NORM:
            a = a.to(tl.float32)
            ssq += tl.sum(a * a, axis=1)
            a = a * (1.0 + tl.load(g_ptr + ks, mask=k_ok, other=0.0).to(tl.float32))[None, :]
        a = a.to(w_ptr.dtype.element_ty)
        w_at = w_ptr + cols[None, :] * stride_w + ks[:, None]  # [BLOCK_K, BLOCK_N] view of w^T
        w_ok = k_ok[:, None] & col_ok[None, :]
        wt = tl.load(w_at, mask=w_ok, other=0.0)
        if UPCAST_DOT:
            a = a.to(tl.float32)
            wt = wt.to(tl.float32)
        acc = tl.dot(a, wt, acc, input_precision=DOT_PRECISION)
        if PAIRED:
            w2 = tl.load(w_at + paired_rows * stride_w, mask=w_ok, other=0.0)
            if UPCAST_DOT:
                w2 = w2.to(tl.float32)
            acc2 = tl.dot(a, w2, acc2, input_precision=DOT_PRECISION)
    return acc, acc2, ssq


@triton.jit
def _skinny_gemm_kernel(a_ptr, w_ptr, g_ptr, out_ptr, M, N, K, stride_a, stride_w, stride_o, eps,
                        RMS_NORM: tl.constexpr, EPILOGUE: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
                        UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, PDL: tl.constexpr,
                        PREFETCH: tl.constexpr, LINE: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # output columns (F columns for GeGLU)
    split = tl.program_id(1)
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < M
    col_ok = cols < N
    k_len = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K  # keys of K per split, whole tiles
    acc, acc_up, ssq = _accumulate(a_ptr, w_ptr, g_ptr, rows, row_ok, cols, col_ok, N, split * k_len,
                                   tl.minimum(K, (split + 1) * k_len), K, stride_a, stride_w, RMS_NORM, EPILOGUE == 1,
                                   BLOCK_M, BLOCK_N, BLOCK_K, UPCAST_DOT, DOT_PRECISION, PDL, PREFETCH, LINE)
    if PDL:
        gdc_launch_dependents()
    if RMS_NORM:
        rstd = tl.rsqrt(ssq / K + eps)
        acc = acc * rstd[:, None]
        acc_up = acc_up * rstd[:, None]
    out_at = out_ptr + rows[:, None] * stride_o + cols[None, :]
    ok = row_ok[:, None] & col_ok[None, :]
    if EPILOGUE == 2:
        tl.atomic_add(out_at, acc, mask=ok, sem='relaxed')
    elif EPILOGUE == 1:  # as GemmaMLP: gate and up rounded to the GEMM dtype, the GELU too, then the product
        gate = acc.to(w_ptr.dtype.element_ty).to(tl.float32)
        up = acc_up.to(w_ptr.dtype.element_ty).to(tl.float32)
        gelu = _gelu_tanh(gate).to(w_ptr.dtype.element_ty)
        tl.store(out_at, (gelu.to(tl.float32) * up).to(out_ptr.dtype.element_ty), mask=ok)
    else:
        tl.store(out_at, acc.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _qkv_rope_kernel(a_ptr, w_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, M, H, N, K, stride_a, stride_w,
                     stride_cs, stride_q, stride_kn, stride_ks, stride_vn, stride_vs, scale,
                     HALF: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, PDL: tl.constexpr,
                     PREFETCH: tl.constexpr, LINE: tl.constexpr):
    # Program p: BLOCK_N half-columns, each a column j of the first half of a head together with the
    # same j of its second half (RoPE's pairs); heads 0..H-1 queries, H..H+N-1 keys, then N values.
    half_cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    head = half_cols // HALF
    j = half_cols % HALF
    cols = head * 2 * HALF + j  # the first-half column of w (and of the unfused qkv)
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < M
    col_ok = head < H + 2 * N
    x1, x2, _ = _accumulate(a_ptr, w_ptr, w_ptr, rows, row_ok, cols, col_ok, HALF, 0, K, K, stride_a, stride_w,
                            False, True, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST_DOT, DOT_PRECISION, PDL, PREFETCH, LINE)
    if PDL:
        gdc_launch_dependents()
    # As the unfused path: the projection rounded to the GEMM dtype, then rotated in float32.
    x1 = x1.to(w_ptr.dtype.element_ty).to(tl.float32)
    x2 = x2.to(w_ptr.dtype.element_ty).to(tl.float32)
    is_q = head < H
    is_k = (head >= H) & (head < H + N)
    is_v = (head >= H + N) & col_ok
    ok = row_ok[:, None] & col_ok[None, :]
    cs = rows[:, None] * stride_cs + j[None, :]
    c = tl.load(cos_ptr + cs, mask=ok & ~is_v[None, :], other=1.0)  # values: cos 1, sin 0 leave them as they are
    s = tl.load(sin_ptr + cs, mask=ok & ~is_v[None, :], other=0.0)
    factor = tl.where(is_q, scale, 1.0)[None, :]
    o1 = (x1 * c - x2 * s) * factor
    o2 = (x2 * c + x1 * s) * factor
    q_at = q_ptr + rows[:, None] * stride_q + cols[None, :]
    tl.store(q_at, o1.to(q_ptr.dtype.element_ty), mask=ok & is_q[None, :])
    tl.store(q_at + HALF, o2.to(q_ptr.dtype.element_ty), mask=ok & is_q[None, :])
    kv = tl.where(is_v, head - H - N, head - H)  # the KV head of a key or value column
    k_at = k_ptr + kv[None, :] * stride_kn + rows[:, None] * stride_ks + j[None, :]
    tl.store(k_at, o1.to(k_ptr.dtype.element_ty), mask=ok & is_k[None, :])
    tl.store(k_at + HALF, o2.to(k_ptr.dtype.element_ty), mask=ok & is_k[None, :])
    v_at = v_ptr + kv[None, :] * stride_vn + rows[:, None] * stride_vs + j[None, :]
    tl.store(v_at, o1.to(v_ptr.dtype.element_ty), mask=ok & is_v[None, :])
    tl.store(v_at + HALF, o2.to(v_ptr.dtype.element_ty), mask=ok & is_v[None, :])


# Tiles tried on the GPU (BLOCK_N, BLOCK_K, stages): narrow column blocks so that >= 100 programs stream w.
_TILES = [(16, 256, 3), (32, 128, 4), (32, 256, 3), (64, 128, 3)]


def _configs(splits: tuple[int, ...]) -> list[triton.Config]:
    """Autotuning configurations: every tile, for each split of K."""
    return [triton.Config({'BLOCK_N': n, 'BLOCK_K': k, 'SPLIT_K': s}, num_warps=4, num_stages=st)
            for n, k, st in _TILES for s in splits]


def _autotune(kernel: triton.JITFunction, configs: list[triton.Config], key: list[str],
              **kwargs: object) -> triton.runtime.Autotuner:
    """Autotune ``kernel`` over ``configs``, keyed by ``key``, results cached on disk if supported."""
    if 'cache_results' in inspect.signature(triton.autotune).parameters:
        kwargs['cache_results'] = True
    return triton.autotune(configs, key=key, **kwargs)(kernel)


_GEMM_KEY = ['M', 'N', 'K', 'RMS_NORM', 'EPILOGUE']
_FULL_K = _autotune(_skinny_gemm_kernel, _configs((1,)), _GEMM_KEY)  # the RMSNorm prologue needs whole rows
_SPLIT_K = _autotune(_skinny_gemm_kernel, _configs((4, 8)), _GEMM_KEY,
                     restore_value=['out_ptr'])  # atomics into out: restore between trials
# QKV + RoPE: blocks of half-columns, each program the whole of K (the rotation needs finished sums).
_QKV_ROPE = _autotune(_qkv_rope_kernel, [triton.Config({'BLOCK_N': n, 'BLOCK_K': k}, num_warps=4, num_stages=st)
                                         for n, k, st in _TILES], ['M', 'H', 'N', 'K', 'HALF'])


def _launch_constants(a: torch.Tensor, weight: torch.Tensor, prefetch_weights: bool) -> dict[str, object]:
    """Return the constexprs both skinny kernels take from their operands (a [M, K], weight [N, K])."""
    return {'BLOCK_M': max(16, triton.next_power_of_2(a.shape[0])),
            'UPCAST_DOT': interpreted() and weight.dtype == torch.bfloat16,  # the interpreter's bf16 dot is wrong
            'DOT_PRECISION': 'ieee' if weight.dtype == torch.float32 else 'tf32', 'PDL': pdl(a),
            'PREFETCH': prefetch_weights and prefetch(a), 'LINE': 128 // weight.element_size()}


def _interpreter_tiles(n: int, k: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_K) under the interpreter: few, large programs (it pays per program and loop trip)."""
    return max(16, min(128, triton.next_power_of_2(n))), max(16, min(128, triton.next_power_of_2(k)))


def skinny_linear(a: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, *, norm_weight: torch.Tensor | None = None,
                  eps: float = 1e-6, geglu: bool = False, residual: bool = False,
                  prefetch_weights: bool = False) -> torch.Tensor:
    """``out = a @ weight^T`` for M <= 64 rows, with the fused ops above; returns ``out``.

    a [M, K] (float32 residual stream when ``norm_weight`` is given; else the GEMM dtype), weight
    [N, K] ([2F, K] gate then up with ``geglu``), norm_weight [K] (RMSNorm gain g, scale 1 + g), out
    [M, N] ([M, F] with ``geglu``; float32 [M, N] accumulated into with ``residual``). Rows may be
    strided; the last dims are contiguous. ``prefetch_weights``: ask L2 for the weights before
    waiting on the kernel before (with PDL; see `pi0_trt_ros.kernels.prefetch`).
    """
    m, k = a.shape
    n = weight.shape[0] // 2 if geglu else weight.shape[0]
    if m > MAX_ROWS or weight.shape[1] != k or out.shape != (m, n):
        raise ValueError(f'skinny_linear: a {tuple(a.shape)}, weight {tuple(weight.shape)}, out {tuple(out.shape)} '
                         f'(geglu={geglu}) do not describe a GEMM of at most {MAX_ROWS} rows')
    if residual and (geglu or norm_weight is not None or out.dtype != torch.float32):
        raise ValueError('skinny_linear: residual accumulates a plain GEMM into a float32 residual stream')
    epilogue = EPILOGUE_RESIDUAL if residual else EPILOGUE_GEGLU if geglu else EPILOGUE_STORE
    args = (a, weight, weight if norm_weight is None else norm_weight, out, m, n, k, a.stride(0), weight.stride(0),
            out.stride(0), eps)
    fixed = {'RMS_NORM': norm_weight is not None, 'EPILOGUE': epilogue,
             **_launch_constants(a, weight, prefetch_weights)}
    if not a.is_cuda:  # interpreter: split K in two where allowed (exercises the atomics)
        split = 2 if residual else 1
        block_n, block_k = _interpreter_tiles(n, k)
        grid = (triton.cdiv(n, block_n), split)
        _skinny_gemm_kernel[grid](*args, **fixed, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split)
        return out
    tuned = _SPLIT_K if residual else _FULL_K
    tuned[lambda meta: (triton.cdiv(n, meta['BLOCK_N']), meta['SPLIT_K'])](*args, **fixed, launch_pdl=fixed['PDL'])
    return out


def skinny_qkv_rope(a: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int,
                    scale: float, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
    """Project M <= 64 rows to QKV with `rope_qkv` in the GEMM's epilogue (no qkv tensor in between).

    a [M, K] in the GEMM dtype (the normalized rows); weight [(H + 2N) * D, K] (queries, keys,
    values); cos/sin float32 [M, D/2]; q [M, H * D] receives the rotated queries times ``scale``;
    k_cache/v_cache [N, M, D] (views into a cache, last dim contiguous) the rotated keys and the
    values, as `rope_qkv` writes them from ``a @ weight^T``.
    """
    m, k = a.shape
    n, _, d = k_cache.shape
    if m > MAX_ROWS or weight.shape != ((num_heads + 2 * n) * d, k) or cos.shape != (m, d // 2):
        raise ValueError(f'skinny_qkv_rope: a {tuple(a.shape)}, weight {tuple(weight.shape)}, cos {tuple(cos.shape)} '
                         f'do not match {num_heads} query heads, {n} KV heads of dim {d}, at most {MAX_ROWS} rows')
    half = d // 2
    args = (a, weight, cos, sin, q, k_cache, v_cache, m, num_heads, n, k, a.stride(0), weight.stride(0), cos.stride(0),
            q.stride(0), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1), scale)
    fixed = {'HALF': half, **_launch_constants(a, weight, prefetch_weights=True)}
    half_cols = (num_heads + 2 * n) * half  # each program takes BLOCK_N of them and their partners
    if not a.is_cuda:
        block_n, block_k = _interpreter_tiles(half_cols, k)
        _qkv_rope_kernel[(triton.cdiv(half_cols, block_n),)](*args, **fixed, BLOCK_N=block_n, BLOCK_K=block_k)
        return
    _QKV_ROPE[lambda meta: (triton.cdiv(half_cols, meta['BLOCK_N']),)](*args, **fixed, launch_pdl=fixed['PDL'])
