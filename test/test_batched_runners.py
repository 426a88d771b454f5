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

"""Batched runners: each row of a batched call equals the batch-1 call on the same inputs and noise.

Real ONNX Runtime on the exported dynamic-batch graph and real PyTorch (CPU, eager) on the
LeRobot fixture checkpoint; the batch-1 reference is the single-robot runner (static batch-1 graph).
"""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('torch')
pytest.importorskip('onnxruntime')

from pi0_trt_ros.batch_sizes import padded_size, parse_batch_sizes  # noqa: E402
from pi0_trt_ros.cli import main as cli_main  # noqa: E402
from pi0_trt_ros.errors import ExportError, RunnerError  # noqa: E402
from pi0_trt_ros.export.onnx import export_policy  # noqa: E402
from pi0_trt_ros.manifest import read_manifest  # noqa: E402
from pi0_trt_ros.runners import make_runner  # noqa: E402

FIXTURE = Path(__file__).parent / 'fixtures' / 'lerobot_seed0'
SIZES = (1, 2, 4)
# Max abs difference (robot units) of a batched row against the batch-1 call; measured ~1e-6
# (other GEMM blockings for other row counts), while any mixing of rows moves actions by ~1e-1.
ROW_TOL = 1e-5


@pytest.fixture(scope='module')
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_policy(FIXTURE / 'policy', tmp_path_factory.mktemp('batched'), arch=FIXTURE / 'hf_configs.json',
                         precision='fp32', batch_sizes=SIZES)


def observations(count: int, seed: int = 0) -> list[tuple]:
    """``count`` different observations: shifted frames, perturbed state, shorter prompts, own noise."""
    f = np.load(FIXTURE / 'fixture.npz')
    frames = [np.ascontiguousarray(f[f'image_u8.{i}'][0].transpose(1, 2, 0)) for i in range(3)]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        mask = f['lang_mask'][0].copy()
        mask[max(1, int(mask.sum()) - 2 * i):] = False
        out.append(([np.roll(frame, 23 * i, axis=1) for frame in frames],
                    (f['state_raw'][0] + 0.3 * rng.standard_normal(6)).astype(np.float32),
                    np.where(mask, f['lang_tokens'][0], 0).astype(np.int64), mask,
                    rng.standard_normal(f['noise'][0].shape, dtype=np.float32)))
    return out


def runner_args(backend: str, engine_dir: Path) -> dict:
    if backend == 'torch':
        return {'checkpoint': FIXTURE / 'policy', 'arch': FIXTURE / 'hf_configs.json', 'device': 'cpu',
                'dtype': 'fp32'}
    return {'engine_dir': engine_dir}


def single_robot_chunks(backend: str, engine_dir: Path, obs: list[tuple]) -> list[np.ndarray]:
    with make_runner(backend, **runner_args(backend, engine_dir)) as runner:
        assert not runner.batched and runner.staging.buffers['state'].shape == (1, 6)
        chunks = []
        for o in obs:
            runner.stage(*o)
            chunks.append(runner.infer().copy())
    return chunks


@pytest.mark.parametrize('backend', ['onnxruntime', 'torch'])
def test_each_row_of_a_batched_call_equals_the_batch_1_call(engine_dir, backend):
    obs = observations(4)
    expected = single_robot_chunks(backend, engine_dir, obs)
    assert np.abs(expected[0] - expected[1]).max() > 1e-2  # the observations really differ
    with make_runner(backend, batch_sizes=SIZES, **runner_args(backend, engine_dir)) as runner:
        for n in (4, 3, 2, 1):  # full, padded (3 -> 4), full, batch 1 inside the batched runner
            for row, o in enumerate(obs[:n]):
                runner.stage(*o, row=row)
            chunks = runner.infer_batch(n)
            assert chunks.shape == (n, 50, 6)
            for row in range(n):
                err = float(np.abs(chunks[row] - expected[row]).max())
                assert err <= ROW_TOL, f'{backend} batch {n} row {row}: {err:.2e}'
        assert np.abs(runner.infer() - expected[0]).max() <= ROW_TOL


@pytest.mark.parametrize('backend', ['onnxruntime', 'torch'])
def test_a_partial_batch_is_padded_into_the_same_buffers_and_padding_rows_change_nothing(engine_dir, backend):
    obs = observations(4, seed=1)
    with make_runner(backend, batch_sizes=SIZES, **runner_args(backend, engine_dir)) as runner:
        buffers = {name: (buf, buf.ctypes.data) for name, buf in runner.row(0).buffers.items()}
        assert buffers['state'][0].shape == (4, 6)  # allocated once, for the largest batch size
        for row, o in enumerate(obs):
            runner.stage(*o, row=row)
        output = runner.infer_batch(4).ctypes.data
        first = runner.infer_batch(3).copy()  # row 3 (padding) still holds observation 3
        runner.stage(*observations(1, seed=7)[0], row=3)  # change only the padding row
        again = runner.infer_batch(3)
        np.testing.assert_array_equal(again, first)
        assert again.ctypes.data == output  # the same output buffer, its first rows
        for name, (buf, address) in buffers.items():
            assert runner.row(3).buffers[name] is buf and buf.ctypes.data == address, name


