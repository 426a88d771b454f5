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

"""Load a LeRobot pi0 checkpoint directory into a `Pi0Policy`.

Two layouts load, told apart by the processor files:

* LeRobot >= 0.4, as `PI0Policy.save_pretrained` + the processors' `save_pretrained` write it:
  ``config.json`` (PI0Config, ``"type": "pi0"``), ``model.safetensors``, ``policy_preprocessor.json``
  with its normalizer ``.safetensors``, ``policy_postprocessor.json`` with its unnormalizer.
* LeRobot <= 0.3 (no processor files): the normalization statistics are buffers inside
  ``model.safetensors`` (``normalize_inputs.buffer_observation_state.mean`` ...), PaliGemma weights
  carry the names of transformers < 4.52 (``paligemma.language_model.model.*``,
  ``paligemma.vision_tower.*``), and config.json has the old keys (``num_steps``,
  ``resize_imgs_with_padding``, ``proj_width`` ...). Each old key is honoured or refused
  (`upgrade_config`), never ignored.

A checkpoint without cameras or statistics (the hub's base ``lerobot/pi0``) loads when they are
passed (``cameras=``, ``stats=`` a LeRobot dataset's ``meta/stats.json``). Loading is strict: every
tensor is used (the unused ``lm_head`` matrices and training-only buffers excepted), none is
missing, every shape matches; otherwise `CheckpointError` names the tensors.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from pi0_trt_ros.errors import CheckpointError
from pi0_trt_ros.manifest import file_sha256, PolicyIO
from pi0_trt_ros.model.config import Pi0Config
from pi0_trt_ros.safetensors_map import map_safetensors

IMAGE_PREFIX = 'observation.images.'
STATE_KEY = 'observation.state'
ACTION_KEY = 'action'

_PG = 'model.paligemma_with_expert.paligemma.'
_EXPERT = 'model.paligemma_with_expert.gemma_expert.'
# LeRobot state_dict key prefix -> our Pi0Model key prefix (first match wins).
KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    (_PG + 'model.vision_tower.vision_model.embeddings.', 'vision.'),
    (_PG + 'model.vision_tower.vision_model.encoder.layers.', 'vision.layers.'),
    (_PG + 'model.vision_tower.vision_model.post_layernorm.', 'vision.post_layernorm.'),
    (_PG + 'model.multi_modal_projector.linear.', 'vision.projector.'),
    (_PG + 'model.language_model.embed_tokens.', 'embed_tokens.'),
    (_PG + 'model.language_model.', 'vlm.'),
    (_EXPERT + 'model.', 'expert.'),
    ('model.', ''),
)
# Present in every LeRobot pi0 checkpoint, never used at inference.
UNUSED_KEYS = (_PG + 'lm_head.weight', _EXPERT + 'lm_head.weight')
# transformers < 4.52 (LeRobot <= 0.3) PaliGemma names -> today's names (LeRobot's own
# `PI0Policy._transform_state_dict_keys` in 0.3.x does the same renames).
LEGACY_KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    (_PG + 'language_model.lm_head.', _PG + 'lm_head.'),
    (_PG + 'language_model.model.', _PG + 'model.language_model.'),
    (_PG + 'vision_tower.', _PG + 'model.vision_tower.'),
    (_PG + 'multi_modal_projector.', _PG + 'model.multi_modal_projector.'),
)
# LeRobot <= 0.3 normalization buffers: ``<module>.buffer_<feature with . as _>.<mean|std>``.
STATE_BUFFER = 'normalize_inputs.buffer_observation_state.'
ACTION_BUFFER = 'unnormalize_outputs.buffer_action.'
TRAINING_BUFFER = 'normalize_targets.buffer_action.'  # normalizes training targets; unused at inference
NORM_BUFFER_PREFIXES = ('normalize_inputs.', 'normalize_targets.', 'unnormalize_outputs.')

LAYOUT_PROCESSORS = 'lerobot>=0.4'
LAYOUT_BUFFERS = 'lerobot<=0.3'


@dataclasses.dataclass(frozen=True)
class NormStats:
    """Normalization of state and unnormalization of actions, as float32 vectors."""

    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A parsed LeRobot pi0 checkpoint (weights as numpy views of the mapped file, nothing on a device yet)."""

    path: Path
    config: Pi0Config
    io: PolicyIO
    dtype: str  # 'float32' or 'bfloat16', as trained
    weights: dict[str, np.ndarray]  # our Pi0Model keys (torch-free arrays; bf16 stored as float32)
    stats: NormStats
    layout: str = LAYOUT_PROCESSORS  # LAYOUT_PROCESSORS or LAYOUT_BUFFERS

    @functools.cached_property
    def sha256(self) -> str:
        """Hex sha256 of model.safetensors, read when first asked (an export records it; a runner never needs it).

        A full-size checkpoint is 13 GB in float32: hashing it would add seconds to every node start.
        """
        return file_sha256(self.path / 'model.safetensors')

    def build_policy(self, dtype: Any = None, device: Any = 'cpu') -> Any:
        """Instantiate the PyTorch `Pi0Policy` with these weights (imports torch)."""
        import torch

        from pi0_trt_ros.model.pi0 import Pi0Model, Pi0Policy

        with torch.device('meta'):
            model = Pi0Model(self.config)
        tensors = {k: torch.from_numpy(v) for k, v in self.weights.items()}
        model.load_state_dict(tensors, strict=True, assign=True)
        for name, value in model.constant_tables().items():  # non-persistent buffers: still on meta
            setattr(model, name, value)
        s = self.stats
        stats = (s.state_mean, s.state_std, s.action_mean, s.action_std)
        policy = Pi0Policy(model, *(torch.from_numpy(a) for a in stats))
        policy = policy.to(device)
        if dtype is not None:
            cast_matmul_weights(policy, dtype)
        return policy.eval()


