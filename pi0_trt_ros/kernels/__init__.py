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

"""Triton kernels of the torch backend's fast path (`pi0_trt_ros.model.fast`).

Each module holds one fused operation and a thin launcher that works on CUDA tensors, and on
CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the tests run
them. Nothing here is imported by the plain model, the exporter or the node: importing a
kernel module imports ``triton``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

from pi0_trt_ros.errors import BackendUnavailableError

# Programmatic dependent launch (Hopper and later): a kernel launched with it may start while the kernel
# before it finishes; it calls `gdc_wait` before touching anything an earlier kernel writes, and its
# predecessor calls `gdc_launch_dependents` once it has loaded what it needs, so the next kernel's launch
# and set-up overlap this one's tail. Both are no-ops without PDL. PI0_TRT_ROS_PDL=0 turns it off.
try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait  # noqa: F401
    _HAVE_GDC = True
except ImportError:  # a Triton without grid dependency control: PDL stays off, these are never traced
    _HAVE_GDC = False
    try:
        import triton

        @triton.jit
        def gdc_wait():  # noqa: D103
            pass

        @triton.jit
        def gdc_launch_dependents():  # noqa: D103
            pass
    except ImportError:  # no Triton at all: require_triton() says how to get it
        pass


try:
    import triton
    import triton.language as tl

    @triton.jit
    def prefetch_l2(ptrs):
        """Ask L2 for the 128-byte line of each pointer (PTX ``prefetch``; nothing comes back, nothing faults)."""
        tl.inline_asm_elementwise('prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;', '=r,l', [ptrs], dtype=tl.int32,
                                  is_pure=False, pack=1)
except ImportError:  # no Triton: require_triton() says how to get it
    pass


def require_triton() -> None:
    """Import triton or explain how to get it (the fast path's only extra dependency)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        raise BackendUnavailableError('the torch fast path needs Triton: pip install "pi0_trt_ros[torch]" '
                                      '(or pip install triton)') from None


def interpreted() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get('TRITON_INTERPRET', '0') not in ('', '0')


@functools.lru_cache(maxsize=None)
def _pdl_supported(device_index: int) -> bool:
    if os.environ.get('PI0_TRT_ROS_PDL', '1') == '0' or not _HAVE_GDC:
        return False
    import torch
    from triton.backends.nvidia.compiler import CUDAOptions

    if 'launch_pdl' not in {f.name for f in dataclasses.fields(CUDAOptions)}:
        return False
    return torch.cuda.get_device_capability(device_index) >= (9, 0)


def pdl(tensor: Any) -> bool:
    """Whether kernels on ``tensor``'s device launch with programmatic dependent launch (CUDA, sm90+)."""
    return bool(tensor.is_cuda) and not interpreted() and _pdl_supported(tensor.device.index or 0)


def prefetch(tensor: Any) -> bool:
    """Whether kernels on ``tensor``'s device may prefetch into L2 before waiting on the kernel before.

    What needs no earlier kernel (weights, the prefix's K/V): with PDL, unless PI0_TRT_ROS_PREFETCH=0.
    """
    return pdl(tensor) and os.environ.get('PI0_TRT_ROS_PREFETCH', '1') != '0'
