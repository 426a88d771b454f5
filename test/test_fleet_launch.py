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

"""A fleet the user's way: ``ros2 launch pi0_trt_ros fleet.launch.py robots:=[...]``, ``ros2 topic pub``, ``param get``.

Needs the ROS 2 command line (skipped without ``ros2`` on PATH) and the package installed the way
colcon does it (``ament-pip-install``; the ``installed`` fixture re-installs when the installed
launch or config files, or the ``fleet_node`` executable, are not this tree's). The nodes' Python
code comes from this tree.
"""

import os
from pathlib import Path
import shutil
from typing import Any

import pytest

from pi0_trt_ros.testing.dds import domain_id
from pi0_trt_ros.testing.ros_cli import CameraRobots, Launched, param_get
from pi0_trt_ros.testing.wait import wait_for

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # before rclpy initializes anything
DOMAIN_ID = domain_id(53)
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)

pytestmark = pytest.mark.skipif(shutil.which('ros2') is None, reason='the ros2 command line is not on PATH')

ROBOTS = ('arm_a', 'arm_b')


@pytest.fixture(scope='module')
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pi0_trt_ros.testing.tiny import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp('tiny'), seed=5, batch_sizes=(1, 2))  # 640x480 cameras


def test_fleet_launch_serves_each_robot_with_its_own_parameters(
        installed: None, bundle: Any, env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / 'fleet.yaml'
    config.write_text('/fleet_test:\n  ros__parameters:\n    batch_sizes: [1, 2]\n    max_wait_ms: 5.0\n'
                      '/arm_b/pi0_control:\n  ros__parameters:\n    deadline_ms: 35.0\n')
    launched = Launched(env, 'fleet.launch.py', f'robots:=[{",".join(ROBOTS)}]', f'config:={config}',
                        'fleet_name:=fleet_test', 'backend:=onnxruntime', f'engine_dir:={bundle.engine_dir}',
                        f'tokenizer:={bundle.tokenizer}', 'sensor_qos_reliability:=reliable', 'device:=cpu')
    robots = None
    try:
        launched.wait_for_line('serving 2 robots', 120.0)
        assert 'serving 2 robots: /arm_a/pi0_control, /arm_b/pi0_control' in launched.output, launched.output
        assert 'Double value is: 35.0' in param_get(env, '/arm_b/pi0_control', 'deadline_ms')  # its own section
        assert 'Double value is: 20.0' in param_get(env, '/arm_a/pi0_control', 'deadline_ms')  # control.yaml's
        assert 'onnxruntime' in param_get(env, '/arm_a/pi0_control', 'backend')  # launch argument, every node
        assert 'Integer values are: [1, 2]' in param_get(env, '/fleet_test', 'batch_sizes')  # renamed, own section
        robots = CameraRobots(DOMAIN_ID, ROBOTS)
        for ns in ROBOTS:  # each robot's node hears its own instruction
            launched.instruct(f'/{ns}/instruction', 'pick up the red block', f'{ns}.pi0_control')
        try:
            wait_for(lambda: all(len(robots.commands[ns]) > 10 for ns in ROBOTS), 120.0, 'commands at both robots')
        except AssertionError as err:
            raise AssertionError(f'{err}; fleet output:\n{launched.output[-4000:]}') from None
        assert all(abs(v) <= 3.14159 for ns in ROBOTS for c in robots.commands[ns] for v in c)  # clamped
    finally:
        if robots is not None:
            robots.close()
        rc = launched.stop()  # Ctrl-C as a terminal sends it, to the launch and the fleet process
    assert rc == 0, launched.output
    assert 'process has finished cleanly' in launched.output and 'Traceback' not in launched.output, launched.output