def cast_matmul_weights(policy: Any, dtype: Any) -> None:
    """Store GEMM/conv/embedding weights in ``dtype``; norms and stats stay float32."""
    from torch import nn

    from pi0_trt_ros.model.layers import GemmaRMSNorm, LayerNorm

    for module in policy.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)) and not isinstance(module, LayerNorm):
            module.to(dtype)
        elif isinstance(module, (GemmaRMSNorm, LayerNorm)):
            module.float()


def modern_key(key: str) -> str:
    """Rename a transformers < 4.52 PaliGemma key (LeRobot <= 0.3) to today's name; others unchanged."""
    for old, new in LEGACY_KEY_PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def map_key(key: str) -> str | None:
    """Map a LeRobot state_dict key to our Pi0Model key (None for known-unused tensors)."""
    if not key.startswith('model.'):
        key = 'model.' + key  # older exports without the prefix
    key = key.replace('model.time_mlp_', 'model.action_time_mlp_')
    if key in UNUSED_KEYS:
        return None
    for src, dst in KEY_PREFIXES:
        if key.startswith(src):
            return dst + key[len(src):]
    raise CheckpointError(f'unexpected tensor {key!r} in model.safetensors')


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f'{path.name} missing in {path.parent}: not a LeRobot pi0 checkpoint directory')
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f'{path} is not valid JSON: {e}') from None


def _processor_state(ckpt: Path, processor: str, registry_name: str) -> dict[str, np.ndarray]:
    spec = read_json(ckpt / f'{processor}.json')
    for step in spec.get('steps', []):
        if step.get('registry_name') == registry_name:
            state_file = step.get('state_file')
            if not state_file:
                raise CheckpointError(f'{processor}.json: step {registry_name!r} names no state_file')
            return map_safetensors(ckpt / state_file)
    raise CheckpointError(f'{processor}.json has no {registry_name!r} step')


def _stat(stats: dict[str, np.ndarray], key: str, dim: int, source: str) -> np.ndarray:
    if key not in stats:
        raise CheckpointError(f'{source}: statistic {key!r} missing')
    value = np.asarray(stats[key], dtype=np.float32).reshape(-1)
    if value.shape != (dim,):
        raise CheckpointError(f'{source}: {key!r} has shape {value.shape}, config says ({dim},)')
    return value


