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

"""Start-up errors say what to do in one line: damaged exports, and options a backend does not take.

Runner-level checks use a real tiny export and real ONNX Runtime; the node-level ones start the
real control node process and read what it prints.
"""

import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip('onnxruntime')
pytest.importorskip('torch')

from pi0_trt_ros.cli import build_parser  # noqa: E402
from pi0_trt_ros.errors import ExportError, Pi0Error, RunnerError  # noqa: E402
from pi0_trt_ros.manifest import EXPORT_METADATA, file_sha256, FORMAT_VERSION, read_manifest  # noqa: E402
from pi0_trt_ros.runners import make_runner  # noqa: E402
from pi0_trt_ros.runners.registry import BACKENDS  # noqa: E402
from pi0_trt_ros.testing.dds import domain_id  # noqa: E402
from pi0_trt_ros.testing.tiny import make_tiny_bundle  # noqa: E402

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
DOMAIN_ID = domain_id(94)
REPO = Path(__file__).resolve().parents[1]
REEXPORT = 're-export with `pi0-trt export --checkpoint DIR --out '


@pytest.fixture(scope='module')
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_tiny_bundle(tmp_path_factory.mktemp('tiny'), seed=3)


@pytest.fixture
def export(bundle: Any, tmp_path: Path) -> Path:
    """Return a private copy of the tiny export, free to damage."""
    return Path(shutil.copytree(bundle.engine_dir, tmp_path / 'engine'))


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def rewrite_manifest(export: Path, **changes: Any) -> None:
    meta = json.loads((export / EXPORT_METADATA).read_text())
    meta.update(changes)
    (export / EXPORT_METADATA).write_text(json.dumps(meta))


# -- damaged exports ---------------------------------------------------------------------------
def test_a_corrupted_onnx_graph_is_refused_by_its_hash_before_onnxruntime_parses_it(export: Path) -> None:
    graph = export / read_manifest(export)['graph']
    flip_a_byte(graph)
    runner = make_runner('onnxruntime', engine_dir=export)
    with pytest.raises(ExportError, match=rf'^{graph.name} has sha256 [0-9a-f]{{12}}\.\.\. but pi0_export\.json '
                                          r'records [0-9a-f]{12}\.\.\.: the graph is corrupted or was replaced: '
                                          + re.escape(REEXPORT)):
        runner.activate()
    assert not runner.active


def test_an_onnx_file_that_is_not_a_graph_gives_onnxruntimes_reason_in_one_line(export: Path) -> None:
    graph = export / read_manifest(export)['graph']
    graph.write_bytes(b'\x08\x07garbage, not a protobuf' * 10)
    rewrite_manifest(export, onnx_sha256=file_sha256(graph))  # so that the parser is what refuses it
    with pytest.raises(ExportError, match=r'^ONNX Runtime could not load .*policy_fp32\.onnx \((InvalidProtobuf|Fail)'
                                          r': [^\n]*\): ' + re.escape(REEXPORT)) as info:
        make_runner('onnxruntime', engine_dir=export).activate()
    assert '\n' not in str(info.value)


def test_a_missing_graph_file_names_the_file_and_the_export_command(export: Path) -> None:
    (export / read_manifest(export)['graph']).unlink()
    with pytest.raises(ExportError, match=r'policy_fp32\.onnx is recorded in pi0_export\.json but missing: '
                                          + re.escape(REEXPORT)):
        make_runner('onnxruntime', engine_dir=export).activate()


@pytest.mark.parametrize('damage, message', [
    ('truncate', r'pi0_export\.json is unreadable \(JSONDecodeError: '),
    ('format', rf'format_version 99, this package reads {FORMAT_VERSION}: '),
    ('no_hash', r"'onnx_sha256' is missing, expected a str: "),
    ('bad_io', r"invalid 'io' \(KeyError: 'camera_hw'\): "),
])
def test_a_damaged_manifest_is_refused_with_the_export_command(export: Path, damage: str, message: str) -> None:
    path = export / EXPORT_METADATA
    if damage == 'truncate':
        path.write_bytes(path.read_bytes()[:40])
    elif damage == 'format':
        rewrite_manifest(export, format_version=99)
    elif damage == 'no_hash':
        meta = json.loads(path.read_text())
        del meta['onnx_sha256']
        path.write_text(json.dumps(meta))
    else:
        rewrite_manifest(export, io={'camera_keys': ['a']})
    with pytest.raises(ExportError, match=message + '.*' + re.escape(REEXPORT)) as info:
        make_runner('onnxruntime', engine_dir=export)
    assert '\n' not in str(info.value)


