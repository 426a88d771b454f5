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

"""Map a safetensors file into numpy arrays without reading it: views into a copy-on-write mmap.

A full-size Pi0 checkpoint is 13 GB of float32. Reading it into fresh arrays (what
``safe_open(framework='numpy')`` does) touches every byte twice and took 18 s on an H200 host;
mapped, the bytes are read once, straight from the page cache, when the weights go to the GPU.
The format is 8 bytes of little-endian header length, a JSON header ``{name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {...}}`` and the tensor bytes after it. The views
are writable (copy-on-write: writes stay private, the file never changes). bfloat16 tensors,
which numpy cannot hold, are widened to float32 (a copy).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pi0_trt_ros.errors import CheckpointError

DTYPES = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'I64': '<i8', 'I32': '<i4', 'I16': '<i2', 'I8': 'i1',
          'U8': 'u1', 'BOOL': '?'}
MAX_HEADER_BYTES = 100 << 20  # the format's own bound


def map_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Return every tensor of ``path`` (name -> array, bf16 widened to float32) in file order."""
    if not path.is_file():
        raise CheckpointError(f'{path.name} missing in {path.parent}')
    size = path.stat().st_size
    with path.open('rb') as f:
        head = f.read(8)
        n = int.from_bytes(head, 'little') if len(head) == 8 else -1
        if not 0 < n <= min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(f'{path} is not a safetensors file (header length {n}, file {size} bytes)')
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f'{path}: unreadable safetensors header ({e})') from None
    data = np.memmap(path, dtype=np.uint8, mode='c', offset=8 + n) if size > 8 + n else np.zeros(0, np.uint8)
    out: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == '__metadata__':
            continue
        try:
            dtype, shape, (begin, end) = entry['dtype'], [int(d) for d in entry['shape']], entry['data_offsets']
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f'{path}: malformed header entry for {name!r}: {entry!r}') from None
        itemsize = 2 if dtype == 'BF16' else np.dtype(DTYPES[dtype]).itemsize if dtype in DTYPES else 0
        if not itemsize:
            raise CheckpointError(f'{path}: tensor {name!r} has dtype {dtype}, which a Pi0 checkpoint does not use')
        if not 0 <= begin <= end <= data.size or end - begin != math.prod(shape) * itemsize:
            raise CheckpointError(f'{path}: tensor {name!r} ({dtype} {shape}) has byte range [{begin}, {end}) '
                                  f'outside the file or of the wrong size (truncated download?)')
        raw = data[begin:end]
        if dtype == 'BF16':
            out[name] = (raw.view('<u2').astype(np.uint32) << 16).view(np.float32).reshape(shape)
        else:
            out[name] = raw.view(DTYPES[dtype]).reshape(shape)
    return out
