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

"""Checkpoint loading: LeRobot layout round trip, strictness and the errors users see."""

import json
from pathlib import Path
import shutil

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from pi0_trt_ros.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from pi0_trt_ros.errors import CheckpointError  # noqa: E402
from pi0_trt_ros.model.config import Pi0Config  # noqa: E402
from pi0_trt_ros.model.pi0 import Pi0Model  # noqa: E402

FIXTURE = Path(__file__).parent / 'fixtures' / 'lerobot_seed0'


@pytest.fixture
def ckpt_copy(tmp_path):
    dst = tmp_path / 'policy'
    shutil.copytree(FIXTURE / 'policy', dst)
    shutil.copy(FIXTURE / 'hf_configs.json', tmp_path / 'hf_configs.json')
    return dst


def rewrite_weights(ckpt: Path, edit) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(ckpt / 'model.safetensors'))
    edit(tensors)
    save_file(tensors, str(ckpt / 'model.safetensors'))


def test_lerobot_checkpoint_loads_with_arch_found_beside_it(ckpt_copy):
    ckpt = load_checkpoint(ckpt_copy)
    assert ckpt.config.vlm.width == 64 and ckpt.config.expert.width == 32
    assert ckpt.io.camera_keys[0] == 'observation.images.base_0_rgb'
    assert ckpt.io.camera_hw == ((480, 640),) * 3
    assert (ckpt.io.state_dim, ckpt.io.action_dim, ckpt.io.token_len) == (6, 6, 48)


def test_save_then_load_round_trips_every_tensor(tmp_path):
    src = load_checkpoint(FIXTURE / 'policy', FIXTURE / 'hf_configs.json')
    out = save_checkpoint(tmp_path / 'copy', src.config, src.io, src.weights, src.stats)
    back = load_checkpoint(out)
    assert back.config == src.config and back.io == src.io
    assert set(back.weights) == set(src.weights)
    for k, v in src.weights.items():
        np.testing.assert_array_equal(back.weights[k], v)
    np.testing.assert_array_equal(back.stats.action_std, src.stats.action_std)


def test_missing_tensor_is_named(ckpt_copy):
    key = 'model.action_out_proj.bias'
    rewrite_weights(ckpt_copy, lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=r"missing \['action_out_proj.bias'\]"):
        load_checkpoint(ckpt_copy)


def test_extra_tensor_is_named(ckpt_copy):
    rewrite_weights(ckpt_copy, lambda t: t.__setitem__('model.surprise.weight', np.zeros(3, np.float32)))
    with pytest.raises(CheckpointError, match=r"unexpected \['surprise.weight'\]"):
        load_checkpoint(ckpt_copy)


def test_wrongly_shaped_tensor_is_named(ckpt_copy):
    rewrite_weights(ckpt_copy, lambda t: t.__setitem__('model.state_proj.bias', np.zeros(7, np.float32)))
    with pytest.raises(CheckpointError, match=r"'state_proj.bias' has shape \(7,\), architecture expects \(32,\)"):
        load_checkpoint(ckpt_copy)


def test_missing_stats_file_is_named(ckpt_copy):
    (ckpt_copy / 'policy_postprocessor_step_0_unnormalizer_processor.safetensors').unlink()
    with pytest.raises(CheckpointError, match='policy_postprocessor_step_0_unnormalizer_processor.safetensors missing'):
        load_checkpoint(ckpt_copy)


def test_config_without_cameras_is_rejected(ckpt_copy):
    cfg = json.loads((ckpt_copy / 'config.json').read_text())
    cfg['input_features'] = {k: v for k, v in cfg['input_features'].items() if v['type'] != 'VISUAL'}
    (ckpt_copy / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match='describes no VISUAL input feature'):
        load_checkpoint(ckpt_copy)


def test_not_a_checkpoint_directory(tmp_path):
    with pytest.raises(CheckpointError, match='does not exist'):
        load_checkpoint(tmp_path / 'nowhere')
    with pytest.raises(CheckpointError, match='config.json missing'):
        load_checkpoint(tmp_path)


def test_full_size_architecture_builds_and_counts_parameters():
    """Real shapes (2048/18/16384 VLM, 1024/18/4096 expert, So400m, 257,152 vocab), on the meta device."""
    with torch.device('meta'):
        model = Pi0Model(Pi0Config.from_variants('gemma_2b', 'gemma_300m'))
    n = sum(p.numel() for p in model.parameters())
    lm_heads = 257152 * 2048 + 257152 * 1024  # present in LeRobot's state_dict, unused at inference
    print(f'full-size Pi0: {n:,} parameters used at inference, {n + lm_heads:,} with the two lm_heads')
    assert len(model.state_dict()) + 2 == 778  # LeRobot's tensor count
    assert n + lm_heads == 4_028_019_472
