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

"""Engine builds with the real TensorRT-RTX builder (CPU-only AOT) and the plan checks of load_engine.

The test graph is small but has every op DESIGN §4 lists as checked: a uint8 HWC input cast
to float, bilinear Resize + Pad, an fp16 patch Conv, a Gather embedding, an fp32 RMSNorm,
RoPE-style mul/add and a masked MQA softmax with mask value -2.3819763e38, strongly typed.
"""

import dataclasses
import hashlib
import importlib.util
import json
import logging
from pathlib import Path
import re
import subprocess
import sys

import numpy as np
import pytest

trt = pytest.importorskip('tensorrt_rtx_bindings')
onnx = pytest.importorskip('onnx')

from pi0_trt_ros.cuda import device_count, GpuIdentity  # noqa: E402
from pi0_trt_ros.errors import BackendUnavailableError, EngineError, RunnerError  # noqa: E402
from pi0_trt_ros.export import engine as eng  # noqa: E402
from pi0_trt_ros.manifest import EXPORT_METADATA, PolicyIO, read_manifest  # noqa: E402
from pi0_trt_ros.runners.tensorrt import TensorRTRunner  # noqa: E402

IO = PolicyIO(camera_keys=('cam_high',), camera_hw=((12, 16),), state_dim=3, action_dim=3, chunk_size=4,
              max_action_dim=8, token_len=6, n_action_steps=2)
D, VOCAB, HEADS, HEAD_DIM = 8, 16, 2, 4  # model width, vocabulary, query heads (1 KV head), head size
MASK_VALUE = -2.3819763e38
H100 = GpuIdentity(0, 'NVIDIA H100 80GB HBM3', (9, 0), 'GPU-00000000-0000-0000-0000-000000000000', 80 << 30)
RTX4090 = GpuIdentity(0, 'NVIDIA GeForce RTX 4090', (8, 9), 'GPU-11111111-1111-1111-1111-111111111111', 24 << 30)


