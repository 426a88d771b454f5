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
colcon does it (``ament-pip-install``; the fixture re-installs when the installed launch or config
file differs from this tree). The node's Python code comes from this tree (PYTHONPATH).
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
DOMAIN_ID = domain_id(76)
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)

pytestmark = pytest.mark.skipif(shutil.which('ros2') is None, reason='the ros2 command line is not on PATH')

REPO = Path(__file__).resolve().parents[1]
NS = '/robot'
NODE = f'{NS}/pi0_control'
INSTRUCTION = 'pick up the red block'


def ros_env(tmp: Path) -> dict[str, str]:
    return dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
                ROS_HOME=str(tmp / 'ros_home'), PYTHONPATH=str(REPO), PYTHONUNBUFFERED='1',
                RCUTILS_COLORIZED_OUTPUT='0')


def ros2(env: dict[str, str], *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(['ros2', *args], env=env, capture_output=True, text=True, timeout=timeout)


DISCOVERY_TIMEOUT = 120.0  # seconds; generous: a loaded 2-core machine discovers slowly


def wait_for_node(env: dict[str, str], node: str = NODE) -> None:
    """Wait until ``ros2 node list`` (without the daemon) sees ``node``; discovery time is not asserted."""
    seen: list[str] = []

    def listed() -> bool:
        got = ros2(env, 'node', 'list', '--no-daemon', '--spin-time', '2', timeout=60)
        seen[:] = got.stdout.split()
        return node in seen

    wait_for(listed, DISCOVERY_TIMEOUT, f'{node} in `ros2 node list` (last seen: {seen})')


def param_get(env: dict[str, str], name: str) -> subprocess.CompletedProcess:
    """``ros2 param get`` without the daemon, retried until discovery has seen the node and its services."""
    wait_for_node(env)
    end = time.monotonic() + DISCOVERY_TIMEOUT
    while True:
        got = ros2(env, 'param', 'get', '--no-daemon', '--spin-time', '2', NODE, name, timeout=60)
        if got.returncode == 0 or time.monotonic() > end:
            return got


@pytest.fixture(scope='module')
def installed() -> None:
    """Make sure the installed launch/config files are this tree's (re-install if not)."""
    share = subprocess.run(['ros2', 'pkg', 'prefix', '--share', 'pi0_trt_ros'], capture_output=True, text=True)
    files = ['launch/control.launch.py', 'config/control.yaml']
    fresh = share.returncode == 0 and all(
        (Path(share.stdout.strip()) / f).is_file() and filecmp.cmp(Path(share.stdout.strip()) / f, REPO / f,
                                                                   shallow=False) for f in files)
    if not fresh:
        if shutil.which('ament-pip-install') is None:
            pytest.skip('pi0_trt_ros is not installed (or stale) and ament-pip-install is not available')
        subprocess.run(['ament-pip-install', str(REPO)], check=True, capture_output=True, timeout=300)


@pytest.fixture(scope='module')
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pi0_trt_ros.testing.tiny import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp('tiny'), seed=5)  # 3 cameras 640x480, 6 joints


@pytest.fixture(scope='module')
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    environment = ros_env(tmp_path_factory.mktemp('ros'))
    yield environment
    ros2(environment, 'daemon', 'stop')


