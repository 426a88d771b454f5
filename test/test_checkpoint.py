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


# -- LeRobot <= 0.3 layout, built from the fixture's >= 0.4 form -----------------------------------
_PG = 'model.paligemma_with_expert.paligemma.'
# today's name -> transformers < 4.52 name (what LeRobot 0.3.x saved)
OLD_NAMES = ((_PG + 'model.language_model.', _PG + 'language_model.model.'),
             (_PG + 'model.vision_tower.', _PG + 'vision_tower.'),
             (_PG + 'model.multi_modal_projector.', _PG + 'multi_modal_projector.'),
             (_PG + 'lm_head.', _PG + 'language_model.lm_head.'))
# LeRobot 0.3.x PI0Config fields (configuration_pi0.py at v0.3.3) beside the ones both versions share.
OLD_CONFIG = {'resize_imgs_with_padding': [224, 224], 'empty_cameras': 0, 'adapt_to_pi_aloha': False,
              'use_delta_joint_actions_aloha': False, 'proj_width': 32, 'num_steps': 10, 'use_cache': True,
              'attention_implementation': 'eager', 'freeze_vision_encoder': True, 'train_expert_only': False,
              'train_state_proj': True}
NEW_ONLY_CONFIG = ('paligemma_variant', 'action_expert_variant', 'dtype', 'num_inference_steps',
                   'time_sampling_beta_alpha', 'time_sampling_beta_beta', 'time_sampling_scale',
                   'time_sampling_offset', 'min_period', 'max_period', 'use_relative_actions',
                   'relative_exclude_joints', 'action_feature_names', 'rtc_config', 'image_resolution',
                   'gradient_checkpointing', 'compile_model', 'compile_mode', 'use_peft')


def fixture_stats() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(FIXTURE / 'policy' / 'policy_preprocessor_step_6_normalizer_processor.safetensors'))


def make_lerobot_03(dst: Path, *, buffers: bool = True, **config_changes) -> Path:
    """Write the fixture as LeRobot 0.3.x saved it: old tensor names, stats as buffers, old config, no processors."""
    from safetensors.numpy import load_file, save_file

    dst.mkdir(parents=True)
    shutil.copy(FIXTURE / 'hf_configs.json', dst.parent / 'hf_configs.json')
    tensors = {}
    for key, value in load_file(str(FIXTURE / 'policy' / 'model.safetensors')).items():
        for new, old in OLD_NAMES:
            if key.startswith(new):
                key = old + key[len(new):]
        tensors[key] = value
    if buffers:
        stats = fixture_stats()
        for module, feature in (('normalize_inputs', 'observation_state'), ('normalize_targets', 'action'),
                                ('unnormalize_outputs', 'action')):
            source = feature.replace('_', '.')
            for name in ('mean', 'std'):
                tensors[f'{module}.buffer_{feature}.{name}'] = stats[f'{source}.{name}']
    save_file(tensors, str(dst / 'model.safetensors'))
    cfg = json.loads((FIXTURE / 'policy' / 'config.json').read_text())
    cfg = {k: v for k, v in cfg.items() if k not in NEW_ONLY_CONFIG}
    cfg.update(OLD_CONFIG, **config_changes)
    (dst / 'config.json').write_text(json.dumps(cfg, indent=4))
    return dst


def fixture_actions(ckpt) -> np.ndarray:
    """Return the action chunk of ``ckpt`` on the fixture's own inputs and noise ([1, 50, 6])."""
    f = dict(np.load(FIXTURE / 'fixture.npz'))
    frames = [torch.from_numpy(np.ascontiguousarray(f[f'image_u8.{i}'].transpose(0, 2, 3, 1))) for i in range(3)]
    with torch.no_grad():
        return ckpt.build_policy()(*frames, torch.from_numpy(f['state_raw']), torch.from_numpy(f['lang_tokens']),
                                   torch.from_numpy(f['lang_mask']), torch.from_numpy(f['noise'])).numpy()