def tiny_policy_graph(io: PolicyIO, transpose_uint8: bool = False) -> 'onnx.ModelProto':
    """Make a strongly typed opset-18 graph with the policy's I/O table and the checked op mix.

    ``transpose_uint8`` transposes the raw uint8 frame before the cast, which TensorRT rejects.
    """
    from onnx import helper, numpy_helper, TensorProto

    (h, w), = io.camera_hw
    seq = 4 + io.token_len  # 4 image patches + tokens
    rng = np.random.default_rng(0)
    f16 = np.float16

    def const(name: str, value: np.ndarray) -> 'onnx.TensorProto':
        return numpy_helper.from_array(np.asarray(value), name)

    def i64(*values: int) -> np.ndarray:
        return np.array(values, np.int64)

    angles = np.arange(seq)[:, None] * np.concatenate([np.arange(D // 2)] * 2)[None] / D
    inits = [
        const('resize_sizes', i64(1, 3, 6, 8)), const('to_unit', np.array(2 / 255, np.float32)),
        const('one', np.array(1.0, np.float32)), const('pads', i64(0, 0, 1, 0, 0, 0, 1, 0)),
        const('pad_value', np.array(-1.0, np.float32)),
        const('patch_w', (rng.standard_normal((D, 3, 4, 4)) * 0.1).astype(f16)), const('patch_b', np.zeros(D, f16)),
        const('patch_shape', i64(1, D, 4)), const('embed', rng.standard_normal((VOCAB, D)).astype(f16)),
        const('last', i64(-1)), const('eps', np.array(1e-6, np.float32)),
        const('norm_scale', (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)),
        const('lo', i64(0)), const('mid', i64(D // 2)), const('hi', i64(D)),
        const('cos', np.cos(angles).astype(np.float32)), const('sin', np.sin(angles).astype(np.float32)),
        const('wq', (rng.standard_normal((D, HEADS * HEAD_DIM)) * 0.3).astype(f16)),
        const('wk', (rng.standard_normal((D, HEAD_DIM)) * 0.3).astype(f16)),
        const('wv', (rng.standard_normal((D, HEAD_DIM)) * 0.3).astype(f16)),
        const('q_shape', i64(1, seq, HEADS, HEAD_DIM)), const('axis1', i64(1)),
        const('attn_scale', np.array(HEAD_DIM ** -0.5, np.float32)), const('image_valid', np.ones((1, 4), bool)),
        const('key_shape', i64(1, 1, 1, seq)), const('mask_value', np.array(MASK_VALUE, np.float32)),
        const('ctx_shape', i64(1, seq, HEADS * HEAD_DIM)),
        const('state_proj', (rng.standard_normal((io.state_dim, io.max_action_dim)) * 0.1).astype(np.float32)),
        const('zero', i64(0)), const('action_dim', i64(io.action_dim)), const('axis2', i64(2)),
        const('action_std', np.full(io.action_dim, 2.0, np.float32)),
        const('action_mean', np.full(io.action_dim, 0.5, np.float32)),
    ]
    n = helper.make_node
    if transpose_uint8:
        frame = [n('Transpose', ['image_0'], ['img_chw_u8'], perm=[0, 3, 1, 2]),
                 n('Cast', ['img_chw_u8'], ['img_chw'], to=TensorProto.FLOAT)]
    else:
        frame = [n('Cast', ['image_0'], ['img_f'], to=TensorProto.FLOAT),
                 n('Transpose', ['img_f'], ['img_chw'], perm=[0, 3, 1, 2])]
    nodes = frame + [
        # resize-with-pad to 8x8 and [-1, 1]: [1, 3, 12, 16] -> [1, 3, 6, 8] -> [1, 3, 8, 8]
        n('Resize', ['img_chw', '', '', 'resize_sizes'], ['img_r'], mode='linear',
          coordinate_transformation_mode='pytorch_half_pixel'),
        n('Mul', ['img_r', 'to_unit'], ['img_s']), n('Sub', ['img_s', 'one'], ['img_n']),
        n('Pad', ['img_n', 'pads', 'pad_value'], ['img_p'], mode='constant'),
        # fp16 patch embedding: [1, 3, 8, 8] -> [1, D, 2, 2] -> [1, 4, D]
        n('Cast', ['img_p'], ['img_h'], to=TensorProto.FLOAT16),
        n('Conv', ['img_h', 'patch_w', 'patch_b'], ['patches'], kernel_shape=[4, 4], strides=[4, 4]),
        n('Reshape', ['patches', 'patch_shape'], ['patch_seq']),
        n('Transpose', ['patch_seq'], ['img_tok'], perm=[0, 2, 1]),
        # token embedding and prefix: [1, L, D]; [1, 4 + L, D]
        n('Gather', ['embed', 'tokens'], ['tok_emb'], axis=0), n('Concat', ['img_tok', 'tok_emb'], ['x'], axis=1),
        # fp32 RMSNorm
        n('Cast', ['x'], ['xf'], to=TensorProto.FLOAT), n('Mul', ['xf', 'xf'], ['sq']),
        n('ReduceMean', ['sq', 'last'], ['ms'], keepdims=1), n('Add', ['ms', 'eps'], ['ms_eps']),
        n('Sqrt', ['ms_eps'], ['rms']), n('Div', ['xf', 'rms'], ['xn0']), n('Mul', ['xn0', 'norm_scale'], ['xn']),
        # fp32 RoPE: x * cos + rotate_half(x) * sin
        n('Slice', ['xn', 'lo', 'mid', 'last'], ['x1']), n('Slice', ['xn', 'mid', 'hi', 'last'], ['x2']),
        n('Neg', ['x2'], ['nx2']), n('Concat', ['nx2', 'x1'], ['rot'], axis=-1),
        n('Mul', ['xn', 'cos'], ['xc']), n('Mul', ['rot', 'sin'], ['rs']), n('Add', ['xc', 'rs'], ['xr']),
        # fp16 projections; MQA: q [1, HEADS, S, Dh], k and v [1, 1, S, Dh]
        n('Cast', ['xr'], ['xh'], to=TensorProto.FLOAT16),
        n('MatMul', ['xh', 'wq'], ['q0']), n('Reshape', ['q0', 'q_shape'], ['q1']),
        n('Transpose', ['q1'], ['q'], perm=[0, 2, 1, 3]),
        n('MatMul', ['xh', 'wk'], ['k0']), n('Unsqueeze', ['k0', 'axis1'], ['k']),
        n('MatMul', ['xh', 'wv'], ['v0']), n('Unsqueeze', ['v0', 'axis1'], ['v']),
        n('Transpose', ['k'], ['kt'], perm=[0, 1, 3, 2]), n('MatMul', ['q', 'kt'], ['scores_h']),
        # fp32 masked softmax over keys: [1, HEADS, S, S]
        n('Cast', ['scores_h'], ['scores_f'], to=TensorProto.FLOAT), n('Mul', ['scores_f', 'attn_scale'], ['scores']),
        n('Concat', ['image_valid', 'token_mask'], ['key_valid0'], axis=1),
        n('Reshape', ['key_valid0', 'key_shape'], ['key_valid']),
        n('Where', ['key_valid', 'scores', 'mask_value'], ['masked']), n('Softmax', ['masked'], ['probs'], axis=-1),
        n('Cast', ['probs'], ['probs_h'], to=TensorProto.FLOAT16), n('MatMul', ['probs_h', 'v'], ['ctx0']),
        n('Transpose', ['ctx0'], ['ctx1'], perm=[0, 2, 1, 3]), n('Reshape', ['ctx1', 'ctx_shape'], ['ctx']),
        # action head: noise + pooled context + projected state, sliced to action_dim, unnormalized
        n('Cast', ['ctx'], ['ctx_f'], to=TensorProto.FLOAT),
        n('ReduceMean', ['ctx_f', 'axis1'], ['pooled'], keepdims=1),
        n('MatMul', ['state', 'state_proj'], ['st0']), n('Unsqueeze', ['st0', 'axis1'], ['st']),
        n('Add', ['noise', 'pooled'], ['y0']), n('Add', ['y0', 'st'], ['y']),
        n('Slice', ['y', 'zero', 'action_dim', 'axis2'], ['a_norm']),
        n('Mul', ['a_norm', 'action_std'], ['a_s']), n('Add', ['a_s', 'action_mean'], ['actions']),
    ]
    onnx_types = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.float32): TensorProto.FLOAT,
                  np.dtype(np.int64): TensorProto.INT64, np.dtype(np.bool_): TensorProto.BOOL}
    inputs = [helper.make_tensor_value_info(name, onnx_types[dtype], list(shape))
              for name, (shape, dtype) in io.input_specs().items()]
    outputs = [helper.make_tensor_value_info(name, onnx_types[dtype], list(shape))
               for name, (shape, dtype) in io.output_specs().items()]
    graph = helper.make_graph(nodes, 'tiny_policy', inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    onnx.checker.check_model(model, full_check=True)
    return model


def write_export(out: Path, model: 'onnx.ModelProto', io: PolicyIO = IO, external_data: bool = False) -> Path:
    """Write ``model`` and a format-1 ``pi0_export.json`` describing it, as `pi0-trt export` does."""
    out.mkdir(parents=True, exist_ok=True)
    graph = out / 'policy_fp16.onnx'
    onnx.save_model(model, str(graph), save_as_external_data=external_data, all_tensors_to_one_file=True,
                    location=graph.name + '.data', size_threshold=0)
    files = [graph] + ([graph.with_name(graph.name + '.data')] if external_data else [])
    sha = hashlib.sha256(b''.join(f.read_bytes() for f in files)).hexdigest()
    meta = {'format_version': 1, 'io': io.to_json(), 'precision': 'fp16', 'graph': graph.name,
            'onnx_sha256': sha, 'engines': {}}
    (out / EXPORT_METADATA).write_text(json.dumps(meta, indent=1))
    return out


@pytest.fixture(scope='module')
def built_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a TensorRT-RTX plan on this (CPU) machine into a fresh export dir."""
    out = write_export(tmp_path_factory.mktemp('built'), tiny_policy_graph(IO))
    eng.build_engines(out, runtime='tensorrt_rtx')
    return out


def copy_export(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def edit_record(engine_dir: Path, **changes: object) -> None:
    meta = read_manifest(engine_dir)
    meta['engines']['tensorrt_rtx'].update(changes)
    (engine_dir / EXPORT_METADATA).write_text(json.dumps(meta))


# -- build -------------------------------------------------------------------------------------
@pytest.mark.parametrize('external_data', [False, True], ids=['inline', 'external_data'])
def test_build_engines_with_tensorrt_rtx_builds_the_checked_ops_and_records_the_plan(
        tmp_path: Path, external_data: bool, caplog: pytest.LogCaptureFixture) -> None:
    out = write_export(tmp_path / 'export', tiny_policy_graph(IO), external_data=external_data)
    before = read_manifest(out)
    with caplog.at_level(logging.INFO, logger='pi0_trt_ros.export.engine'):
        plan = eng.build_engines(out, runtime='tensorrt_rtx', workspace_gib=1.0)

    assert plan == out / 'policy_fp16.tensorrt_rtx.plan'
    assert plan.stat().st_size > 10_000
    meta = read_manifest(out)
    record = meta['engines']['tensorrt_rtx']
    assert record['plan'] == plan.name
    assert record['tensorrt_version'] == trt.__version__
    assert record['onnx_sha256'] == before['onnx_sha256']
    assert record['plan_bytes'] == plan.stat().st_size
    assert record['plan_sha256'] == hashlib.sha256(plan.read_bytes()).hexdigest()
    assert record['build_seconds'] > 0
    if device_count() == 0:
        assert record['gpu'] == 'none (CPU build)'
        assert record['compute_capability'] is None
    assert record['targets'] == list(eng.RTX_DEFAULT_TARGETS)
    assert {k: v for k, v in meta.items() if k != 'engines'} == {k: v for k, v in before.items() if k != 'engines'}
    assert not (out / 'timing.cache').exists()  # a no-op in TensorRT-RTX, so not written
    assert any('built policy_fp16.onnx (fp16) in' in r.getMessage() for r in caplog.records)


def test_build_engines_records_explicit_compute_capability_targets(tmp_path: Path) -> None:
    out = write_export(tmp_path, tiny_policy_graph(IO))
    eng.build_engines(out, runtime='tensorrt_rtx', compute_capabilities=['8.6', 'SM89'])
    assert read_manifest(out)['engines']['tensorrt_rtx']['targets'] == ['8.6', '8.9']


def test_build_engines_refuses_an_unknown_compute_capability(tmp_path: Path) -> None:
    out = write_export(tmp_path, tiny_policy_graph(IO))
    with pytest.raises(EngineError, match=r"unknown compute capability '9\.0': use one of CURRENT, SM75"):
        eng.build_engines(out, runtime='tensorrt_rtx', compute_capabilities=['9.0'])


def test_a_uint8_transpose_raises_engine_error_listing_the_parser_error(tmp_path: Path) -> None:
    out = write_export(tmp_path, tiny_policy_graph(IO, transpose_uint8=True))
    with pytest.raises(EngineError, match=r'(?s)ONNX parser rejected .*policy_fp16\.onnx with 1 error\(s\):\n'
                                          r'  \[1\] .*operator: Transpose.*type UInt8') as info:
        eng.build_engines(out, runtime='tensorrt_rtx')
    assert 'img_chw_u8' in str(info.value)
    assert read_manifest(out)['engines'] == {}
    assert not (out / 'policy_fp16.tensorrt_rtx.plan').exists()


def test_a_graph_that_differs_from_the_policy_io_is_refused_naming_the_tensor(tmp_path: Path) -> None:
    wider_state = dataclasses.replace(IO, state_dim=4)
    out = write_export(tmp_path, tiny_policy_graph(IO), io=wider_state)
    with pytest.raises(EngineError, match=r"ONNX graph policy_fp16\.onnx 'state': expected input \[1, 4\] float32, "
                                          r'found input \[1, 3\] float32'):
        eng.build_engines(out, runtime='tensorrt_rtx')


def test_check_tensors_names_a_missing_and_an_unexpected_tensor() -> None:
    found = {name: ('input', shape, dtype) for name, (shape, dtype) in IO.input_specs().items()}
    with pytest.raises(EngineError, match=r"engine x has no output 'actions' \(\[1, 4, 3\] float32\)"):
        eng.check_tensors(IO, found, 'engine x')
    found['actions'] = ('output', (1, 4, 3), np.dtype(np.float32))
    eng.check_tensors(IO, found, 'engine x')
    found['kv_cache'] = ('output', (1, 2), np.dtype(np.float16))
    with pytest.raises(EngineError, match=r"engine x has unexpected tensors \['kv_cache'\]"):
        eng.check_tensors(IO, found, 'engine x')


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None, reason='TensorRT is installed here')
def test_tensorrt_runtime_without_the_module_says_what_to_install(tmp_path: Path) -> None:
    out = write_export(tmp_path, tiny_policy_graph(IO))
    with pytest.raises(BackendUnavailableError, match=r'the tensorrt backend needs the tensorrt module .*: '
                                                      r'pip install'):
        eng.build_engines(out, runtime='tensorrt')


# -- load checks -------------------------------------------------------------------------------
def test_load_engine_refuses_a_plan_from_another_tensorrt_version(built_dir: Path, tmp_path: Path) -> None:
    out = copy_export(built_dir, tmp_path / 'e')
    edit_record(out, tensorrt_version='1.0.0.1')
    with pytest.raises(EngineError, match=r'policy_fp16\.tensorrt_rtx\.plan was built with tensorrt_rtx 1\.0\.0\.1 but '
                                          rf'tensorrt_rtx {trt.__version__} is installed: '
                                          rf'rebuild it: pi0-trt build {re.escape(str(out))} --runtime tensorrt_rtx'):
        eng.load_engine(out, 'tensorrt_rtx')


def test_load_engine_refuses_a_plan_built_from_another_onnx_graph(built_dir: Path, tmp_path: Path) -> None:
    out = copy_export(built_dir, tmp_path / 'e')
    meta = read_manifest(out)
    meta['onnx_sha256'] = 'f' * 64  # re-exported since the build
    (out / EXPORT_METADATA).write_text(json.dumps(meta))
    with pytest.raises(EngineError, match=r'was built from ONNX sha256 [0-9a-f]{12}\.\.\. but the export now has '
                                          r'ffffffffffff\.\.\. \(re-exported since\): '
                                          rf'rebuild it: pi0-trt build {re.escape(str(out))} --runtime tensorrt_rtx'):
        eng.load_engine(out, 'tensorrt_rtx')


@pytest.mark.skipif(device_count() > 0, reason='a CUDA device is visible')
def test_load_engine_without_a_gpu_says_it_needs_one(built_dir: Path) -> None:
    with pytest.raises(EngineError, match=r'needs a CUDA GPU and none is visible here'):
        eng.load_engine(built_dir, 'tensorrt_rtx')


def test_load_engine_names_the_build_command_when_no_plan_is_recorded(tmp_path: Path) -> None:
    out = write_export(tmp_path, tiny_policy_graph(IO))
    with pytest.raises(EngineError, match=rf'{re.escape(str(out))} has no tensorrt_rtx engine yet: build it with '
                                          rf'`pi0-trt build {re.escape(str(out))} --runtime tensorrt_rtx`'):
        eng.load_engine(out, 'tensorrt_rtx')


def test_load_engine_refuses_a_corrupted_plan_before_deserializing_it(built_dir: Path, tmp_path: Path) -> None:
    out = copy_export(built_dir, tmp_path / 'e')
    plan = out / 'policy_fp16.tensorrt_rtx.plan'
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    plan.write_bytes(bytes(data))
    with pytest.raises(EngineError, match=r'^policy_fp16\.tensorrt_rtx\.plan does not have the sha256 recorded when '
                                          r'it was built \([0-9a-f]{12}\.\.\.\): the plan is corrupted or was '
                                          rf'replaced: rebuild it: pi0-trt build {re.escape(str(out))} '
                                          r'--runtime tensorrt_rtx$'):
        eng.load_engine(out, 'tensorrt_rtx')
    plan.write_bytes(b'')  # truncated to nothing
    with pytest.raises(EngineError, match=r'the plan is corrupted or was replaced'):
        eng.load_engine(out, 'tensorrt_rtx')


def test_load_engine_refuses_a_recorded_plan_that_is_missing(built_dir: Path, tmp_path: Path) -> None:
    out = copy_export(built_dir, tmp_path / 'e')
    (out / 'policy_fp16.tensorrt_rtx.plan').unlink()
    with pytest.raises(EngineError, match=r'policy_fp16\.tensorrt_rtx\.plan is recorded in pi0_export\.json '
                                          r'but missing: rebuild it'):
        eng.load_engine(out, 'tensorrt_rtx')


def test_rtx_plan_check_accepts_a_target_gpu_and_refuses_hopper(built_dir: Path) -> None:
    meta = read_manifest(built_dir)
    record = meta['engines']['tensorrt_rtx']
    args = (built_dir, 'tensorrt_rtx', trt.__version__, meta['onnx_sha256'])
    eng.check_engine_record(record, *args, RTX4090)
    with pytest.raises(EngineError, match=r'targets compute capability 8\.0, 8\.6, 8\.9, 12\.0, 12\.1 but '
                                          r'NVIDIA H100 80GB HBM3 is sm 9\.0 \(TensorRT-RTX does not run on Hopper: '
                                          r'use --runtime tensorrt\): rebuild it'):
        eng.check_engine_record(record, *args, H100)


def test_tensorrt_plan_check_refuses_another_gpu_model(built_dir: Path) -> None:
    meta = read_manifest(built_dir)
    record = dict(meta['engines']['tensorrt_rtx'], gpu=H100.name, compute_capability=H100.cc, targets=[H100.cc],
                  tensorrt_version='10.13.0.35')
    args = (built_dir, 'tensorrt', '10.13.0.35', meta['onnx_sha256'])
    eng.check_engine_record(record, *args, H100)
    hint = rf'rebuild it: pi0-trt build {re.escape(str(built_dir))} --runtime tensorrt$'
    with pytest.raises(EngineError, match=r'was built for NVIDIA H100 80GB HBM3 \(sm 9\.0\) but this is '
                                          r'NVIDIA GeForce RTX 4090 \(sm 8\.9\): ' + hint):
        eng.check_engine_record(record, *args, RTX4090)


# -- runner (what runs without a GPU) ----------------------------------------------------------
def test_the_tensorrt_runner_module_does_not_import_torch() -> None:
    code = ('import sys, pi0_trt_ros.runners.tensorrt, pi0_trt_ros.export.engine; '
            'sys.exit(1 if "torch" in sys.modules else 0)')
    assert subprocess.run([sys.executable, '-c', code], cwd=Path(__file__).parents[1]).returncode == 0


def test_runner_stores_settings_and_reads_the_io_without_touching_cuda(built_dir: Path) -> None:
    runner = TensorRTRunner(built_dir, runtime='tensorrt_rtx', use_cuda_graph=False)
    assert runner.name == 'tensorrt_rtx' and runner.io == IO and not runner.active
    with pytest.raises(RunnerError, match='tensorrt_rtx runner is not active'):
        runner.infer()
    with pytest.raises(RunnerError, match=r"runtime must be one of tensorrt, tensorrt_rtx, got 'onnx'"):
        TensorRTRunner(built_dir, runtime='onnx')


@pytest.mark.skipif(device_count() > 0, reason='a CUDA device is visible')
def test_runner_activation_without_a_gpu_fails_fast_and_leaves_it_inactive(built_dir: Path) -> None:
    runner = TensorRTRunner(built_dir, runtime='tensorrt_rtx')
    with pytest.raises(RunnerError, match=r'CUDA device 0 requested but 0 visible \(check the NVIDIA driver'):
        runner.activate()
    assert not runner.active
