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

"""The fast path's Triton kernels under Triton's CPU interpreter, against the plain model's ops.

Each kernel runs at small sizes on CPU tensors (``TRITON_INTERPRET=1`` is set before triton is
imported) and is compared with the torch code of `pi0_trt_ros.model.layers` it replaces. The GPU
runs the same kernels compiled; `test_torch_cuda.py` checks them there through the runner.
"""

import os

os.environ['TRITON_INTERPRET'] = '1'  # before triton is imported anywhere in this process

import pytest  # noqa: E402

torch = pytest.importorskip('torch')
pytest.importorskip('triton')

from pi0_trt_ros.kernels import interpreted  # noqa: E402
from pi0_trt_ros.kernels.attention import attention, HIDDEN_GROUP  # noqa: E402
from pi0_trt_ros.kernels.fp8 import E4M3, E4M3_MAX, quantize_weight, scaled_linear  # noqa: E402
from pi0_trt_ros.kernels.geglu import geglu  # noqa: E402
from pi0_trt_ros.kernels.norm import add_norm  # noqa: E402
from pi0_trt_ros.kernels.rope import rope_qkv  # noqa: E402
from pi0_trt_ros.kernels.skinny import skinny_linear, skinny_qkv_rope  # noqa: E402
from pi0_trt_ros.model.layers import (  # noqa: E402
    apply_rope, gelu_tanh, GemmaRMSNorm, grouped_attention, LayerNorm, MASK_VALUE, rope_cos_sin, rope_inv_freq)

TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2}
DTYPES = [torch.float32, torch.bfloat16]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_runs_in_the_interpreter():
    assert interpreted()  # otherwise these tests would need a GPU and prove nothing here


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('layer_norm', [False, True], ids=['rms', 'layer'])
@pytest.mark.parametrize('with_delta', [False, True], ids=['norm', 'add_norm'])
def test_add_norm_matches_reference_norms(dtype, layer_norm, with_delta):
    g = gen(1)
    m, w = 37, 48  # rows not a multiple of the block, width not a power of two
    x = torch.randn(m, w, generator=g) * 3
    delta = torch.randn(m, w, generator=g).to(dtype)
    if layer_norm:
        norm = LayerNorm(w, eps=1e-6)
        norm.weight.data = 1 + 0.1 * torch.randn(w, generator=g)
        norm.bias.data = 0.05 * torch.randn(w, generator=g)
    else:
        norm = GemmaRMSNorm(w, eps=1e-6)
        norm.weight.data = 0.1 * torch.randn(w, generator=g)
    x_ref = x + delta.float() if with_delta else x.clone()
    want = norm(x_ref).to(dtype)
    out = torch.full((m, w), float('nan'), dtype=dtype)
    add_norm(x, delta if with_delta else None, norm.weight.data, norm.bias.data if layer_norm else None, 1e-6, out)
    torch.testing.assert_close(x, x_ref, rtol=0, atol=0)  # the residual stream is updated in place
    torch.testing.assert_close(out.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_rope_qkv_matches_apply_rope_and_fills_cache_rows(dtype):
    g = gen(2)
    s, h, n, d = 21, 4, 2, 16
    qkv = torch.randn(s, (h + 2 * n) * d, generator=g).to(dtype)
    positions = torch.arange(s, dtype=torch.float32)[None] + 5
    cos, sin = rope_cos_sin(positions, rope_inv_freq(d, 10000.0))  # [1, 1, S, D]
    q_ref = apply_rope(qkv[:, :h * d].reshape(1, s, h, d).transpose(1, 2), cos, sin)  # [1, H, S, D]
    k_ref = apply_rope(qkv[:, h * d:(h + n) * d].reshape(1, s, n, d).transpose(1, 2), cos, sin).to(dtype)
    v_ref = qkv[:, (h + n) * d:].reshape(s, n, d).transpose(0, 1)
    scale = d ** -0.5
    q = torch.full((s, h * d), float('nan'), dtype=dtype)
    k_cache = torch.full((n, s + 9, d), float('nan'), dtype=dtype)
    v_cache = torch.full_like(k_cache, float('nan'))
    rows = slice(4, 4 + s)  # the suffix rows of a cache, as the expert writes them
    rope_qkv(qkv, cos[0, 0, :, :d // 2].contiguous(), sin[0, 0, :, :d // 2].contiguous(), h, scale, q,
             k_cache[:, rows], v_cache[:, rows])
    want_q = (q_ref * scale).to(dtype)[0].transpose(0, 1).reshape(s, h * d)
    torch.testing.assert_close(q.float(), want_q.float(), rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(k_cache[:, rows].float(), k_ref[0].float(), rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(v_cache[:, rows], v_ref, rtol=0, atol=0)
    assert torch.isnan(k_cache[:, :4]).all() and torch.isnan(k_cache[:, 4 + s:]).all()  # other rows untouched


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_geglu_matches_gemma_mlp_activation(dtype):
    g = gen(3)
    m, f = 19, 300
    gate_up = (torch.randn(m, 2 * f, generator=g) * 3).to(dtype)
    want = gelu_tanh(gate_up[:, :f]) * gate_up[:, f:]
    out = torch.full((m, f), float('nan'), dtype=dtype)
    geglu(gate_up, out)
    torch.testing.assert_close(out.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype])


def quantized_like_fp8_module(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize rows of y float32 [M, C] to e4m3 with one scale per row, as `pi0_trt_ros.kernels.fp8` does."""
    scale = y.abs().amax(dim=1).clamp_min(1e-12) / E4M3_MAX
    return (y / scale[:, None]).to(E4M3), scale


def test_add_norm_writes_e4m3_rows_with_their_scales():
    g = gen(8)
    m, w = 13, 96
    x = torch.randn(m, w, generator=g) * 3
    delta = torch.randn(m, w, generator=g).to(torch.bfloat16)
    norm = GemmaRMSNorm(w, eps=1e-6)
    norm.weight.data = 0.1 * torch.randn(w, generator=g)
    want_x = x + delta.float()
    want_q, want_scale = quantized_like_fp8_module(norm(want_x))
    out, scale = torch.empty(m, w, dtype=E4M3), torch.full((m,), float('nan'))
    add_norm(x, delta, norm.weight.data, None, norm.eps, out, scale)
    torch.testing.assert_close(x, want_x, rtol=0, atol=0)
    torch.testing.assert_close(scale, want_scale, rtol=1e-6, atol=0)
    assert int((out.float() != want_q.float()).sum()) <= m * w // 100  # rounding ties of y / scale may flip
    torch.testing.assert_close(out.float() * scale[:, None], norm(want_x), rtol=0.07, atol=1e-3)


def test_geglu_writes_e4m3_rows_with_their_scales():
    g = gen(9)
    m, f = 19, 300
    gate_up = (torch.randn(m, 2 * f, generator=g) * 3).to(torch.bfloat16)
    want = geglu(gate_up, torch.empty(m, f, dtype=torch.bfloat16)).float()  # the bf16 kernel's rounding
    want_q, want_scale = quantized_like_fp8_module(want)
    out, scale = torch.empty(m, f, dtype=E4M3), torch.full((m,), float('nan'))
    geglu(gate_up, out, scale)
    torch.testing.assert_close(scale, want_scale, rtol=1e-6, atol=0)
    assert int((out.float() != want_q.float()).sum()) <= m * f // 100
    torch.testing.assert_close(out.float() * scale[:, None], want, rtol=0.07, atol=1e-3)


def test_scaled_linear_of_quantized_operands_approximates_the_bf16_product():
    g = gen(10)
    a, w = torch.randn(21, 64, generator=g), torch.randn(48, 64, generator=g) * 0.05
    a_q, a_scale = quantized_like_fp8_module(a)
    w_q, w_scale = quantize_weight(w)
    torch.testing.assert_close(w_q.float() * w_scale[:, None], w, rtol=0.07, atol=1e-4)
    got = scaled_linear(a_q, a_scale, w_q, w_scale)
    assert got.dtype == torch.bfloat16
    want = a @ w.T
    assert float((got.float() - want).abs().max()) <= 0.1 * float(want.abs().max())


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_skinny_linear_with_rms_norm_prologue_matches_norm_then_linear(dtype):
    g = gen(7)
    m, k, n = 11, 48, 40  # rows, width and columns not multiples of the tiles
    x = torch.randn(m, k, generator=g) * 3  # float32 residual stream
    norm = GemmaRMSNorm(k, eps=1e-6)
    norm.weight.data = 0.1 * torch.randn(k, generator=g)
    w = (torch.randn(n, k, generator=g) / 7).to(dtype)
    want = torch.nn.functional.linear(norm(x).to(dtype), w)
    out = torch.full((m, n), float('nan'), dtype=dtype)
    skinny_linear(x, w, out, norm_weight=norm.weight.data, eps=1e-6)
    torch.testing.assert_close(out.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_skinny_linear_with_geglu_epilogue_matches_gemma_mlp_up_to_down(dtype):
    g = gen(8)
    m, k, f = 11, 48, 40
    x = torch.randn(m, k, generator=g) * 3
    norm = GemmaRMSNorm(k, eps=1e-6)
    norm.weight.data = 0.1 * torch.randn(k, generator=g)
    gate_up = (torch.randn(2 * f, k, generator=g) / 7).to(dtype)  # [gate; up] as the fused weight stacks them
    h = norm(x).to(dtype)
    want = gelu_tanh(torch.nn.functional.linear(h, gate_up[:f])) * torch.nn.functional.linear(h, gate_up[f:])
    out = torch.full((m, f), float('nan'), dtype=dtype)
    skinny_linear(x, gate_up, out, norm_weight=norm.weight.data, eps=1e-6, geglu=True)
    torch.testing.assert_close(out.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_skinny_linear_residual_epilogue_adds_split_k_partials_into_the_stream(dtype):
    g = gen(9)
    m, k, n = 13, 200, 24  # K in two splits of whole tiles, the second one short
    a = torch.randn(m, k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) / 14).to(dtype)
    x = torch.randn(m, n, generator=g)
    want = x + torch.nn.functional.linear(a, w).float()
    skinny_linear(a, w, x, residual=True)
    torch.testing.assert_close(x, want, rtol=TOL[dtype], atol=TOL[dtype])
    plain = torch.full((m, n), float('nan'), dtype=dtype)
    skinny_linear(a, w, plain)  # no fused op: a plain GEMM
    torch.testing.assert_close(plain.float(), torch.nn.functional.linear(a, w).float(), rtol=TOL[dtype],
                               atol=TOL[dtype])


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('h, n, d', [(4, 1, 16), (8, 2, 32)], ids=['one_block', 'blocks_past_the_last_head'])
def test_skinny_qkv_rope_is_the_qkv_gemm_then_rope_qkv(dtype, h, n, d):
    g = gen(10)
    s, k = 21, 48
    a = torch.randn(s, k, generator=g).to(dtype)
    w = (torch.randn((h + 2 * n) * d, k, generator=g) / 7).to(dtype)
    positions = torch.arange(s, dtype=torch.float32)[None] + 5
    cos, sin = (t[0, 0, :, :d // 2].contiguous() for t in rope_cos_sin(positions, rope_inv_freq(d, 10000.0)))
    scale = d ** -0.5
    rows = slice(4, 4 + s)  # the suffix rows of a cache, as the expert writes them
    outputs = []
    for fused in (False, True):
        q = torch.full((s, h * d), float('nan'), dtype=dtype)
        k_cache = torch.full((n, s + 9, d), float('nan'), dtype=dtype)
        v_cache = torch.full_like(k_cache, float('nan'))
        if fused:
            skinny_qkv_rope(a, w, cos, sin, h, scale, q, k_cache[:, rows], v_cache[:, rows])
        else:
            rope_qkv(torch.nn.functional.linear(a, w), cos, sin, h, scale, q, k_cache[:, rows], v_cache[:, rows])
        outputs.append((q, k_cache, v_cache))
    for want, got in zip(*outputs):  # q, then the caches: rows outside the suffix stay untouched (nan)
        torch.testing.assert_close(got.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype], equal_nan=True)
    assert torch.isnan(outputs[1][1][:, :4]).all() and torch.isnan(outputs[1][2][:, 4 + s:]).all()


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_geglu_then_split_k_down_is_gemma_mlp_down_added_into_the_stream(dtype):
    g = gen(10)
    m, f, n = 13, 200, 24  # the down projection: K = F in two splits of whole tiles, the second one short
    gate_up = (torch.randn(m, 2 * f, generator=g) * 3).to(dtype)  # the gate/up GEMM's output [M, 2F]
    w = (torch.randn(n, f, generator=g) / 14).to(dtype)
    x = torch.randn(m, n, generator=g)
    hidden = gelu_tanh(gate_up[:, :f]) * gate_up[:, f:]  # rounded as GemmaMLP rounds it
    want = x + torch.nn.functional.linear(hidden.float(), w.float())  # accumulated in float32, as the kernel does
    skinny_linear(geglu(gate_up, torch.empty(m, f, dtype=dtype)), w, x, residual=True)  # the 'mixed' MLP
    # The interpreter casts float32 -> bf16 by truncation (the GPU rounds to nearest): each of the 200 rounded
    # products may be off by one bf16 step, so the bound is relative to the output's scale.
    torch.testing.assert_close(x, want, rtol=TOL[dtype], atol=TOL[dtype] * float(want.abs().max()))


def test_skinny_linear_refuses_shapes_it_cannot_fuse():
    w = torch.zeros(8, 16)
    with pytest.raises(ValueError, match='at most 64 rows'):
        skinny_linear(torch.zeros(65, 16), w, torch.zeros(65, 8))
    with pytest.raises(ValueError, match='float32 residual'):
        skinny_linear(torch.zeros(4, 16), w, torch.zeros(4, 8, dtype=torch.bfloat16), residual=True)


def suffix_groups(p: int, valid: int, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pi0's suffix mask as groups and as the plain model's boolean visibility [S, P + S]."""
    pad = torch.arange(p) < valid
    cum = torch.tensor([1] + [2] * (s - 1), dtype=torch.int32)
    key_group = torch.cat([torch.where(pad, 0, HIDDEN_GROUP).to(torch.int32), cum])
    visible = torch.cat([pad[None].expand(s, p), cum[None, :] <= cum[:, None]], dim=1)
    return cum, key_group, visible


@pytest.mark.parametrize('dtype,chunk,d,block_dv', [
    (torch.float32, None, 16, None), (torch.bfloat16, None, 16, None), (torch.float32, 32, 16, None),
    (torch.bfloat16, 32, 16, None),
    (torch.float32, 32, 128, None),  # merged in two head-dim slices
    (torch.bfloat16, None, 24, 8),  # value slices, no merge; the last slice half outside the head dim
    (torch.float32, 32, 16, 8)],  # value slices, each chunk's partial written slice by slice
    ids=['one_pass-fp32', 'one_pass-bf16', 'split_kv-fp32', 'split_kv-bf16', 'split_kv-d128', 'one_pass-v_slices',
         'split_kv-v_slices'])
def test_attention_matches_grouped_attention_on_the_suffix_mask(dtype, chunk, d, block_dv):
    g = gen(4)
    p, valid, s, h, n = 70, 53, 11, 4, 2
    q = torch.randn(1, h, s, d, generator=g)
    k = torch.randn(1, n, p + s, d, generator=g).to(dtype)
    v = torch.randn(1, n, p + s, d, generator=g).to(dtype)
    query_group, key_group, visible = suffix_groups(p, valid, s)
    mask = torch.where(visible, 0.0, MASK_VALUE)[None, None]
    scale = d ** -0.5
    want = grouped_attention(q, k, v, mask, scale)[0]  # [S, H*D]
    q_rows = (q[0] * scale).to(dtype).transpose(0, 1).reshape(s, h * d)
    out = torch.full((s, h * d), float('nan'), dtype=dtype)
    attention(q_rows, k[0], v[0], query_group, key_group, out, block_m=16, block_n=16, chunk=chunk, block_dv=block_dv)
    torch.testing.assert_close(out.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize('chunk', [None, 32], ids=['one_pass', 'split_kv'])
def test_batched_attention_gives_each_element_its_batch_1_rows(chunk):
    g = gen(11)
    batch, p, s, h, n, d = 3, 70, 11, 4, 2, 16
    q = torch.randn(batch * s, h * d, generator=g)
    k, v = torch.randn(batch, n, p + s, d, generator=g), torch.randn(batch, n, p + s, d, generator=g)
    groups = [suffix_groups(p, valid, s)[:2] for valid in (53, 70, 1)]  # each element its own padding
    query_group = torch.cat([qg for qg, _ in groups])
    key_group = torch.cat([kg for _, kg in groups])
    out = torch.full_like(q, float('nan'))
    attention(q, k, v, query_group, key_group, out, block_m=16, block_n=16, chunk=chunk)
    for b, (qg, kg) in enumerate(groups):
        one = torch.full((s, h * d), float('nan'))
        attention(q[b * s:(b + 1) * s], k[b], v[b], qg, kg, one, block_m=16, block_n=16, chunk=chunk)
        torch.testing.assert_close(out[b * s:(b + 1) * s], one, rtol=0, atol=0)


def test_batched_rope_qkv_writes_each_element_into_its_cache():
    g = gen(12)
    batch, s, h, n, d = 3, 7, 4, 1, 16
    qkv = torch.randn(batch * s, (h + 2 * n) * d, generator=g)
    positions = torch.arange(batch * s, dtype=torch.float32)[None] % 5
    cos, sin = (t[0, 0, :, :d // 2].contiguous() for t in rope_cos_sin(positions, rope_inv_freq(d, 10000.0)))
    rows = slice(2, 2 + s)  # the suffix rows of each element's cache
    q = torch.full((batch * s, h * d), float('nan'))
    k_cache = torch.full((batch, n, s + 5, d), float('nan'))
    v_cache = torch.full_like(k_cache, float('nan'))
    rope_qkv(qkv, cos, sin, h, 0.25, q, k_cache[:, :, rows], v_cache[:, :, rows])
    for b in range(batch):
        at = slice(b * s, (b + 1) * s)
        q_one = torch.full((s, h * d), float('nan'))
        k_one = torch.full((n, s + 5, d), float('nan'))
        v_one = torch.full_like(k_one, float('nan'))
        rope_qkv(qkv[at], cos[at], sin[at], h, 0.25, q_one, k_one[:, rows], v_one[:, rows])
        torch.testing.assert_close(q[at], q_one, rtol=0, atol=0)
        torch.testing.assert_close(k_cache[b], k_one, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(v_cache[b], v_one, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize('chunk', [None, 16], ids=['one_pass', 'split_kv'])
def test_attention_fully_masked_rows_attend_uniformly_like_the_additive_mask(chunk):
    g = gen(5)
    p, valid, h, d = 40, 29, 2, 16
    pad = torch.arange(p) < valid
    groups = torch.where(pad, 0, HIDDEN_GROUP).to(torch.int32)
    query_group = torch.where(pad, 0, -1).to(torch.int32)  # padded queries see no key at all
    q = torch.randn(1, h, p, d, generator=g)
    k, v = torch.randn(1, 1, p, d, generator=g), torch.randn(1, 1, p, d, generator=g)
    visible = pad[None, :] & pad[:, None]  # the prefix mask of `Pi0Model.fill_cache`
    want = grouped_attention(q, k, v, torch.where(visible, 0.0, MASK_VALUE)[None, None], 1.0)[0]
    out = torch.full((p, h * d), float('nan'))
    attention(q[0].transpose(0, 1).reshape(p, h * d), k[0], v[0], query_group, groups, out, block_m=32,
              block_n=16, chunk=chunk)
    torch.testing.assert_close(out, want, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(out[valid:, :d], v[0, 0].mean(0).expand(p - valid, d), rtol=2e-5, atol=2e-5)


def test_attention_without_mask_is_plain_softmax_attention():
    g = gen(6)
    s, h, d = 33, 2, 24  # head dim not a power of two
    q, k, v = (torch.randn(h, s, d, generator=g) for _ in range(3))
    want = torch.softmax(q @ k.transpose(1, 2), -1) @ v  # [H, S, D]
    out = torch.full((s, h * d), float('nan'))
    attention(q.transpose(0, 1).reshape(s, h * d), k, v, None, None, out, block_m=16, block_n=16)
    torch.testing.assert_close(out, want.transpose(0, 1).reshape(s, h * d), rtol=2e-5, atol=2e-5)