def read_stats_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read normalization statistics as flat ``<feature>.<stat>`` arrays.

    ``path``: a LeRobot dataset's ``meta/stats.json`` (``{"observation.state": {"mean": [...],
    "std": [...]}, "action": {...}}``) or a normalizer ``.safetensors`` with flat keys.
    """
    path = Path(path)
    if path.suffix == '.safetensors':
        return map_safetensors(path)
    doc = read_json(path)
    flat = {}
    for feature, stats in doc.items():
        if isinstance(stats, dict):
            for name, value in stats.items():
                try:
                    flat[f'{feature}.{name}'] = np.asarray(value, np.float32)
                except (TypeError, ValueError):
                    continue  # non-numeric entries (counts as dicts, ...) are not statistics we use
    return flat


def parse_camera(spec: str) -> tuple[str, tuple[int, int]]:
    """Parse ``KEY=HxW`` (e.g. ``observation.images.base_0_rgb=480x640``) into (key, (H, W))."""
    key, _, size = spec.partition('=')
    try:
        height, width = (int(v) for v in size.lower().split('x'))
    except ValueError:
        raise CheckpointError(f'camera {spec!r}: expected KEY=HxW, e.g. observation.images.base_0_rgb=480x640') \
            from None
    if not key or height < 1 or width < 1:
        raise CheckpointError(f'camera {spec!r}: expected KEY=HxW with a key and positive sizes')
    return key, (height, width)


def _buffer_stats(buffers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return LeRobot <= 0.3 in-model buffers as flat ``<feature>.<stat>`` arrays (empty if none)."""
    flat = {}
    for prefix, feature in ((STATE_BUFFER, STATE_KEY), (ACTION_BUFFER, ACTION_KEY)):
        for name in ('mean', 'std'):
            if prefix + name in buffers:
                flat[f'{feature}.{name}'] = buffers[prefix + name]
    unknown = sorted(k for k in buffers if not k.startswith((STATE_BUFFER, ACTION_BUFFER, TRAINING_BUFFER)))
    if unknown:
        raise CheckpointError(f'model.safetensors has normalization buffers for other features: {unknown[:4]} '
                              f'(only MEAN_STD state and action normalization is supported)')
    return flat


# LeRobot <= 0.3 PI0Config keys with no numeric effect at inference (training, caching, kernels).
LEGACY_INERT_KEYS = ('use_cache', 'attention_implementation', 'freeze_vision_encoder', 'train_expert_only',
                     'train_state_proj')