def test_lerobot_03_checkpoint_gives_the_same_actions_as_its_04_form(tmp_path):
    new = load_checkpoint(FIXTURE / 'policy', FIXTURE / 'hf_configs.json')
    old = load_checkpoint(make_lerobot_03(tmp_path / 'policy'))
    assert (new.layout, old.layout) == ('lerobot>=0.4', 'lerobot<=0.3')
    assert old.config == new.config and old.io == new.io and old.dtype == 'bfloat16'
    assert set(old.weights) == set(new.weights)
    for key, value in new.weights.items():
        np.testing.assert_array_equal(old.weights[key], value)
    for name in ('state_mean', 'state_std', 'action_mean', 'action_std'):
        np.testing.assert_array_equal(getattr(old.stats, name), getattr(new.stats, name))
    actions = fixture_actions(old)
    np.testing.assert_array_equal(actions, fixture_actions(new))
    assert np.abs(actions - np.load(FIXTURE / 'fixture.npz')['actions']).max() <= 1e-4  # LeRobot's own chunk


def test_convert_writes_a_04_checkpoint_of_the_same_policy(tmp_path):
    from pi0_trt_ros.cli import main as cli_main

    old = make_lerobot_03(tmp_path / 'old' / 'policy')
    assert cli_main(['convert', str(old), '--out', str(tmp_path / 'new')]) == 0
    converted = load_checkpoint(tmp_path / 'new')
    assert converted.layout == 'lerobot>=0.4' and (tmp_path / 'new' / 'policy_preprocessor.json').is_file()
    np.testing.assert_array_equal(fixture_actions(converted), fixture_actions(load_checkpoint(old)))


def test_num_steps_is_honoured_beside_either_layout(tmp_path):
    old = load_checkpoint(make_lerobot_03(tmp_path / 'a' / 'policy', num_steps=5))
    assert old.config.num_inference_steps == 5
    assert old.build_policy().model.time_embeddings.shape[0] == 5  # 5 Euler steps, not the default 10
    new = tmp_path / 'b'
    shutil.copytree(FIXTURE / 'policy', new)
    cfg = json.loads((new / 'config.json').read_text())
    del cfg['num_inference_steps']
    cfg['num_steps'] = 5  # an old key beside the >= 0.4 processor files
    (new / 'config.json').write_text(json.dumps(cfg))
    assert load_checkpoint(new, FIXTURE / 'hf_configs.json').config.num_inference_steps == 5
    cfg['num_inference_steps'] = 10
    (new / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match='num_steps=5 .LeRobot <= 0.3. and num_inference_steps=10 disagree'):
        load_checkpoint(new, FIXTURE / 'hf_configs.json')


def test_lerobot_03_samples_n_action_steps_actions(tmp_path):
    ckpt = load_checkpoint(make_lerobot_03(tmp_path / 'policy', n_action_steps=20))
    assert ckpt.config.chunk_size == ckpt.io.chunk_size == ckpt.io.n_action_steps == 20


@pytest.mark.parametrize('changes,message', [
    ({'adapt_to_pi_aloha': True}, 'adapt_to_pi_aloha=true is not supported'),
    ({'use_delta_joint_actions_aloha': True}, 'use_delta_joint_actions_aloha=true is not supported'),
    ({'resize_imgs_with_padding': [448, 448]}, r'resize_imgs_with_padding=\[448, 448\] is not supported'),
    ({'resize_imgs_with_padding': None}, 'resize_imgs_with_padding=None is not supported'),  # 480x640 cameras
    ({'proj_width': 1024}, 'proj_width=1024 differs from the action expert width 32'),
    ({'empty_cameras': 1}, 'empty_cameras=1 is not supported'),
])
def test_old_keys_that_change_numerics_are_refused(tmp_path, changes, message):
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(make_lerobot_03(tmp_path / 'policy', **changes))


def test_unset_buffers_are_refused(tmp_path):
    ckpt = make_lerobot_03(tmp_path / 'policy')
    rewrite_weights(ckpt, lambda t: t.__setitem__('normalize_inputs.buffer_observation_state.std',
                                                  np.full(6, np.inf, np.float32)))
    with pytest.raises(CheckpointError, match='state_std is not finite .statistics never set.*--stats'):
        load_checkpoint(ckpt)


