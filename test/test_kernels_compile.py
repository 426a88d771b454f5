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

"""The fast path's Triton kernels compile for Hopper (sm_90) on this machine, GPU or not.

The CPU interpreter checks what the kernels compute; this checks that the GPU compiler accepts
them (`sm90_compile.py`, in a process of its own: the interpreter tests set ``TRITON_INTERPRET``
for theirs), into a fresh Triton cache so that every case is really compiled.
"""

import importlib.util
import os
from pathlib import Path
import subprocess
import sys

import pytest

# Not imported here: the interpreter tests need Triton's first import in this process to see TRITON_INTERPRET.
if importlib.util.find_spec('torch') is None or importlib.util.find_spec('triton') is None:
    pytest.skip('needs torch and triton', allow_module_level=True)

HERE = Path(__file__).resolve().parent


def test_every_kernel_compiles_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['TRITON_CACHE_DIR'] = str(tmp_path / 'triton')
    done = subprocess.run([sys.executable, str(HERE / 'sm90_compile.py')], env=env, capture_output=True, text=True,
                          timeout=600)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert 'ok   skinny qkv + rope' in done.stdout, done.stdout  # the last case ran
