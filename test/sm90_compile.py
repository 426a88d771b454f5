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

"""Compile every fast-path Triton kernel for Hopper (sm_90) to a cubin, on a machine without a GPU.

Triton lowers a kernel to PTX and runs the ``ptxas`` it ships with, without touching a driver, so
code the CPU interpreter accepts but the GPU compiler rejects (inline PTX, programmatic dependent
launch, e4m3 stores, dot shapes) fails here instead of on the GPU. Each case is one branch of the
kernel's constexpr switches with the tiles its launcher uses on a GPU. Run without
``TRITON_INTERPRET`` (`test_kernels_compile.py` starts it in a process of its own); prints one line
per case and exits non-zero on the first failure.
"""

from __future__ import annotations

import os
import sys

assert os.environ.get('TRITON_INTERPRET', '0') in ('', '0'), 'compiling needs the real Triton, not its interpreter'

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from pi0_trt_ros.kernels import attention, geglu, norm, rope, skinny  # noqa: E402

HOPPER = GPUTarget('cuda', 90, 32)


def signature(fn, pointers: dict, constexprs: dict) -> dict:
    """Triton's signature of ``fn``: pointers as given (else bf16), floats for eps/scale, i32 for the rest."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = 'constexpr'
        elif name.endswith('_ptr'):
            sig[name] = pointers.get(name, '*bf16')
        else:
            sig[name] = 'fp32' if name in ('eps', 'scale') else 'i32'
    return sig


def compile_case(fn, pointers: dict, constexprs: dict, num_warps: int = 4, num_stages: int = 3) -> str:
    """Compile one case for sm_90; return the PTX."""
    src = ASTSource(fn=fn, signature=signature(fn, pointers, constexprs),
                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    kernel = triton.compile(src, target=HOPPER, options={'num_warps': num_warps, 'num_stages': num_stages})
    assert kernel.asm['cubin'], 'no cubin'
    return kernel.asm['ptx']


def cases():
    """(label, kernel, pointer dtypes, constexprs, num_warps, PTX that must appear)."""
    pdl = {'PDL': True}
    for quantize in (False, True):
        out = {'out_ptr': '*fp8e4nv', 'scale_ptr': '*fp32'} if quantize else {}
        for layer_norm in (False, True):
            yield (f'add_norm layer_norm={layer_norm} e4m3={quantize}', norm._add_norm_kernel,
                   {'x_ptr': '*fp32', 'w_ptr': '*fp32', 'b_ptr': '*fp32', **out},
                   dict(HAS_DELTA=True, LAYER_NORM=layer_norm, QUANTIZE=quantize, ROWS=1, BLOCK_W=2048, **pdl), 8,
                   'griddepcontrol')
        yield (f'geglu e4m3={quantize}', geglu._geglu_kernel, out,
               dict(QUANTIZE=quantize, ROWS=1, BLOCK_F=16384 if quantize else 1024, **pdl), 16 if quantize else 4,
               'griddepcontrol')
    yield ('rope_qkv', rope._rope_qkv_kernel, {'cos_ptr': '*fp32', 'sin_ptr': '*fp32'},
           dict(HALF=128, ROWS=1, BLOCK_HALF=128, **pdl), 2, 'griddepcontrol')
    for split in (False, True):
        yield (f'attention split={split}', attention._attention_kernel,
               {'qg_ptr': '*i32', 'kg_ptr': '*i32', 'part_ptr': '*fp32', 'stat_ptr': '*fp32'},
               dict(D=256, BLOCK_D=256, BLOCK_DV=256 if split else 64, BLOCK_M=32 if split else 64, BLOCK_N=64,
                    MASKED=True, SPLIT=split, UPCAST_DOT=False, DOT_PRECISION='tf32', PREFETCH=split, LINE=64,
                    **pdl), 4,
               'prefetch.global.L2' if split else 'griddepcontrol')
    yield ('attention merge', attention._merge_kernel, {'part_ptr': '*fp32', 'stat_ptr': '*fp32'},
           dict(D=256, BLOCK_D=256, ROWS=16, COLS=64, **pdl), 4, 'griddepcontrol')
    for label, epilogue, out in (('store', skinny.EPILOGUE_STORE, '*bf16'), ('geglu', skinny.EPILOGUE_GEGLU, '*bf16'),
                                 ('residual', skinny.EPILOGUE_RESIDUAL, '*fp32')):
        for rms_norm in ((False, True) if epilogue != skinny.EPILOGUE_RESIDUAL else (False,)):
            a = '*fp32' if rms_norm else '*bf16'
            yield (f'skinny {label} rms_norm={rms_norm}', skinny._skinny_gemm_kernel,
                   {'a_ptr': a, 'g_ptr': '*bf16', 'out_ptr': out},
                   dict(RMS_NORM=rms_norm, EPILOGUE=epilogue, BLOCK_M=64, BLOCK_N=32, BLOCK_K=256,
                        SPLIT_K=8 if epilogue == skinny.EPILOGUE_RESIDUAL else 1, UPCAST_DOT=False,
                        DOT_PRECISION='tf32', PREFETCH=True, LINE=64, **pdl), 4, 'prefetch.global.L2')
    yield ('skinny qkv + rope', skinny._qkv_rope_kernel, {'cos_ptr': '*fp32', 'sin_ptr': '*fp32'},
           dict(HALF=128, BLOCK_M=64, BLOCK_N=32, BLOCK_K=256, UPCAST_DOT=False, DOT_PRECISION='tf32',
                PREFETCH=True, LINE=64, **pdl), 4, 'prefetch.global.L2')


def main() -> int:
    for label, fn, pointers, constexprs, warps, must in cases():
        try:
            ptx = compile_case(fn, pointers, constexprs, num_warps=warps)
        except Exception as exc:  # noqa: BLE001 (report which case and why, then fail)
            print(f'FAIL {label}: {type(exc).__name__}: {exc}')
            return 1
        if must not in ptx:
            print(f'FAIL {label}: {must!r} not in the PTX')
            return 1
        print(f'ok   {label}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
