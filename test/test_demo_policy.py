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

"""The trained demo policy follows the synthetic robot, and every input mistake makes it miss.

Offline, through the node's own pipeline (`replay_offline`: decoder, synchronizer, joint picker,
tokenizer) and the node's runner (ONNX Runtime, one thread), on a bag of a robot the policy never
saw. A run tracks when both of its errors (first action; first `TRACKING_HORIZON` actions) stay
under `TRACKING_THRESHOLD_RAD`. With the right inputs it does; with the camera mapping rotated,
the frames in BGR order, the joints in the wrong order, another joint's normalization
statistics, joint states half a second older than the frames, or an untrained policy, at least
one error goes over. So the end-to-end test, which holds the live node to the same thresholds,
catches each of these mistakes.
"""

import collections
import dataclasses
import os

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('rosbags')
pytest.importorskip('onnxruntime')
pytest.importorskip('torch')

from pi0_trt_ros.bag.offline import replay_offline  # noqa: E402
from pi0_trt_ros.bag.synth import make_bag  # noqa: E402
from pi0_trt_ros.bag.tracking import read_joint_truth, tracking_error  # noqa: E402
from pi0_trt_ros.demo import demo_params  # noqa: E402
from pi0_trt_ros.export.onnx import export_policy  # noqa: E402
from pi0_trt_ros.node.params import params_from_yaml  # noqa: E402
from pi0_trt_ros.runners import make_runner  # noqa: E402
from pi0_trt_ros.testing.dds import domain_id  # noqa: E402
from pi0_trt_ros.testing.tiny import make_tiny_bundle  # noqa: E402
from pi0_trt_ros.testing.tiny_tokenizer import build_tiny_tokenizer_json  # noqa: E402
from pi0_trt_ros.tokenizer import Pi0Tokenizer  # noqa: E402
from pi0_trt_ros.train_tiny import ACTION_PERIOD_S, DEMO_POLICY_DIR, TRACKING_HORIZON, TRACKING_THRESHOLD_RAD  # noqa: E402,E501

DOMAIN_ID = domain_id(86)  # no DDS traffic here (offline), but the module keeps a domain of its own
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
BAG_SEED = 5  # a robot the policy was not trained on (training draws robots from its own seeds)
STALE_SETS = 15  # sync fault: joint states from 15 sets (0.5 s at 30 Hz) before the frames


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp('demo_policy')
    engine = export_policy(DEMO_POLICY_DIR, root / 'engine', precision='fp32')
    tokenizer = build_tiny_tokenizer_json(root / 'tokenizer.json')
    bag = root / 'bag'
    make_bag(bag, duration_s=4.0, compressed=True, seed=BAG_SEED)
    doc = demo_params(engine, tokenizer, compressed=True, backend_options='{"threads": 1}')
    return {'root': root, 'engine': engine, 'tokenizer': tokenizer, 'bag': bag, 'doc': doc, 'yaml': yaml}


class StagingFault:
    """The node's runner with a mistake made to the staged inputs just before each call."""

    def __init__(self, runner, fault):
        self.runner, self.fault = runner, fault

    @property
    def io(self):
        return self.runner.io

    @property
    def staging(self):
        return self.runner.staging

    def infer(self):
        self.fault(self.runner.staging)
        return self.runner.infer()


def run(setup, engine=None, edit=None, fault=None) -> dict:
    """Offline replay of the bag with the given engine, parameter edit and staging fault; tracking errors."""
    import copy

    doc = copy.deepcopy(setup['doc'])
    if edit is not None:
        edit(doc['/**']['ros__parameters'])
    path = setup['root'] / 'control.yaml'
    path.write_text(setup['yaml'].safe_dump(doc))
    params = params_from_yaml(path)
    with make_runner('onnxruntime', engine_dir=engine or setup['engine'], threads=1) as runner:
        tokenizer = Pi0Tokenizer.from_path(params.tokenizer, runner.io.token_len)
        result = replay_offline(setup['bag'], params, runner if fault is None else StagingFault(runner, fault),
                                tokenizer)
    truth = read_joint_truth(setup['bag'], params.joint_names)  # commands are in the configured joint order
    errors = tracking_error(result.chunks, result.set_stamps_ns, truth, ACTION_PERIOD_S, TRACKING_HORIZON)
    print(f'tracking error: first action {errors["first"]:.4f} rad, first {TRACKING_HORIZON} actions '
          f'{errors["horizon"]:.4f} rad over {errors["sets"]} sets')
    return errors


def tracks(errors: dict) -> bool:
    return errors['first'] < TRACKING_THRESHOLD_RAD['first'] and errors['horizon'] < TRACKING_THRESHOLD_RAD['horizon']


def test_trained_policy_tracks_the_joints(setup):
    errors = run(setup)
    assert errors['sets'] > 80
    assert tracks(errors), (errors, TRACKING_THRESHOLD_RAD)


def _rotate_cameras(p):
    keys = [p['camera'][c]['key'] for c in p['cameras']]
    for cam, key in zip(p['cameras'], keys[1:] + keys[:1]):
        p['camera'][cam]['key'] = key


def _reverse_joints(p):
    p['joint_names'] = list(reversed(p['joint_names']))


def _bgr(staging):
    for image in staging.images:  # uint8 [1, H, W, 3]
        image[...] = image[..., ::-1].copy()


def _stale_state():
    history = collections.deque(maxlen=STALE_SETS + 1)

    def fault(staging):
        history.append(staging.state.copy())
        staging.state[...] = history[0]
    return fault


@pytest.mark.parametrize('mistake', ['camera order', 'colour order', 'joint order', 'stale joint state'])
def test_each_input_mistake_breaks_tracking(setup, mistake):
    edit = {'camera order': _rotate_cameras, 'joint order': _reverse_joints}.get(mistake)
    fault = {'colour order': _bgr, 'stale joint state': _stale_state()}.get(mistake)
    errors = run(setup, edit=edit, fault=fault)
    assert not tracks(errors), (mistake, errors, TRACKING_THRESHOLD_RAD)


def test_other_joints_normalization_stats_break_tracking(setup):
    from pi0_trt_ros.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(DEMO_POLICY_DIR)
    rolled = dataclasses.replace(ckpt.stats, state_mean=np.roll(ckpt.stats.state_mean, 1),
                                 state_std=np.roll(ckpt.stats.state_std, 1))
    wrong = save_checkpoint(setup['root'] / 'wrong_stats', ckpt.config, ckpt.io, ckpt.weights, rolled)
    errors = run(setup, engine=export_policy(wrong, setup['root'] / 'wrong_stats_engine', precision='fp32'))
    assert not tracks(errors), (errors, TRACKING_THRESHOLD_RAD)


def test_an_untrained_policy_does_not_track(setup):
    bundle = make_tiny_bundle(setup['root'] / 'random', precision='fp32')
    errors = run(setup, engine=bundle.engine_dir)
    assert errors['first'] > TRACKING_THRESHOLD_RAD['first']
    assert errors['horizon'] > TRACKING_THRESHOLD_RAD['horizon']
