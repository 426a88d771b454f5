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

import os

from pi0_trt_ros.errors import BackendUnavailableError


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
