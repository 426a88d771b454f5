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

"""End to end: the live node, serving the trained demo policy, follows the synthetic robot.

The node runs in its own process (ONNX Runtime, one thread, `every_set` mode, the demo's
parameters) on this module's DDS domain; a synthetic JPEG bag of a robot the policy never saw is
replayed into it at its recorded timing while its trajectories and status are recorded. Each
published chunk is scored against where the joints actually went (the bag's joint states, by
header stamp): it must stay under the demo policy's tracking threshold. Unlike equality with the
offline replay, this fails when the node feeds the policy the wrong camera, BGR frames, joints
in the wrong order, wrong normalization or badly synchronized joint states
(test_demo_policy.py shows each of those goes over the threshold).
"""

import os
from pathlib import Path
import signal
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('rosbags')
pytest.importorskip('onnxruntime')
pytest.importorskip('torch')

from pi0_trt_ros.bag.bag_io import read_bag  # noqa: E402
from pi0_trt_ros.bag.offline import replay_offline  # noqa: E402
from pi0_trt_ros.bag.session import DEFAULT_RECORD_TOPICS, replay_and_record  # noqa: E402
from pi0_trt_ros.bag.synth import make_bag  # noqa: E402
from pi0_trt_ros.bag.tracking import read_joint_truth, tracking_error  # noqa: E402
from pi0_trt_ros.demo import demo_params  # noqa: E402
from pi0_trt_ros.export.onnx import export_policy  # noqa: E402
from pi0_trt_ros.node.params import params_from_yaml  # noqa: E402
from pi0_trt_ros.runners import make_runner  # noqa: E402
from pi0_trt_ros.testing.tiny_tokenizer import build_tiny_tokenizer_json  # noqa: E402
from pi0_trt_ros.tokenizer import Pi0Tokenizer  # noqa: E402
from pi0_trt_ros.train_tiny import ACTION_PERIOD_S, DEMO_POLICY_DIR, TRACKING_HORIZON, TRACKING_THRESHOLD_RAD  # noqa: E402,E501

DOMAIN_ID = 85
REPO = Path(__file__).resolve().parent.parent
TRAJECTORY = '/joint_trajectory_controller/joint_trajectory'
STATUS = '/pi0_control/status'
BAG_SEED = 7  # a robot the policy was not trained on


@pytest.fixture(scope='module')
def session(tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp('demo_e2e')
    engine = export_policy(DEMO_POLICY_DIR, root / 'engine', precision='fp32')
    tokenizer = build_tiny_tokenizer_json(root / 'tokenizer.json')
    bag = root / 'input_bag'
    make_bag(bag, duration_s=4.0, compressed=True, seed=BAG_SEED)
    config = root / 'control.yaml'
    config.write_text(yaml.safe_dump(demo_params(engine, tokenizer, compressed=True,
                                                 backend_options='{"threads": 1}')))
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    node = subprocess.Popen([sys.executable, '-m', 'pi0_trt_ros.node.control_node', '--ros-args',
                             '--params-file', str(config)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        recorded = root / 'recorded_bag'
        replay_and_record(bag, record_bag=recorded, record_topics=DEFAULT_RECORD_TOPICS, rate=1.0,
                          wait_for_subscribers_s=60.0, linger_s=1.0, domain_id=DOMAIN_ID)
    finally:
        os.killpg(node.pid, signal.SIGINT)
        log = node.communicate(timeout=30)[0]
    print(log[-2000:])
    assert node.returncode == 0, log
    params = params_from_yaml(config)
    with make_runner('onnxruntime', engine_dir=engine, threads=1) as runner:
        offline = replay_offline(bag, params, runner, Pi0Tokenizer.from_path(params.tokenizer, runner.io.token_len))
    return {'bag': bag, 'recorded': recorded, 'params': params, 'offline': offline}


def test_node_commands_track_the_joint_states(session):
    # rclpy reads the trajectories back (rosbags' Jazzy typestore disagrees on JointTrajectory's CDR size)
    from rclpy.serialization import deserialize_message
    from trajectory_msgs.msg import JointTrajectory

    msgs = [deserialize_message(m.msg, JointTrajectory) for m in read_bag(session['recorded'], [TRAJECTORY], raw=True)]
    assert msgs and all(list(m.joint_names) == list(session['params'].joint_names) for m in msgs)
    chunks = np.array([[p.positions for p in m.points] for m in msgs])  # [sets, T, J]
    status = np.array([m.msg.data for m in read_bag(session['recorded'], [STATUS])])
    # one chunk per synchronized set: the n-th chunk belongs to the n-th set of the bag
    offline = session['offline']
    assert len(chunks) == len(status) == len(offline.set_stamps_ns), offline.dropped
    truth = read_joint_truth(session['bag'], session['params'].joint_names)
    errors = tracking_error(chunks, offline.set_stamps_ns, truth, ACTION_PERIOD_S, TRACKING_HORIZON)
    print(f'node tracking error: first action {errors["first"]:.4f} rad, first {TRACKING_HORIZON} actions '
          f'{errors["horizon"]:.4f} rad over {errors["sets"]} sets')
    assert errors['sets'] > 80
    assert errors['first'] < TRACKING_THRESHOLD_RAD['first']
    assert errors['horizon'] < TRACKING_THRESHOLD_RAD['horizon']
