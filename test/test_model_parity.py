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

"""Stage-by-stage parity of the PyTorch Pi0 with LeRobot 0.6.1's own pi0 (float32, 1e-4).

Fixtures under test/fixtures/lerobot_seed*/ were produced by LeRobot itself
(shared tools `lerobot_ref/make_fixture.py --seed N`): inputs, every intermediate and the chunk.
"""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from pi0_trt_ros.checkpoint import load_checkpoint  # noqa: E402

FIXTURES = sorted((Path(__file__).parent / 'fixtures').glob('lerobot_seed*'))
TOL = 1e-4


@pytest.fixture(scope='module', params=FIXTURES, ids=lambda p: p.name)
def case(request):
    root = request.param
    policy = load_checkpoint(root / 'policy', arch=root / 'hf_configs.json').build_policy()
    return policy, dict(np.load(root / 'fixture.npz'))


def frames_hwc(f):
    return [torch.from_numpy(np.ascontiguousarray(f[f'image_u8.{i}'].transpose(0, 2, 3, 1))) for i in range(3)]


def test_fixtures_present():
    assert len(FIXTURES) >= 2


def test_preprocessed_images_match_lerobot(case):
    policy, f = case
    for i, img in enumerate(policy.preprocess_images(frames_hwc(f))):
        np.testing.assert_allclose(img.numpy(), f[f'image_pre.{i}'], atol=TOL, rtol=0)


def test_state_normalization_matches_lerobot(case):
    policy, f = case
    state = policy.normalize_state(torch.from_numpy(f['state_raw']))
    np.testing.assert_allclose(state.numpy(), f['state_padded'], atol=TOL, rtol=0)


def test_every_denoising_velocity_matches_lerobot(case):
    policy, f = case
    m = policy.model
    with torch.no_grad():
        images = [torch.from_numpy(f[f'image_pre.{i}']) for i in range(3)]
        k_cache, v_cache, pad = m.fill_cache(images, torch.from_numpy(f['lang_tokens']),
                                             torch.from_numpy(f['lang_mask']))
        np.testing.assert_array_equal(pad.numpy(), f['prefix_pad_masks'])
        mask, cos, sin = m.suffix_attention(pad)
        state = torch.from_numpy(f['state_padded'])
        np.testing.assert_allclose(1.0 + np.arange(10) * -0.1, f['denoise.t'][:, 0], atol=1e-7)
        for k in range(m.config.num_inference_steps):
            v_t = m.denoise_step(state, torch.from_numpy(f['denoise.x_t'][k]), m.time_embeddings[k],
                                 k_cache, v_cache, mask, cos, sin)
            err = np.abs(v_t.numpy() - f['denoise.v_t'][k]).max()
            assert err <= TOL, f'step {k}: max abs error {err}'


def test_action_chunk_matches_lerobot(case):
    policy, f = case
    with torch.no_grad():
        actions = policy(*frames_hwc(f), torch.from_numpy(f['state_raw']), torch.from_numpy(f['lang_tokens']),
                         torch.from_numpy(f['lang_mask']), torch.from_numpy(f['noise']))
    assert actions.shape == f['actions'].shape == (1, 50, 6)
    assert np.abs(actions.numpy() - f['actions']).max() <= TOL
