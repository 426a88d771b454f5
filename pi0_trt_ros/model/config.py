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

"""Architecture configuration of Pi0: named variants, a tiny test variant, and loaders.

One frozen dataclass drives the PyTorch model, the ONNX export and the engine build.
Sizes follow LeRobot 0.6.1 (`get_gemma_config`, the SigLIP So400m tower hard-coded in
`PaliGemmaWithExpertModel`); non-standard sizes come from an `hf_configs.json` file
(`{"paligemma": <PaliGemmaConfig dict>, "gemma_expert": <GemmaConfig dict>}`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

GEMMA_RMS_EPS = 1e-6
SIGLIP_LN_EPS = 1e-6
ROPE_THETA = 10000.0
PALIGEMMA_VOCAB = 257152


@dataclasses.dataclass(frozen=True)
class GemmaSpec:
    """One Gemma decoder stack (the VLM or the action expert)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_eps: float = GEMMA_RMS_EPS
    rope_theta: float = ROPE_THETA

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f'num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}')
        if self.head_dim % 2:
            raise ValueError(f'head_dim={self.head_dim} must be even for RoPE')


@dataclasses.dataclass(frozen=True)
class SiglipSpec:
    """The SigLIP vision tower (no pooling head)."""

    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    ln_eps: float = SIGLIP_LN_EPS

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


GEMMA_VARIANTS: dict[str, GemmaSpec] = {
    'gemma_2b': GemmaSpec(width=2048, depth=18, mlp_dim=16384, num_heads=8, num_kv_heads=1, head_dim=256),
    'gemma_300m': GemmaSpec(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
    # Tiny stacks for tests and the demo (same shapes as the LeRobot reference fixtures).
    'tiny_vlm': GemmaSpec(width=64, depth=2, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=16),
    'tiny_expert': GemmaSpec(width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=16),
}
SIGLIP_SO400M = SiglipSpec()
SIGLIP_TINY = SiglipSpec(width=32, depth=2, mlp_dim=64, num_heads=2)


@dataclasses.dataclass(frozen=True)
class Pi0Config:
    """Everything that fixes the network's shapes and its sampling schedule."""

    vlm: GemmaSpec
    expert: GemmaSpec
    vision: SiglipSpec = SIGLIP_SO400M
    vocab_size: int = PALIGEMMA_VOCAB
    chunk_size: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    num_inference_steps: int = 10
    min_period: float = 4e-3
    max_period: float = 4.0
    image_resolution: tuple[int, int] = (224, 224)

    def __post_init__(self) -> None:
        vlm, exp = self.vlm, self.expert
        # The expert attends over the VLM's per-layer KV cache: these must agree.
        for name in ('depth', 'head_dim', 'num_kv_heads'):
            if getattr(vlm, name) != getattr(exp, name):
                raise ValueError(f'VLM and action expert differ in {name}: '
                                 f'{getattr(vlm, name)} vs {getattr(exp, name)}')
        if vlm.num_heads != exp.num_heads:
            raise ValueError('VLM and action expert must have the same number of attention heads')
        if self.image_resolution != (self.vision.image_size, self.vision.image_size):
            raise ValueError(f'image_resolution {self.image_resolution} does not match the vision tower '
                             f'({self.vision.image_size})')

    @classmethod
    def from_variants(cls, paligemma_variant: str = 'gemma_2b', action_expert_variant: str = 'gemma_300m',
                      **kwargs: Any) -> 'Pi0Config':
        for v in (paligemma_variant, action_expert_variant):
            if v not in GEMMA_VARIANTS:
                raise ValueError(f'unknown Gemma variant {v!r}; known: {sorted(GEMMA_VARIANTS)}')
        return cls(vlm=GEMMA_VARIANTS[paligemma_variant], expert=GEMMA_VARIANTS[action_expert_variant], **kwargs)

    @classmethod
    def tiny(cls, **kwargs: Any) -> 'Pi0Config':
        """Describe the tiny random test model (VLM 64 wide, expert 32, SigLIP 32, 2 layers, vocab 1024)."""
        return cls(vlm=GEMMA_VARIANTS['tiny_vlm'], expert=GEMMA_VARIANTS['tiny_expert'], vision=SIGLIP_TINY,
                   vocab_size=1024, **kwargs)

    def with_hf_configs(self, hf: Mapping[str, Any]) -> 'Pi0Config':
        """Override sizes from an `hf_configs.json` dict (transformers config dicts)."""
        try:
            pali = hf['paligemma']
            text = pali['text_config']
            vis = pali['vision_config']
            exp = hf['gemma_expert']
        except (KeyError, TypeError) as e:
            raise ValueError(f'hf_configs needs paligemma.text_config, paligemma.vision_config and '
                             f'gemma_expert; missing {e}') from None
        return dataclasses.replace(
            self,
            vlm=_gemma_from_hf(text),
            expert=_gemma_from_hf(exp),
            vision=SiglipSpec(width=vis['hidden_size'], depth=vis['num_hidden_layers'],
                              mlp_dim=vis['intermediate_size'], num_heads=vis['num_attention_heads'],
                              patch_size=vis['patch_size'], image_size=vis['image_size'],
                              ln_eps=vis.get('layer_norm_eps', SIGLIP_LN_EPS)),
            vocab_size=text['vocab_size'],
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> 'Pi0Config':
        d = dict(d)
        d['vlm'] = GemmaSpec(**d['vlm'])
        d['expert'] = GemmaSpec(**d['expert'])
        d['vision'] = SiglipSpec(**d['vision'])
        d['image_resolution'] = tuple(d['image_resolution'])
        return cls(**d)


def _gemma_from_hf(c: Mapping[str, Any]) -> GemmaSpec:
    rope = c.get('rope_parameters') or {}
    theta = rope.get('rope_theta', c.get('rope_theta', ROPE_THETA))
    return GemmaSpec(width=c['hidden_size'], depth=c['num_hidden_layers'], mlp_dim=c['intermediate_size'],
                     num_heads=c['num_attention_heads'], num_kv_heads=c['num_key_value_heads'],
                     head_dim=c['head_dim'], rms_eps=c.get('rms_norm_eps', GEMMA_RMS_EPS), rope_theta=theta)