class Launched:
    """``ros2 launch pi0_trt_ros control.launch.py ...`` in its own session, output collected."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(['ros2', 'launch', 'pi0_trt_ros', 'control.launch.py', *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return ''.join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> None:
        wait_for(lambda: text in self.output or self.proc.poll() is not None, timeout, repr(text))
        assert text in self.output, self.output

    def stop(self) -> int:
        """Ctrl-C as a terminal sends it, escalating if it hangs.

        SIGINT goes to the whole process group: launch and the node each get it, and launch
        forwards one more to the node, which must shut down cleanly all the same.
        """
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.05)


class Robot:
    """Three 640x480 cameras and joint states at the default topics, in the test process."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray

        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('robot', namespace=NS, context=self.context)
        self.cameras = [self.node.create_publisher(Image, f'cam_{n}/image_raw', 5)
                        for n in ('base', 'left_wrist', 'right_wrist')]
        self.joints = self.node.create_publisher(JointState, 'joint_states', 10)
        self.commands: list[list[float]] = []
        self.node.create_subscription(Float64MultiArray, 'forward_position_controller/commands',
                                      lambda m: self.commands.append(list(m.data)), 50)
        rng = np.random.default_rng(0)
        self.images = []
        for _ in self.cameras:
            img = Image(height=480, width=640, encoding='bgr8', step=640 * 3)
            img.data = array.array('B', rng.integers(0, 256, 480 * 640 * 3, dtype=np.uint8).tobytes())
            self.images.append(img)
        self.joint_state = JointState(name=[f'joint_{i}' for i in range(1, 7)], position=[0.1] * 6)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self.executor.spin, daemon=True),
                         threading.Thread(target=self._publish, daemon=True)]
        for t in self._threads:
            t.start()

    def _publish(self) -> None:
        while not self._stop.wait(0.1):  # 10 Hz sets
            stamp = self.node.get_clock().now().to_msg()
            self.joint_state.header.stamp = stamp
            self.joints.publish(self.joint_state)
            for pub, img in zip(self.cameras, self.images):
                img.header.stamp = stamp
                pub.publish(img)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._threads[1].join()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def test_launch_pub_echo_param_get(installed: None, bundle: Any, env: dict[str, str]) -> None:
    # Reliable sensor QoS: with best effort, a 640x480 frame is ~15 UDP fragments and one lost fragment
    # loses the frame; on a loaded 2-core machine whole seconds of sets were lost that way.
    launched = Launched(env, f'namespace:={NS[1:]}', 'backend:=onnxruntime', f'engine_dir:={bundle.engine_dir}',
                        f'tokenizer:={bundle.tokenizer}', 'sensor_qos_reliability:=reliable')
    robot = None
    try:
        launched.wait_for_line('waiting for an instruction', 60.0)
        got = param_get(env, 'backend')
        assert 'onnxruntime' in got.stdout, got.stdout + got.stderr  # launch argument given: overrides YAML
        got = param_get(env, 'deadline_ms')
        assert 'Double value is: 20.0' in got.stdout, got.stdout + got.stderr  # from config/control.yaml
        got = param_get(env, 'camera.left_wrist.topic')
        assert 'cam_left_wrist/image_raw' in got.stdout, got.stdout + got.stderr
        robot = Robot()
        time.sleep(1.0)
        assert robot.commands == []  # observations flow, but no instruction yet
        pub = ros2(env, 'topic', 'pub', '--once', f'{NS}/instruction', 'std_msgs/msg/String',
                   f"{{data: '{INSTRUCTION}'}}", timeout=60)
        assert pub.returncode == 0, pub.stdout + pub.stderr
        launched.wait_for_line(f"instruction: '{INSTRUCTION}'", 20.0)
        try:  # commands flow (seen by the robot) before the CLI is asked to see one: a failure says which side
            wait_for(lambda: bool(robot.commands), 60.0, 'commands at the robot')
        except AssertionError as err:
            raise AssertionError(f'{err}; node output:\n{launched.output[-4000:]}') from None
        echo = ros2(env, 'topic', 'echo', '--no-daemon', '--once', f'{NS}/forward_position_controller/commands',
                    'std_msgs/msg/Float64MultiArray', timeout=180)  # a fresh CLI process discovers on a loaded CPU
        assert echo.returncode == 0 and 'data:' in echo.stdout, echo.stdout + echo.stderr
        values = [float(line.lstrip('- ')) for line in echo.stdout.split('data:')[1].splitlines()
                  if line.strip().startswith('- ')]
        assert len(values) == 6 and all(abs(v) <= 3.14159 for v in values)  # clamped to the YAML limits
        wait_for(lambda: len(robot.commands) > 10, 20.0, 'commands at the robot')
    finally:
        if robot is not None:
            robot.close()
        rc = launched.stop()
    assert rc == 0, launched.output
    assert 'process has finished cleanly' in launched.output, launched.output


def test_launch_with_a_missing_export_fails_fast(installed: None, bundle: Any, env: dict[str, str]) -> None:
    launched = Launched(env, 'namespace:=broken', 'backend:=onnxruntime', 'engine_dir:=/nonexistent/export',
                        f'tokenizer:={bundle.tokenizer}')
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
    launched = Launched(env, 'namespace:=options', 'backend:=tensorrt', f'engine_dir:={bundle.engine_dir}',
                        'backend_options:={"threads": 1}', f'tokenizer:={bundle.tokenizer}')
    try:
        wait_for(lambda: launched.proc.poll() is not None, 120.0, 'ros2 launch to exit after the node failed')
    finally:
        rc = launched.stop()
    assert rc == 1, launched.output
    assert "backend_options 'threads' not taken by the tensorrt backend; it takes use_cuda_graph" in launched.output
    assert 'TypeError' not in launched.output and 'Traceback' not in launched.output, launched.output