def test_base_pi0_without_cameras_or_stats_says_what_to_pass(tmp_path):
    """The hub's lerobot/pi0: no features, old keys, no statistics anywhere."""
    ckpt = make_lerobot_03(tmp_path / 'policy', buffers=False, input_features={}, output_features={})
    with pytest.raises(CheckpointError, match=r'no VISUAL input feature .camera., as the base lerobot/pi0 '
                       r'checkpoint.*--camera observation.images.base_0_rgb=480x640'):
        load_checkpoint(ckpt)
    cameras = {f'observation.images.{name}_0_rgb': (480, 640) for name in ('base', 'left_wrist', 'right_wrist')}
    with pytest.raises(CheckpointError, match=r'lacks observation.state input.*--stats <dataset>/meta/stats.json'):
        load_checkpoint(ckpt, cameras=cameras)
    stats = fixture_stats()
    meta = {feature: {'mean': stats[f'{feature}.mean'].tolist(), 'std': stats[f'{feature}.std'].tolist(),
                      'count': [1000]} for feature in ('observation.state', 'action')}
    (tmp_path / 'stats.json').write_text(json.dumps(meta))  # a LeRobot dataset's meta/stats.json
    loaded = load_checkpoint(ckpt, stats=tmp_path / 'stats.json', cameras=cameras)
    assert (loaded.io.state_dim, loaded.io.action_dim) == (6, 6)
    np.testing.assert_array_equal(fixture_actions(loaded),
                                  fixture_actions(load_checkpoint(FIXTURE / 'policy', FIXTURE / 'hf_configs.json')))


def test_base_pi0_with_cameras_but_no_stats_asks_for_stats(tmp_path):
    ckpt = make_lerobot_03(tmp_path / 'policy', buffers=False)
    with pytest.raises(CheckpointError, match=r'has no normalization statistics.*pi0-trt convert CHECKPOINT '
                       r'--out DIR --stats <dataset>/meta/stats.json'):
        load_checkpoint(ckpt)


def test_camera_option_is_parsed_or_refused():
    from pi0_trt_ros.checkpoint import parse_camera

    assert parse_camera('observation.images.base_0_rgb=480x640') == ('observation.images.base_0_rgb', (480, 640))
    with pytest.raises(CheckpointError, match='expected KEY=HxW'):
        parse_camera('observation.images.base_0_rgb=480')


def test_mapped_safetensors_equal_what_safetensors_reads(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from pi0_trt_ros.safetensors_map import map_safetensors

    g = torch.Generator().manual_seed(0)
    tensors = {'w': torch.randn(5, 7, generator=g), 'half': torch.randn(3, generator=g).half(),
               'brain': torch.randn(4, 6, generator=g).bfloat16(), 'ids': torch.arange(9).reshape(3, 3),
               'flag': torch.tensor([True, False, True]), 'scalar': torch.tensor(2.5), 'empty': torch.zeros(0, 4)}
    path = tmp_path / 'model.safetensors'
    save_file(tensors, str(path), metadata={'format': 'pt'})
    mapped = map_safetensors(path)
    want = load_file(str(path))
    assert set(mapped) == set(want)
    for name, value in want.items():
        expected = value.float() if value.dtype == torch.bfloat16 else value
        assert mapped[name].shape == tuple(expected.shape), name
        np.testing.assert_array_equal(mapped[name], expected.numpy(), err_msg=name)
    assert isinstance(mapped['w'].base, np.memmap) or isinstance(mapped['w'], np.memmap)  # a view, not a copy
    mapped['w'][0, 0] = 123.0  # copy-on-write: writable, the file stays as it was
    assert float(load_file(str(path))['w'][0, 0]) == float(tensors['w'][0, 0])


@pytest.mark.parametrize('damage, message', [
    (lambda b: b[:8], 'not a safetensors file'),
    (lambda b: b[:-8], 'outside the file or of the wrong size'),
    (lambda b: (10 ** 12).to_bytes(8, 'little') + b[8:], 'not a safetensors file'),
    (lambda b: b[:8] + b'#' + b[9:], 'unreadable safetensors header'),
])
def test_damaged_safetensors_files_are_refused_with_the_reason(tmp_path, damage, message):
    import torch
    from safetensors.torch import save_file

    from pi0_trt_ros.safetensors_map import map_safetensors

    path = tmp_path / 'model.safetensors'
    save_file({'a': torch.ones(4, 4), 'b': torch.ones(8)}, str(path))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        map_safetensors(path)