def upgrade_config(cfg: dict[str, Any], ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rewrite LeRobot <= 0.3 config keys as today's; refuse those whose numerics we cannot reproduce.

    Applies to any config.json, so an old key beside new files is honoured or refused too.
    Returns the config and the old keys to check once the architecture and cameras are known.
    """
    cfg = dict(cfg)
    where = f'{ckpt}/config.json'
    legacy = any(k in cfg for k in ('num_steps', 'resize_imgs_with_padding', 'proj_width'))
    pending: dict[str, Any] = {}
    if 'num_steps' in cfg:
        steps = cfg.pop('num_steps')
        if 'num_inference_steps' in cfg and cfg['num_inference_steps'] != steps:
            raise CheckpointError(f'{where}: num_steps={steps} (LeRobot <= 0.3) and num_inference_steps='
                                  f'{cfg["num_inference_steps"]} disagree: keep the one the policy was tuned '
                                  f'with and delete the other')
        cfg['num_inference_steps'] = steps
    if 'resize_imgs_with_padding' in cfg:
        pending['resize_imgs_with_padding'] = cfg.pop('resize_imgs_with_padding')
    if 'proj_width' in cfg:
        pending['proj_width'] = cfg.pop('proj_width')
    for key in ('adapt_to_pi_aloha', 'use_delta_joint_actions_aloha'):
        if cfg.pop(key, False):
            raise CheckpointError(f'{where}: {key}=true is not supported (its Aloha joint/gripper conversions '
                                  f'are not implemented); convert states and actions outside the policy')
    for key in LEGACY_INERT_KEYS:
        cfg.pop(key, None)
    if cfg.get('empty_cameras', 0):
        raise CheckpointError(f'{where}: empty_cameras={cfg["empty_cameras"]} is not supported: every camera '
                              f'the policy reads must be a real input (list them in input_features)')
    if legacy and cfg.get('n_action_steps', 50) != cfg.get('chunk_size', 50):
        # LeRobot <= 0.3 samples n_action_steps actions (noise, attention and output are that long).
        cfg['chunk_size'] = cfg['n_action_steps']
    if legacy:
        cfg.setdefault('dtype', 'bfloat16')  # <= 0.3 always ran PaliGemma and the expert layers in bf16
    return cfg, pending


def read_config(ckpt: Path, arch: dict[str, Any] | None, cameras: dict[str, tuple[int, int]] | None = None,
                stats: dict[str, np.ndarray] | None = None) -> tuple[Pi0Config, PolicyIO, str, dict[str, Any]]:
    """Parse config.json (+ optional hf_configs dict) into the architecture and the I/O shapes.

    ``cameras`` (key -> (H, W)) replaces the cameras config.json describes; ``stats`` (flat
    ``<feature>.<stat>`` arrays) gives the state/action widths when config.json has no features.
    """
    cfg, pending = upgrade_config(read_json(ckpt / 'config.json'), ckpt)
    if cfg.get('type') != 'pi0':
        raise CheckpointError(f'{ckpt}/config.json has type {cfg.get("type")!r}, expected "pi0"')
    try:
        config = Pi0Config.from_variants(
            cfg.get('paligemma_variant', 'gemma_2b'), cfg.get('action_expert_variant', 'gemma_300m'),
            chunk_size=cfg.get('chunk_size', 50), max_state_dim=cfg.get('max_state_dim', 32),
            max_action_dim=cfg.get('max_action_dim', 32), num_inference_steps=cfg.get('num_inference_steps', 10),
            min_period=cfg.get('min_period', 4e-3), max_period=cfg.get('max_period', 4.0),
            image_resolution=tuple(cfg.get('image_resolution', (224, 224))))
        if arch is not None:
            config = config.with_hf_configs(arch)
    except ValueError as e:
        raise CheckpointError(f'{ckpt}/config.json: {e}') from None
    if 'proj_width' in pending and pending['proj_width'] != config.expert.width:
        raise CheckpointError(f'{ckpt}/config.json: proj_width={pending["proj_width"]} differs from the action '
                              f'expert width {config.expert.width}: give the expert size with --arch hf_configs.json')
    norm = cfg.get('normalization_mapping', {})
    for feature, want in (('STATE', 'MEAN_STD'), ('ACTION', 'MEAN_STD'), ('VISUAL', 'IDENTITY')):
        if norm.get(feature, want) != want:
            raise CheckpointError(f'normalization {norm[feature]} for {feature} is not supported ({want} only)')
    if cfg.get('use_relative_actions'):
        raise CheckpointError('use_relative_actions=true checkpoints are not supported')
    inputs = cfg.get('input_features') or {}
    if cameras:
        camera_hw = tuple((int(h), int(w)) for h, w in cameras.values())
        camera_keys = tuple(cameras)
    else:
        listed = [(k, v) for k, v in inputs.items() if v.get('type') == 'VISUAL']
        if not listed:
            raise CheckpointError(
                f'{ckpt}/config.json describes no VISUAL input feature (camera), as the base lerobot/pi0 '
                f'checkpoint: pass the cameras the policy will see, in order, with their frame size: '
                f'`pi0-trt convert CHECKPOINT --out DIR --camera observation.images.base_0_rgb=480x640 '
                f'--camera ... --stats <dataset>/meta/stats.json` (load_checkpoint(cameras={{key: (H, W)}}))')
        for key, feat in listed:
            if len(feat.get('shape', ())) != 3 or 3 not in (feat['shape'][0], feat['shape'][-1]):
                raise CheckpointError(f'camera {key!r} has shape {feat.get("shape")}; expected [3, H, W]')
        camera_keys = tuple(k for k, _ in listed)
        camera_hw = tuple((int(f['shape'][1]), int(f['shape'][2])) if f['shape'][0] == 3
                          else (int(f['shape'][0]), int(f['shape'][1])) for _, f in listed)
    if 'resize_imgs_with_padding' in pending:
        size = pending['resize_imgs_with_padding']
        native = size is None and all(hw == config.image_resolution for hw in camera_hw)
        if not native and (size is None or tuple(size) != config.image_resolution):
            raise CheckpointError(
                f'{ckpt}/config.json: resize_imgs_with_padding={size} is not supported: images are resized '
                f'with padding to image_resolution {list(config.image_resolution)} (the only size SigLIP takes)')
    state_dim = _feature_width(inputs.get(STATE_KEY), stats, STATE_KEY)
    action_dim = _feature_width((cfg.get('output_features') or {}).get(ACTION_KEY), stats, ACTION_KEY)
    if state_dim is None or action_dim is None:
        raise CheckpointError(f'{ckpt}/config.json lacks {STATE_KEY} input or {ACTION_KEY} output features: pass '
                              f'the statistics of the dataset the policy was trained on (`pi0-trt convert '
                              f'--stats <dataset>/meta/stats.json`), which give both widths')
    if state_dim > config.max_state_dim or action_dim > config.max_action_dim:
        raise CheckpointError(f'state_dim {state_dim} / action_dim {action_dim} exceed max_state_dim '
                              f'{config.max_state_dim} / max_action_dim {config.max_action_dim}')
    io = PolicyIO(camera_keys=camera_keys, camera_hw=camera_hw, state_dim=state_dim,
                  action_dim=action_dim, chunk_size=config.chunk_size, max_action_dim=config.max_action_dim,
                  token_len=int(cfg.get('tokenizer_max_length', 48)),
                  n_action_steps=int(cfg.get('n_action_steps', config.chunk_size)))
    return config, io, str(cfg.get('dtype', 'float32')), cfg


def _feature_width(feature: dict[str, Any] | None, stats: dict[str, np.ndarray] | None, key: str) -> int | None:
    """Return the width of a 1-D feature from config.json, else from its mean in ``stats``; None if neither has it."""
    try:
        return int(feature['shape'][0])  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        pass
    if stats and f'{key}.mean' in stats:
        return int(np.asarray(stats[f'{key}.mean']).size)
    return None


def expected_shapes(config: Pi0Config) -> dict[str, tuple[int, ...]]:
    """Our Pi0Model parameter shapes for ``config`` (built on the meta device: no memory)."""
    import torch

    from pi0_trt_ros.model.pi0 import Pi0Model

    with torch.device('meta'):
        model = Pi0Model(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_checkpoint(path: str | Path, arch: str | Path | dict[str, Any] | None = None, *,
                    stats: str | Path | None = None,
                    cameras: dict[str, tuple[int, int]] | None = None) -> Checkpoint:
    """Parse and validate a LeRobot pi0 checkpoint directory (either layout).

    ``arch``: an `hf_configs.json` path or dict for non-standard sizes; when None, a file
    named ``hf_configs.json`` in the checkpoint directory or its parent is used if present.
    ``stats``: a statistics file (`read_stats_file`) used instead of the checkpoint's own.
    ``cameras``: camera key -> (H, W) in policy order, instead of config.json's cameras.
    """
    ckpt = Path(path)
    if not ckpt.is_dir():
        raise CheckpointError(f'checkpoint directory {ckpt} does not exist')
    if arch is None:
        for candidate in (ckpt / 'hf_configs.json', ckpt.parent / 'hf_configs.json'):
            if candidate.is_file():
                arch = candidate
                break
    if isinstance(arch, (str, Path)):
        arch = read_json(Path(arch))
    given_stats = read_stats_file(stats) if stats is not None else None
    config, io, dtype, _ = read_config(ckpt, arch, cameras, given_stats)
    layout = LAYOUT_PROCESSORS if (ckpt / 'policy_preprocessor.json').is_file() else LAYOUT_BUFFERS

    raw = map_safetensors(ckpt / 'model.safetensors')
    buffers = {k: raw.pop(k) for k in list(raw) if k.startswith(NORM_BUFFER_PREFIXES)}
    renamed: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        new = modern_key(key)
        if new in renamed:
            raise CheckpointError(f'model.safetensors holds {new!r} under both its old and new name')
        renamed[new] = value
    raw = renamed
    emb_key = _PG + 'model.language_model.embed_tokens.weight'
    if emb_key not in raw and _PG + 'lm_head.weight' in raw:  # tied in older checkpoints
        raw[emb_key] = raw[_PG + 'lm_head.weight']
    weights = {}
    for key, value in raw.items():
        ours = map_key(key)
        if ours is not None:
            weights[ours] = value
    want = expected_shapes(config)
    missing = sorted(set(want) - set(weights))
    unexpected = sorted(set(weights) - set(want))
    if missing or unexpected:
        more_missing = ' ...' if len(missing) > 8 else ''
        more_unexpected = ' ...' if len(unexpected) > 8 else ''
        raise CheckpointError(f'model.safetensors does not match the architecture: missing {missing[:8]}'
                              f'{more_missing}, unexpected {unexpected[:8]}{more_unexpected} '
                              f'(non-standard sizes need --arch hf_configs.json)')
    for key, shape in want.items():
        if tuple(weights[key].shape) != shape:
            raise CheckpointError(f'tensor {key!r} has shape {tuple(weights[key].shape)}, architecture '
                                  f'expects {shape} (non-standard sizes need --arch hf_configs.json)')

    if given_stats is not None:
        pre, post, source = given_stats, given_stats, str(stats)
    elif layout == LAYOUT_PROCESSORS:
        pre = _processor_state(ckpt, 'policy_preprocessor', 'normalizer_processor')
        post = _processor_state(ckpt, 'policy_postprocessor', 'unnormalizer_processor')
        source = 'processor files'
    else:
        pre = post = _buffer_stats(buffers)
        source = 'model.safetensors normalization buffers'
        if not pre:
            raise CheckpointError(
                f'{ckpt} has no normalization statistics (no policy_preprocessor.json, no normalize_inputs / '
                f'unnormalize_outputs buffers in model.safetensors): pass those of the dataset the policy was '
                f'trained on: `pi0-trt convert CHECKPOINT --out DIR --stats <dataset>/meta/stats.json` '
                f'(load_checkpoint(stats=...))')
    norm_stats = NormStats(
        state_mean=_stat(pre, f'{STATE_KEY}.mean', io.state_dim, source),
        state_std=_stat(pre, f'{STATE_KEY}.std', io.state_dim, source),
        action_mean=_stat(post, f'{ACTION_KEY}.mean', io.action_dim, source),
        action_std=_stat(post, f'{ACTION_KEY}.std', io.action_dim, source),
    )
    for name, value in dataclasses.asdict(norm_stats).items():
        if not np.isfinite(value).all():  # LeRobot <= 0.3 initializes the buffers to inf
            raise CheckpointError(f'{source}: {name} is not finite (statistics never set?): pass --stats '
                                  f'<dataset>/meta/stats.json')
    return Checkpoint(path=ckpt, config=config, io=io, dtype=dtype, weights=weights, stats=norm_stats, layout=layout)


# Our Pi0Model key prefix -> LeRobot key prefix, most specific first (inverse of KEY_PREFIXES).
_SAVE_PREFIXES: tuple[tuple[str, str], ...] = (
    ('vision.layers.', _PG + 'model.vision_tower.vision_model.encoder.layers.'),
    ('vision.post_layernorm.', _PG + 'model.vision_tower.vision_model.post_layernorm.'),
    ('vision.projector.', _PG + 'model.multi_modal_projector.linear.'),
    ('vision.', _PG + 'model.vision_tower.vision_model.embeddings.'),
    ('embed_tokens.', _PG + 'model.language_model.embed_tokens.'),
    ('vlm.', _PG + 'model.language_model.'),
    ('expert.', _EXPERT + 'model.'),
    ('', 'model.'),
)


def lerobot_key(key: str) -> str:
    """Our Pi0Model key -> LeRobot state_dict key."""
    for src, dst in _SAVE_PREFIXES:
        if key.startswith(src):
            return dst + key[len(src):]
    raise AssertionError('unreachable: the empty prefix matches every key')


def hf_configs(config: Pi0Config) -> dict[str, Any]:
    """Describe ``config`` as an `hf_configs.json` dict (the subset of transformers fields we read)."""
    def gemma(spec: Any) -> dict[str, Any]:
        return {'hidden_size': spec.width, 'num_hidden_layers': spec.depth, 'intermediate_size': spec.mlp_dim,
                'num_attention_heads': spec.num_heads, 'num_key_value_heads': spec.num_kv_heads,
                'head_dim': spec.head_dim, 'rms_norm_eps': spec.rms_eps, 'hidden_activation': 'gelu_pytorch_tanh',
                'rope_parameters': {'rope_theta': spec.rope_theta, 'rope_type': 'default'},
                'vocab_size': config.vocab_size, 'model_type': 'gemma'}

    v = config.vision
    vision = {'hidden_size': v.width, 'num_hidden_layers': v.depth, 'intermediate_size': v.mlp_dim,
              'num_attention_heads': v.num_heads, 'patch_size': v.patch_size, 'image_size': v.image_size,
              'layer_norm_eps': v.ln_eps, 'hidden_act': 'gelu_pytorch_tanh', 'model_type': 'siglip_vision_model',
              'vision_use_head': False}
    return {'paligemma': {'model_type': 'paligemma', 'text_config': gemma(config.vlm), 'vision_config': vision,
                          'projection_dim': config.vlm.width},
            'gemma_expert': gemma(config.expert)}


def save_checkpoint(out_dir: str | Path, config: Pi0Config, io: PolicyIO, weights: dict[str, np.ndarray],
                    stats: NormStats) -> Path:
    """Write a checkpoint directory in LeRobot's layout (loadable by LeRobot and by `load_checkpoint`).

    ``weights`` are our Pi0Model tensors as float32 numpy arrays. Writes `hf_configs.json` beside
    `config.json` so non-standard sizes load without `--arch`.
    """
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {lerobot_key(k): np.ascontiguousarray(v) for k, v in weights.items()}
    embed = tensors[_PG + 'model.language_model.embed_tokens.weight']
    tensors[_PG + 'lm_head.weight'] = embed.copy()  # LeRobot loads strictly: keep the unused heads
    tensors[_EXPERT + 'lm_head.weight'] = np.zeros((config.vocab_size, config.expert.width), np.float32)
    save_file(tensors, str(out / 'model.safetensors'))

    def feature(kind: str, shape: list[int]) -> dict[str, Any]:
        return {'type': kind, 'shape': shape}

    inputs = {key: feature('VISUAL', [3, h, w]) for key, (h, w) in zip(io.camera_keys, io.camera_hw)}
    inputs[STATE_KEY] = feature('STATE', [io.state_dim])
    outputs = {ACTION_KEY: feature('ACTION', [io.action_dim])}
    cfg = {'type': 'pi0', 'n_obs_steps': 1, 'input_features': inputs, 'output_features': outputs,
           'device': 'cpu', 'paligemma_variant': 'gemma_2b', 'action_expert_variant': 'gemma_300m',
           'dtype': 'float32', 'chunk_size': config.chunk_size, 'n_action_steps': io.n_action_steps,
           'max_state_dim': config.max_state_dim, 'max_action_dim': config.max_action_dim,
           'num_inference_steps': config.num_inference_steps, 'min_period': config.min_period,
           'max_period': config.max_period, 'use_relative_actions': False,
           'image_resolution': list(config.image_resolution), 'empty_cameras': 0,
           'normalization_mapping': {'VISUAL': 'IDENTITY', 'STATE': 'MEAN_STD', 'ACTION': 'MEAN_STD'},
           'tokenizer_max_length': io.token_len}
    (out / 'config.json').write_text(json.dumps(cfg, indent=4))
    (out / 'hf_configs.json').write_text(json.dumps(hf_configs(config), indent=1))

    features = {**inputs, **outputs}
    norm_map = cfg['normalization_mapping']
    pre_file = 'policy_preprocessor_step_6_normalizer_processor.safetensors'
    post_file = 'policy_postprocessor_step_0_unnormalizer_processor.safetensors'
    pre = {'name': 'policy_preprocessor', 'steps': [
        {'registry_name': 'rename_observations_processor', 'config': {'rename_map': {}}},
        {'registry_name': 'to_batch_processor', 'config': {}},
        {'registry_name': 'pi0_new_line_processor', 'config': {}},
        {'registry_name': 'tokenizer_processor', 'config': {
            'max_length': io.token_len, 'task_key': 'task', 'padding_side': 'right', 'padding': 'max_length',
            'truncation': True, 'tokenizer_name': 'google/paligemma-3b-pt-224'}},
        {'registry_name': 'device_processor', 'config': {'device': 'cpu', 'float_dtype': None}},
        {'registry_name': 'relative_actions_processor', 'config': {
            'enabled': False, 'exclude_joints': ['gripper'], 'action_names': None}},
        {'registry_name': 'normalizer_processor', 'config': {'eps': 1e-08, 'features': features,
                                                             'norm_map': norm_map},
         'state_file': pre_file}]}
    post = {'name': 'policy_postprocessor', 'steps': [
        {'registry_name': 'unnormalizer_processor', 'config': {'eps': 1e-08, 'features': outputs,
                                                               'norm_map': norm_map},
         'state_file': post_file},
        {'registry_name': 'device_processor', 'config': {'device': 'cpu', 'float_dtype': None}}]}
    (out / 'policy_preprocessor.json').write_text(json.dumps(pre, indent=2))
    (out / 'policy_postprocessor.json').write_text(json.dumps(post, indent=2))
    all_stats = {f'{STATE_KEY}.mean': stats.state_mean, f'{STATE_KEY}.std': stats.state_std,
                 f'{ACTION_KEY}.mean': stats.action_mean, f'{ACTION_KEY}.std': stats.action_std}
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in all_stats.items()}, str(out / pre_file))
    action_stats = {k: v for k, v in all_stats.items() if k.startswith(ACTION_KEY)}
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in action_stats.items()}, str(out / post_file))
    return out