# -- backend options -----------------------------------------------------------------------------
@pytest.mark.parametrize('backend', ['tensorrt', 'tensorrt_rtx', 'torch'])
def test_onnxruntime_options_given_to_another_backend_name_the_options_it_takes(bundle: Any, backend: str) -> None:
    takes = ', '.join(o.name for o in BACKENDS[backend].options)
    assert takes  # every backend documents its options
    with pytest.raises(RunnerError, match=rf"^backend_options 'threads' not taken by the {backend} backend; "
                                          rf'it takes {BACKENDS[backend].options[0].name} \(') as info:
        make_runner(backend, engine_dir=bundle.engine_dir, checkpoint=bundle.checkpoint, threads=1)
    assert '\n' not in str(info.value)
    for option in BACKENDS[backend].options:
        assert f'{option.name} ({option.kind.__name__}, default {option.default!r}' in str(info.value)


@pytest.mark.parametrize('backend, options, message', [
    ('onnxruntime', {'threads': '1'}, r"backend option 'threads' of onnxruntime must be an integer .*, got '1'"),
    ('onnxruntime', {'threads': True}, r"backend option 'threads' of onnxruntime must be an integer .*, got True"),
    ('onnxruntime', {'device': 'gpu'}, r"backend option 'device' of onnxruntime must be one of cpu, cuda, got 'gpu'"),
    ('tensorrt', {'use_cuda_graph': 'yes'}, r"'use_cuda_graph' of tensorrt must be true or false .*, got 'yes'"),
    ('torch', {'dtype': 'fp8'}, r"'dtype' of torch must be one of fp32, fp16, bf16, got 'fp8'"),
])
def test_a_backend_option_of_the_wrong_type_or_value_is_refused(bundle: Any, backend: str, options: dict,
                                                                message: str) -> None:
    with pytest.raises(RunnerError, match=message):
        make_runner(backend, engine_dir=bundle.engine_dir, checkpoint=bundle.checkpoint, **options)


def test_an_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(RunnerError, match=r"unknown backend 'onnx'; choose one of onnxruntime, tensorrt, "
                                          r'tensorrt_rtx, torch'):
        make_runner('onnx', engine_dir='x')


def test_node_parameters_refuse_foreign_backend_options_and_unknown_backends(tmp_path: Path) -> None:
    from pi0_trt_ros.node.params import default_params_file, params_from_yaml

    overrides = {'engine_dir': 'e', 'tokenizer': 't', 'backend': 'tensorrt', 'backend_options': '{"threads": 1}'}
    with pytest.raises(Pi0Error, match=r"(?m)^  - backend_options 'threads' not taken by the tensorrt backend; it "
                                       r'takes use_cuda_graph \(bool, default True'):
        params_from_yaml(default_params_file(), overrides)
    overrides.update(backend='tensorrt_x', backend_options='{}')
    with pytest.raises(Pi0Error, match=r'(?m)^  - backend must be one of onnxruntime, tensorrt, tensorrt_rtx, '
                                       r"torch, got 'tensorrt_x'$"):
        params_from_yaml(default_params_file(), overrides)
    overrides.update(backend='onnxruntime', backend_options='{"threads": 2, "device": "cpu"}')
    assert params_from_yaml(default_params_file(), overrides).backend_options == {'threads': 2, 'device': 'cpu'}


def test_the_cli_offers_exactly_the_registered_backends(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(['infer', '--backend', 'nope', '--obs', 'o', '--out', 'x'])
    err = capsys.readouterr().err
    assert "choose from 'onnxruntime', 'tensorrt', 'tensorrt_rtx', 'torch'" in err, err


# -- the node process ----------------------------------------------------------------------------
def run_node(bundle: Any, tmp_path: Path, **params: str) -> subprocess.CompletedProcess:
    args = [f'{k}:={v}' for k, v in {'tokenizer': str(bundle.tokenizer), 'backend': 'onnxruntime', **params}.items()]
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_HOME=str(tmp_path / 'ros_home'), PYTHONPATH=str(REPO), RCUTILS_COLORIZED_OUTPUT='0')
    cmd = [sys.executable, '-m', 'pi0_trt_ros.node.control_node', '--ros-args']
    for arg in args:
        cmd += ['-p', arg]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_the_node_with_a_corrupted_onnx_graph_exits_1_with_one_start_up_line(
        bundle: Any, export: Path, tmp_path: Path) -> None:
    flip_a_byte(export / read_manifest(export)['graph'])
    done = run_node(bundle, tmp_path, engine_dir=str(export))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert 'Traceback' not in output, output
    line = next(x for x in output.splitlines() if 'start-up failed:' in x)
    assert 'the graph is corrupted or was replaced: re-export with `pi0-trt export' in line, output


def test_the_node_with_onnxruntime_options_and_backend_tensorrt_exits_1_naming_the_options(
        bundle: Any, tmp_path: Path) -> None:
    done = run_node(bundle, tmp_path, engine_dir=str(bundle.engine_dir), backend='tensorrt',
                    backend_options='\'{"threads": 1}\'')  # a YAML string
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert 'Traceback' not in output and 'TypeError' not in output, output
    assert 'start-up failed: invalid parameters' in output, output
    assert "backend_options 'threads' not taken by the tensorrt backend; it takes use_cuda_graph" in output, output
