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

"""GeGLU on the fused gate/up GEMM's output: ``gelu_tanh(gate) * up`` in one pass.

Rounds like the plain model (`GemmaMLP`): the GELU result is rounded to the output dtype before
the product, the product once more; the arithmetic itself is float32. tanh is written with
``exp`` (Triton's core language has no tanh that also runs in the interpreter). With a ``scale``
output, ``out`` is e4m3, each row quantized with its own scale (`pi0_trt_ros.kernels.fp8`): one
program then holds a whole row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pi0_trt_ros.kernels import gdc_launch_dependents, gdc_wait, pdl
from pi0_trt_ros.kernels.fp8 import finish_output, kernel_output, scale_rows


@triton.jit
def _geglu_kernel(gu_ptr, out_ptr, scale_ptr, M, F, stride_gu, stride_o, QUANTIZE: tl.constexpr, ROWS: tl.constexpr,
                  BLOCK_F: tl.constexpr, PDL: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    ok = (rows < M)[:, None] & (cols < F)[None, :]
    at = gu_ptr + rows[:, None] * stride_gu + cols[None, :]
    if PDL:
        gdc_wait()
    gate = tl.load(at, mask=ok, other=0.0).to(tl.float32)
    up = tl.load(at + F, mask=ok, other=0.0).to(tl.float32)
    if PDL:
        gdc_launch_dependents()
    inner = 0.7978845608028654 * (gate + 0.044715 * gate * gate * gate)  # sqrt(2/pi) (x + 0.044715 x^3)
    tanh = 1.0 - 2.0 / (tl.exp(2.0 * inner) + 1.0)
    act = gu_ptr.dtype.element_ty  # the activations' dtype: both roundings of the plain model happen in it
    y = ((0.5 * gate * (1.0 + tanh)).to(act).to(tl.float32) * up).to(act).to(tl.float32)
    if QUANTIZE:
        y, scale = scale_rows(y, ok)
        tl.store(scale_ptr + rows, scale, mask=rows < M)
    tl.store(out_ptr + rows[:, None] * stride_o + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=ok)


def geglu(gate_up: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """gate_up [M, 2F] (gate columns first, rows contiguous) -> out [M, F]; returns ``out``.

    With ``scale`` float32 [M], out is e4m3 and ``geglu(gate_up) ~= out * scale[:, None]``.
    """
    m, two_f = gate_up.shape
    f = two_f // 2
    if scale is not None:  # a row's scale needs the whole row in one program
        rows, block_f, warps = (1 if gate_up.is_cuda else 64), triton.next_power_of_2(f), 16
    else:
        rows, block_f, warps = (1, 1024, 4) if gate_up.is_cuda else (256, 256, 4)
    written = kernel_output(out)
    _geglu_kernel[(triton.cdiv(m, rows), triton.cdiv(f, block_f))](
        gate_up, written, gate_up if scale is None else scale, m, f, gate_up.stride(0), written.stride(0),
        QUANTIZE=scale is not None, ROWS=rows, BLOCK_F=block_f, PDL=pdl(out), launch_pdl=pdl(out), num_warps=warps)
    finish_output(out, written)
    return out
