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

"""The user's path, for real: ``ros2 launch``, ``ros2 topic pub --once``, ``ros2 topic echo``, ``ros2 param get``.

Needs the ROS 2 command line (skipped without ``ros2`` on PATH) and the package installed the way
colcon does it (``ament-pip-install``; the ``installed`` fixture re-installs when the installed
launch or config files differ from this tree). The node's Python code comes from this tree (PYTHONPATH).
"""

import os
import shutil
import time
from typing import Any

import pytest

from pi0_trt_ros.testing.dds import domain_id
from pi0_trt_ros.testing.ros_cli import CameraRobots, Launched, param_get, ros2
from pi0_trt_ros.testing.wait import wait_for

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # before rclpy initializes anything
DOMAIN_ID = domain_id(76)
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)

pytestmark = pytest.mark.skipif(shutil.which('ros2') is None, reason='the ros2 command line is not on PATH')

NS = '/robot'
NODE = f'{NS}/pi0_control'
INSTRUCTION = 'pick up the red block'


@pytest.fixture(scope='module')
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pi0_trt_ros.testing.tiny import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp('tiny'), seed=5)  # 3 cameras 640x480, 6 joints


def test_launch_pub_echo_param_get(installed: None, bundle: Any, env: dict[str, str]) -> None:
    # Reliable sensor QoS: with best effort, a 640x480 frame is ~15 UDP fragments and one lost fragment
    # loses the frame; on a loaded 2-core machine whole seconds of sets were lost that way.
    launched = Launched(env, 'control.launch.py', f'namespace:={NS[1:]}', 'backend:=onnxruntime',
                        f'engine_dir:={bundle.engine_dir}', f'tokenizer:={bundle.tokenizer}',
                        'sensor_qos_reliability:=reliable')
    robot = None
    try:
        launched.wait_for_line('waiting for an instruction', 60.0)
        got = param_get(env, NODE, 'backend')
        assert 'onnxruntime' in got, got  # launch argument given: overrides YAML
        got = param_get(env, NODE, 'deadline_ms')
        assert 'Double value is: 20.0' in got, got  # from config/control.yaml
        got = param_get(env, NODE, 'camera.left_wrist.topic')
        assert 'cam_left_wrist/image_raw' in got, got
        robot = CameraRobots(DOMAIN_ID, [NS[1:]])
        commands = robot.commands[NS[1:]]
        time.sleep(1.0)
        assert commands == []  # observations flow, but no instruction yet
        launched.instruct(f'{NS}/instruction', INSTRUCTION, f'{NS[1:]}.pi0_control')
        try:  # commands flow (seen by the robot) before the CLI is asked to see one: a failure says which side
            wait_for(lambda: bool(commands), 60.0, 'commands at the robot')
        except AssertionError as err:
            raise AssertionError(f'{err}; node output:\n{launched.output[-4000:]}') from None
        echo = ros2(env, 'topic', 'echo', '--no-daemon', '--once', f'{NS}/forward_position_controller/commands',
                    'std_msgs/msg/Float64MultiArray', timeout=180)  # a fresh CLI process discovers on a loaded CPU
        assert echo.returncode == 0 and 'data:' in echo.stdout, echo.stdout + echo.stderr
        values = [float(line.lstrip('- ')) for line in echo.stdout.split('data:')[1].splitlines()
                  if line.strip().startswith('- ')]
        assert len(values) == 6 and all(abs(v) <= 3.14159 for v in values)  # clamped to the YAML limits
        wait_for(lambda: len(commands) > 10, 20.0, 'commands at the robot')
    finally:
        if robot is not None:
            robot.close()
        rc = launched.stop()
    assert rc == 0, launched.output
    assert 'process has finished cleanly' in launched.output, launched.output


def test_launch_with_a_missing_export_fails_fast(installed: None, bundle: Any, env: dict[str, str]) -> None:
    launched = Launched(env, 'control.launch.py', 'namespace:=broken', 'backend:=onnxruntime',
                        'engine_dir:=/nonexistent/export', f'tokenizer:={bundle.tokenizer}')
    try:
        # the launch ends by itself when the node fails; only a hang would need the SIGINT of stop()
        wait_for(lambda: launched.proc.poll() is not None, 120.0, 'ros2 launch to exit after the node failed')
    finally:
        rc = launched.stop()
    assert 'start-up failed' in launched.output and 'pi0-trt export' in launched.output
    assert 'exit code 1' in launched.output
    assert rc == 1, launched.output  # scripts and supervisors see the failure
    assert 'control_node-1 exited with code 1' in launched.output, launched.output
    assert 'Traceback' not in launched.output, launched.output


def test_launch_with_foreign_backend_options_fails_naming_the_options(installed: None, bundle: Any,
                                                                      env: dict[str, str]) -> None:
    launched = Launched(env, 'control.launch.py', 'namespace:=options', 'backend:=tensorrt',
                        f'engine_dir:={bundle.engine_dir}', 'backend_options:={"threads": 1}',
                        f'tokenizer:={bundle.tokenizer}')
    try:
        wait_for(lambda: launched.proc.poll() is not None, 120.0, 'ros2 launch to exit after the node failed')
    finally:
        rc = launched.stop()
    assert rc == 1, launched.output
    assert "backend_options 'threads' not taken by the tensorrt backend; it takes use_cuda_graph" in launched.output
    assert 'TypeError' not in launched.output and 'Traceback' not in launched.output, launched.output
