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

"""Residual add + normalization in one pass: the residual stream stays float32, the output feeds a GEMM.

``x += delta`` (optional), then ``out = norm(x)`` cast to ``out``'s dtype, where norm is Gemma's
RMSNorm ``x * rsqrt(mean(x^2) + eps) * (1 + w)`` or SigLIP's LayerNorm ``(x - mean) * rsqrt(var + eps)
* w + b``, both in float32 as in `pi0_trt_ros.model.layers`. One program normalizes ROWS rows.
With a ``scale`` output, ``out`` is e4m3 and each row is quantized with its own scale
(`pi0_trt_ros.kernels.fp8`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pi0_trt_ros.kernels import gdc_launch_dependents, gdc_wait, pdl
from pi0_trt_ros.kernels.fp8 import finish_output, kernel_output, scale_rows


@triton.jit
def _add_norm_kernel(x_ptr, delta_ptr, w_ptr, b_ptr, out_ptr, scale_ptr, M, W, stride_x, stride_d, stride_o, eps,
                     HAS_DELTA: tl.constexpr, LAYER_NORM: tl.constexpr, QUANTIZE: tl.constexpr, ROWS: tl.constexpr,
                     BLOCK_W: tl.constexpr, PDL: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_W)
    col_ok = cols < W
    ok = (rows < M)[:, None] & col_ok[None, :]
    x_at = x_ptr + rows[:, None] * stride_x + cols[None, :]
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)  # a weight: no earlier kernel writes it
    if PDL:
        gdc_wait()
    x = tl.load(x_at, mask=ok, other=0.0).to(tl.float32)
    if HAS_DELTA:
        x += tl.load(delta_ptr + rows[:, None] * stride_d + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        tl.store(x_at, x, mask=ok)
    if LAYER_NORM:
        mean = tl.sum(x, axis=1) / W
        xc = tl.where(ok, x - mean[:, None], 0.0)
        var = tl.sum(xc * xc, axis=1) / W
        b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        y = xc * tl.rsqrt(var + eps)[:, None] * w[None, :] + b[None, :]
    else:
        var = tl.sum(x * x, axis=1) / W
        y = x * tl.rsqrt(var + eps)[:, None] * (1.0 + w[None, :])
    if PDL:
        gdc_launch_dependents()
    if QUANTIZE:
        y, scale = scale_rows(y, ok)
        tl.store(scale_ptr + rows, scale, mask=rows < M)
    tl.store(out_ptr + rows[:, None] * stride_o + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=ok)


def add_norm(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None,
             eps: float, out: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``x += delta`` in place (when given), then ``out = norm(x)``; returns ``out``.

    x float32 [M, W] (rows contiguous), delta [M, W] any float dtype, weight/bias float [W]
    (``bias`` given: LayerNorm with weight ``w``; ``bias`` None: Gemma RMSNorm with ``1 + w``),
    out [M, W] in the dtype of the next GEMM; with ``scale`` float32 [M], out is e4m3 and
    ``norm(x) ~= out * scale[:, None]``.
    """
    m, w = x.shape
    rows = 1 if x.is_cuda else 128  # GPU: a row per program fills the SMs; interpreter: fewer programs
    written = kernel_output(out)
    _add_norm_kernel[(triton.cdiv(m, rows),)](
        x, x if delta is None else delta, weight, weight if bias is None else bias, written,
        x if scale is None else scale, m, w, x.stride(0), 0 if delta is None else delta.stride(0),
        written.stride(0), eps, HAS_DELTA=delta is not None, LAYER_NORM=bias is not None,
        QUANTIZE=scale is not None, ROWS=rows, BLOCK_W=triton.next_power_of_2(w), PDL=pdl(x), launch_pdl=pdl(x),
        num_warps=4 if w <= 1024 else 8)
    finish_output(out, written)
    return out
