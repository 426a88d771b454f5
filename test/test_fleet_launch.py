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
colcon does it (``ament-pip-install``; re-installed when the installed launch or config files, or
the ``fleet_node`` executable, are not this tree's). The nodes' Python code comes from this tree.
"""

import array
import filecmp
import os
from pathlib import Path
import shutil
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from pi0_trt_ros.testing.dds import domain_id

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # before rclpy initializes anything
DOMAIN_ID = domain_id(53)
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)

pytestmark = pytest.mark.skipif(shutil.which('ros2') is None, reason='the ros2 command line is not on PATH')

REPO = Path(__file__).resolve().parents[1]
ROBOTS = ('arm_a', 'arm_b')
DISCOVERY_TIMEOUT = 120.0  # seconds; generous: a loaded 2-core machine discovers slowly
INSTALLED_FILES = ('launch/control.launch.py', 'launch/fleet.launch.py', 'config/control.yaml', 'config/fleet.yaml')


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.05)


def ros2(env: dict[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(['ros2', *args], env=env, capture_output=True, text=True, timeout=timeout)


def param_get(env: dict[str, str], node: str, name: str) -> str:
    """``ros2 param get`` without the daemon, retried until discovery has seen the node's services."""
    end = time.monotonic() + DISCOVERY_TIMEOUT
    while True:
        got = ros2(env, 'param', 'get', '--no-daemon', '--spin-time', '2', node, name)
        if got.returncode == 0 or time.monotonic() > end:
            return got.stdout + got.stderr


@pytest.fixture(scope='module')
def installed() -> None:
    """Make sure the installed launch/config files and the fleet_node executable are this tree's."""
    share = subprocess.run(['ros2', 'pkg', 'prefix', '--share', 'pi0_trt_ros'], capture_output=True, text=True)
    prefix = subprocess.run(['ros2', 'pkg', 'prefix', 'pi0_trt_ros'], capture_output=True, text=True)
    fresh = share.returncode == 0 and all(
        (Path(share.stdout.strip()) / f).is_file() and filecmp.cmp(Path(share.stdout.strip()) / f, REPO / f,
                                                                   shallow=False) for f in INSTALLED_FILES)
    fresh = fresh and (Path(prefix.stdout.strip()) / 'lib' / 'pi0_trt_ros' / 'fleet_node').is_file()
    if not fresh:
        if shutil.which('ament-pip-install') is None:
            pytest.skip('pi0_trt_ros is not installed (or stale) and ament-pip-install is not available')
        subprocess.run(['ament-pip-install', str(REPO)], check=True, capture_output=True, timeout=300)


@pytest.fixture(scope='module')
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pi0_trt_ros.testing.tiny import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp('tiny'), seed=5, batch_sizes=(1, 2))  # 640x480 cameras


@pytest.fixture(scope='module')
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp('ros')
    environment = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
                       ROS_HOME=str(tmp / 'ros_home'), PYTHONPATH=str(REPO), PYTHONUNBUFFERED='1',
                       RCUTILS_COLORIZED_OUTPUT='0')
    yield environment
    ros2(environment, 'daemon', 'stop')


class Robots:
    """Three 640x480 cameras and joint states per robot namespace, at the default topics, in this process."""

    def __init__(self, namespaces: tuple[str, ...]) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray

        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('robots', context=self.context)
        self.cameras = {ns: [self.node.create_publisher(Image, f'/{ns}/cam_{n}/image_raw', 5)
                             for n in ('base', 'left_wrist', 'right_wrist')] for ns in namespaces}
        self.joints = {ns: self.node.create_publisher(JointState, f'/{ns}/joint_states', 10) for ns in namespaces}
        self.commands: dict[str, list[list[float]]] = {ns: [] for ns in namespaces}
        for ns in namespaces:
            self.node.create_subscription(Float64MultiArray, f'/{ns}/forward_position_controller/commands',
                                          lambda m, ns=ns: self.commands[ns].append(list(m.data)), 50)
        rng = np.random.default_rng(0)
        self.image = Image(height=480, width=640, encoding='bgr8', step=640 * 3)
        self.image.data = array.array('B', rng.integers(0, 256, 480 * 640 * 3, dtype=np.uint8).tobytes())
        self.joint_state = JointState(name=[f'joint_{i}' for i in range(1, 7)], position=[0.1] * 6)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self.executor.spin, daemon=True),
                         threading.Thread(target=self._publish, daemon=True)]
        for t in self._threads:
            t.start()

    def _publish(self) -> None:
        while not self._stop.wait(0.1):  # 10 Hz sets per robot
            stamp = self.node.get_clock().now().to_msg()
            self.joint_state.header.stamp = self.image.header.stamp = stamp
            for ns, joints in self.joints.items():
                joints.publish(self.joint_state)
                for pub in self.cameras[ns]:
                    pub.publish(self.image)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._threads[1].join()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def test_fleet_launch_serves_each_robot_with_its_own_parameters(
        installed: None, bundle: Any, env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / 'fleet.yaml'
    config.write_text('/fleet_test:\n  ros__parameters:\n    batch_sizes: [1, 2]\n    max_wait_ms: 5.0\n'
                      '/arm_b/pi0_control:\n  ros__parameters:\n    deadline_ms: 35.0\n')
    proc = subprocess.Popen(['ros2', 'launch', 'pi0_trt_ros', 'fleet.launch.py', f'robots:=[{",".join(ROBOTS)}]',
                             f'config:={config}', 'fleet_name:=fleet_test', 'backend:=onnxruntime',
                             f'engine_dir:={bundle.engine_dir}', f'tokenizer:={bundle.tokenizer}',
                             'sensor_qos_reliability:=reliable', 'device:=cpu'],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, '')), daemon=True)
    reader.start()
    robots = None
    try:
        wait_for(lambda: 'serving 2 robots' in ''.join(lines) or proc.poll() is not None, 120.0, 'the fleet')
        assert 'serving 2 robots: /arm_a/pi0_control, /arm_b/pi0_control' in ''.join(lines), ''.join(lines)
        assert 'Double value is: 35.0' in param_get(env, '/arm_b/pi0_control', 'deadline_ms')  # its own section
        assert 'Double value is: 20.0' in param_get(env, '/arm_a/pi0_control', 'deadline_ms')  # control.yaml's
        assert 'onnxruntime' in param_get(env, '/arm_a/pi0_control', 'backend')  # launch argument, every node
        assert 'Integer values are: [1, 2]' in param_get(env, '/fleet_test', 'batch_sizes')  # renamed, own section
        robots = Robots(ROBOTS)
        for ns in ROBOTS:
            pub = ros2(env, 'topic', 'pub', '--once', f'/{ns}/instruction', 'std_msgs/msg/String',
                       "{data: 'pick up the red block'}", timeout=120)
            assert pub.returncode == 0, pub.stdout + pub.stderr
        try:
            wait_for(lambda: all(len(robots.commands[ns]) > 10 for ns in ROBOTS), 120.0, 'commands at both robots')
        except AssertionError as err:
            raise AssertionError(f'{err}; fleet output:\n{"".join(lines)[-4000:]}') from None
        assert all(abs(v) <= 3.14159 for ns in ROBOTS for c in robots.commands[ns] for v in c)  # clamped
    finally:
        if robots is not None:
            robots.close()
        if proc.poll() is None:  # Ctrl-C as a terminal sends it, to the launch and the fleet process
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(timeout=5)
    output = ''.join(lines)
    assert proc.returncode == 0, output
    assert 'process has finished cleanly' in output and 'Traceback' not in output, output
