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

"""Every exported Pi0 graph parses and builds with a real TensorRT parser/builder (TensorRT-RTX, on CPU)."""

import json
from pathlib import Path

import pytest

pytest.importorskip('torch')
pytest.importorskip('tensorrt_rtx_bindings')

from pi0_trt_ros.cli import main as cli_main  # noqa: E402
from pi0_trt_ros.manifest import read_manifest  # noqa: E402

FIXTURE = Path(__file__).parent / 'fixtures' / 'lerobot_seed0'


@pytest.mark.parametrize('precision', ['fp16', 'fp32'])
def test_exported_tiny_pi0_builds_with_tensorrt_rtx(tmp_path, precision, capsys):
    engine_dir = tmp_path / 'engine'
    assert cli_main(['export', '--checkpoint', str(FIXTURE / 'policy'), '--out', str(engine_dir),
                     '--precision', precision]) == 0
    assert cli_main(['build', str(engine_dir), '--runtime', 'tensorrt_rtx', '--workspace-gib', '1']) == 0
    record = read_manifest(engine_dir)['engines']['tensorrt_rtx']
    plan = engine_dir / record['plan']
    assert plan.is_file() and plan.stat().st_size > 1 << 20
    assert record['precision'] == precision
    assert record['onnx_sha256'] == read_manifest(engine_dir)['onnx_sha256']
    print(json.dumps({k: record[k] for k in ('plan', 'tensorrt_version', 'gpu', 'plan_bytes', 'build_seconds')}))


def test_batched_export_builds_with_one_profile_per_batch_size(tmp_path):
    engine_dir = tmp_path / 'engine'
    assert cli_main(['export', '--checkpoint', str(FIXTURE / 'policy'), '--out', str(engine_dir),
                     '--precision', 'fp16', '--batch-sizes', '1,2,4,8']) == 0
    assert cli_main(['build', str(engine_dir), '--runtime', 'tensorrt_rtx', '--workspace-gib', '1', '--batched']) == 0
    meta = read_manifest(engine_dir)
    record = meta['batched']['engines']['tensorrt_rtx']
    assert record['plan'] == 'policy_fp16.batched.tensorrt_rtx.plan' and record['batch_sizes'] == [1, 2, 4, 8]
    assert (engine_dir / record['plan']).stat().st_size > 1 << 20
    assert record['onnx_sha256'] == meta['batched']['onnx_sha256'] != meta['onnx_sha256']
    assert meta['engines'] == {}  # the single-robot plan is built (or not) on its own