def test_rows_are_staged_and_checked_independently(engine_dir):
    obs = observations(2)
    with make_runner('onnxruntime', engine_dir=engine_dir, batch_sizes=SIZES) as runner:
        runner.stage(*obs[0], row=0)
        runner.stage(*obs[1], row=1)
        before = {k: v.copy() for k, v in runner.row(0).buffers.items()}
        images, state, tokens, mask, noise = obs[0]
        with pytest.raises(RunnerError, match=r'state: expected shape \(6,\), got \(7,\)'):
            runner.stage(images, np.zeros(7, np.float32), tokens, mask, noise, row=1)
        for k, v in before.items():
            np.testing.assert_array_equal(runner.row(0).buffers[k], v, err_msg=k)
        np.testing.assert_array_equal(runner.row(1).state, obs[1][1])
        with pytest.raises(RunnerError, match=r'staging row 4 is outside 0\.\.3 \(batch sizes 1,2,4\)'):
            runner.row(4)
        with pytest.raises(RunnerError, match=r'a batch of 5 observations does not fit: this runner serves 1\.\.4'):
            runner.infer_batch(5)


def test_batched_runner_on_an_export_without_a_batched_graph_says_how_to_export_one(tmp_path):
    plain = export_policy(FIXTURE / 'policy', tmp_path / 'plain', arch=FIXTURE / 'hf_configs.json', precision='fp32')
    assert 'batched' not in read_manifest(plain)
    with pytest.raises(ExportError, match=r'no batched graph: re-export with .*--batch-sizes 1,2,8`'):
        make_runner('onnxruntime', engine_dir=plain, batch_sizes=(1, 2, 8))


def test_batched_runner_refuses_sizes_beyond_the_exported_ones(engine_dir):
    with pytest.raises(ExportError, match=r'exported for batch sizes 1,2,4, not 1,8: re-export'):
        make_runner('onnxruntime', engine_dir=engine_dir, batch_sizes=(1, 8))


def test_batch_sizes_are_parsed_sorted_and_padded_to_the_next_size():
    assert parse_batch_sizes('8, 1,4,2,4') == (1, 2, 4, 8)
    assert [padded_size(n, (1, 2, 4, 8)) for n in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    for bad in ('0,2', '1,x', ''):
        with pytest.raises(RunnerError, match='batch sizes'):
            parse_batch_sizes(bad)


def test_cli_export_writes_the_batched_graph_beside_the_batch_1_graph(tmp_path):
    out = tmp_path / 'engine'
    assert cli_main(['export', '--checkpoint', str(FIXTURE / 'policy'), '--out', str(out), '--precision', 'fp32',
                     '--batch-sizes', '2,1']) == 0
    meta = read_manifest(out)
    assert meta['graph'] == 'policy_fp32.onnx'
    assert meta['batched']['graph'] == 'policy_fp32.batched.onnx' and meta['batched']['batch_sizes'] == [1, 2]
    onnx = pytest.importorskip('onnx')
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(out / 'policy_fp32.batched.onnx'),
                                                          load_external_data=False).graph.input[0].type
            .tensor_type.shape.dim]
    assert dims == ['batch', 480, 640, 3]
    assert cli_main(['export', '--checkpoint', str(FIXTURE / 'policy'), '--out', str(out), '--precision', 'fp32']) == 0
    assert 'batched' not in read_manifest(out) and not (out / 'policy_fp32.batched.onnx').exists()


def test_cli_bench_batch_reports_latency_and_throughput_per_batch_size(engine_dir, tmp_path, capsys):
    out = tmp_path / 'bench.json'
    assert cli_main(['bench', '--backend', 'onnxruntime', '--engine-dir', str(engine_dir), '--batch', '1,2,4',
                     '--iters', '3', '--warmup', '1', '--json', str(out)]) == 0
    table = capsys.readouterr().out
    assert '| batch | p50 ms | p99 ms | mean ms | observations/s |' in table
    figures = json.loads(out.read_text())
    assert [e['batch'] for e in figures['sizes']] == [1, 2, 4] and figures['actions_finite']
    for e in figures['sizes']:
        assert 0 < e['p50_ms'] <= e['p99_ms']
        assert e['obs_per_s'] == pytest.approx(e['batch'] * 1000 / e['mean_ms'])
        assert f'| {e["batch"]} | {e["p50_ms"]:.2f} |' in table
