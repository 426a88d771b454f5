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

"""The torch fast path (`FastPi0Policy`) against the plain model, whole policy calls on CPU.

Triton's interpreter (``TRITON_INTERPRET=1``, set before triton is imported) runs the kernels:
in float32 the fast path must match LeRobot's own pi0 on a committed fixture as tightly as the
plain model does; in bf16 its error against the float32 model is bounded and compared with the
plain model's bf16 error. The GPU runs the same code compiled (`test_torch_cuda.py`).
"""

import copy
import os
from pathlib import Path

os.environ['TRITON_INTERPRET'] = '1'  # before triton is imported anywhere in this process

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip('torch')
pytest.importorskip('triton')

from pi0_trt_ros.checkpoint import cast_matmul_weights, load_checkpoint  # noqa: E402
from pi0_trt_ros.model.config import Pi0Config  # noqa: E402
from pi0_trt_ros.model.fast import EXPERT_GEMMS, FastPi0Policy  # noqa: E402
from pi0_trt_ros.model.pi0 import Pi0Model, Pi0Policy  # noqa: E402
from pi0_trt_ros.testing.tiny import randomize_  # noqa: E402

FIXTURE = Path(__file__).parent / 'fixtures' / 'lerobot_seed0'


def test_fp32_fast_path_matches_lerobot_and_leaves_the_plain_model_intact():
    f = dict(np.load(FIXTURE / 'fixture.npz'))
    frames = [torch.from_numpy(np.ascontiguousarray(f[f'image_u8.{i}'].transpose(0, 2, 3, 1))) for i in range(3)]
    inputs = (*frames, *(torch.from_numpy(f[k]) for k in ('state_raw', 'lang_tokens', 'lang_mask', 'noise')))
    plain = load_checkpoint(FIXTURE / 'policy', arch=FIXTURE / 'hf_configs.json').build_policy()
    with torch.no_grad():
        want = plain(*inputs)
        fast = FastPi0Policy(plain)  # re-lays out (shares) plain's weights
        got = fast(*inputs)
        again = plain(*inputs)
    lerobot_err = np.abs(got.numpy() - f['actions']).max()
    print(f'fast path fp32 vs LeRobot: max abs error {lerobot_err:.2e}; vs plain model '
          f'{float((got - want).abs().max()):.2e}')
    assert lerobot_err <= 1e-4
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, want, rtol=0, atol=0)  # the shared weights still hold the same values


def tiny_policy() -> Pi0Policy:
    """Build a tiny random Pi0 with 3 Euler steps (the interpreter's time goes by the number of kernel launches)."""
    model = Pi0Model(Pi0Config.tiny(num_inference_steps=3))
    randomize_(model, seed=3)
    g = torch.Generator().manual_seed(3)
    return Pi0Policy(model, 0.1 * torch.randn(6, generator=g), 0.5 + torch.rand(6, generator=g),
                     0.1 * torch.randn(6, generator=g), 0.5 + torch.rand(6, generator=g)).eval()


def random_inputs(seed: int) -> tuple:
    """One camera (resized by the policy), a right-padded 9-token instruction (padded prefix keys masked)."""
    g = torch.Generator().manual_seed(seed)
    frames = [torch.randint(0, 256, (1, 96, 128, 3), dtype=torch.uint8, generator=g)]
    tokens = torch.randint(3, 1000, (1, 48), generator=g)
    mask = torch.arange(48)[None] < 9
    return (*frames, torch.randn(1, 6, generator=g), tokens, mask, torch.randn(1, 50, 32, generator=g))


def test_bf16_fast_path_error_against_fp32_is_bounded_like_the_plain_bf16_model():
    inputs = random_inputs(4)
    fp32 = tiny_policy()
    plain = copy.deepcopy(fp32)
    cast_matmul_weights(plain, torch.bfloat16)
    with torch.no_grad():
        want = fp32(*inputs)
        plain_err = float((plain(*inputs) - want).abs().max())
        fast_err = {gemm: float((FastPi0Policy(plain, expert_gemm=gemm)(*inputs) - want).abs().max())
                    for gemm in EXPERT_GEMMS}  # fused skinny Triton GEMMs, and the cuBLAS fallback
    print(f'bf16 vs fp32 max abs error: fast path {fast_err}, plain model {plain_err:.2e}')
    for err in fast_err.values():
        assert err <= 5e-2
        assert err <= 1.25 * plain_err + 5e-3  # no worse than the previous path, up to rounding luck


def test_fp8_prefix_error_against_fp32_is_bounded_and_reported_beside_bf16():
    inputs = random_inputs(5)
    fp32 = tiny_policy()
    plain = copy.deepcopy(fp32)
    cast_matmul_weights(plain, torch.bfloat16)
    with torch.no_grad():
        want = fp32(*inputs)
        bf16 = FastPi0Policy(plain)(*inputs)
        fp8 = FastPi0Policy(plain, prefix_fp8=True)(*inputs)
    bf16_err, fp8_err = (float((got - want).abs().max()) for got in (bf16, fp8))
    print(f'max abs error vs fp32: fast path bf16 {bf16_err:.2e}, with the prefix in e4m3 {fp8_err:.2e}')
    assert not torch.equal(fp8, bf16)  # the e4m3 GEMMs ran
    assert fp8_err <= 3 * bf16_err + 2e-2


def test_batched_fast_path_gives_each_row_the_plain_models_chunk():
    batch = [random_inputs(seed) for seed in (6, 7, 8)]
    batch[1][-2][0, :30] = True  # another instruction length: each row its own padding and positions
    inputs = tuple(torch.cat(parts) for parts in zip(*batch))  # [3, ...] each
    plain = tiny_policy()
    with torch.no_grad():
        want = plain(*inputs)
        got = FastPi0Policy(plain)(*inputs)  # batch 3: the cuBLAS layers, batched RoPE and attention
        rows = [FastPi0Policy(plain)(*one) for one in batch]  # batch 1: the skinny Triton layers
    print(f'fast path batch 3 vs plain model: max abs error {float((got - want).abs().max()):.2e}')
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    for row, one in enumerate(rows):
        torch.testing.assert_close(got[row:row + 1], one, rtol=0, atol=1e-5)


def test_fp8_prefix_needs_a_bf16_model():
    with pytest.raises(Exception, match='prefix_fp8 needs the model in bf16'):
        FastPi0Policy(tiny_policy(), prefix_fp8=True)
