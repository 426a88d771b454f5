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

"""FP8 (e4m3) GEMMs for the VLM prefix: weights scaled per output channel, activations per row.

The prefix's GEMMs (816 rows) are compute-bound, and Hopper runs e4m3 at twice the bf16 rate.
Each weight matrix [N, K] is quantized once, with a float32 scale per output channel (its row's
max |w| maps to e4m3's largest value, 448); each activation row (one token) gets its own scale the
same way, computed by the kernel that produces the row (`add_norm`, `geglu`), so quantizing costs
no extra pass. ``torch._scaled_mm`` multiplies the e4m3 operands, applies both scales and writes
bf16.

Triton's interpreter rounds some values to e4m3 wrongly (a mantissa carry is lost: 125.76
becomes 64), so on the CPU the kernels write the scaled rows in float32 and torch casts them
(`kernel_output`, `finish_output`); on a GPU they write e4m3 directly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pi0_trt_ros.kernels import interpreted

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0


@triton.jit
def scale_rows(y, ok):
    """Rows y float32 [R, C] (``ok`` masks the valid entries) -> (y / scale, scale [R]), |y / scale| <= 448."""
    amax = tl.max(tl.where(ok, tl.abs(y), 0.0), axis=1)
    scale = tl.maximum(amax, 1e-12) / 448.0
    return y / scale[:, None], scale


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight [N, K] -> (e4m3 [N, K], float32 scale [N]) with weight ~= e4m3 * scale[:, None]."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / E4M3_MAX
    return (w / scale[:, None]).to(E4M3), scale


def scaled_linear(a: torch.Tensor, a_scale: torch.Tensor, weight: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """Multiply a e4m3 [M, K] (float32 row scales [M]) by weight e4m3 [N, K] (scales [N]).T into bf16 [M, N]."""
    return torch._scaled_mm(a, weight.t(), scale_a=a_scale[:, None], scale_b=w_scale[None, :],
                            out_dtype=torch.bfloat16)


def kernel_output(out: torch.Tensor) -> torch.Tensor:
    """Return what a kernel producing ``out`` writes: ``out``, or a float32 twin of an e4m3 ``out`` on the CPU."""
    if out.dtype == E4M3 and interpreted():
        return torch.empty(out.shape, dtype=torch.float32, device=out.device)
    return out


def finish_output(out: torch.Tensor, written: torch.Tensor) -> None:
    """Cast the float32 twin from `kernel_output` into ``out`` (nothing to do when the kernel wrote ``out``)."""
    if written is not out:
        out.copy_(written)
