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

"""`pi0-trt train-tiny`: seeded training gives the same checkpoint twice; the shipped policy is its output."""

import json

import numpy as np
import pytest

pytest.importorskip('torch')

from pi0_trt_ros.checkpoint import load_checkpoint  # noqa: E402
from pi0_trt_ros.train_tiny import DEMO_CONFIG, DEMO_POLICY_DIR, train, TrainSettings  # noqa: E402


def _short(out_dir, seed=0):
    return TrainSettings(out_dir=out_dir, seed=seed, samples=6, steps=3, batch=4, draws=2, warmup=1, eval_samples=4)


def test_training_is_deterministic_for_a_seed(tmp_path):
    a = load_checkpoint(train(_short(tmp_path / 'a'), log=lambda _: None))
    b = load_checkpoint(train(_short(tmp_path / 'b'), log=lambda _: None))
    c = load_checkpoint(train(_short(tmp_path / 'c', seed=1), log=lambda _: None))
    assert a.config == DEMO_CONFIG
    for key, value in a.weights.items():
        np.testing.assert_array_equal(value, b.weights[key], err_msg=key)
    assert any(not np.array_equal(value, c.weights[key]) for key, value in a.weights.items())
    np.testing.assert_array_equal(a.stats.state_mean, b.stats.state_mean)
    report = json.loads((tmp_path / 'a' / 'training.json').read_text())
    assert report['settings']['steps'] == 3 and np.isfinite(report['loss']['last_100'])


def test_shipped_demo_policy_is_a_trained_demo_config_checkpoint():
    ckpt = load_checkpoint(DEMO_POLICY_DIR)
    assert ckpt.config == DEMO_CONFIG
    assert (ckpt.io.camera_hw, ckpt.io.state_dim, ckpt.io.action_dim) == (((480, 640),) * 3, 6, 6)
    report = json.loads((DEMO_POLICY_DIR / 'training.json').read_text())
    assert report['loss']['last_100'] < 0.2 * report['loss']['first_100']
    assert sum(f.stat().st_size for f in DEMO_POLICY_DIR.iterdir()) < 4 << 20  # small enough to ship
