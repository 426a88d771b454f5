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

"""The user's ROS 2 command line in tests: ``ros2`` commands, a ``ros2 launch`` of its own, robots to serve.

For the tests that run the package as a user does (``ros2 launch``, ``ros2 topic pub``, ``ros2
param get``), with the package installed the way colcon installs it and the nodes' Python code
from the tree under test (``PYTHONPATH``). Everything stays on loopback, in the given DDS domain.
"""

from __future__ import annotations

import array
import filecmp
import os
from pathlib import Path
import signal
import subprocess
import threading
import time
from typing import Any, Sequence

import numpy as np

from pi0_trt_ros.testing.wait import wait_for

DISCOVERY_TIMEOUT = 120.0  # seconds; generous: a fresh CLI process on a loaded 2-core machine discovers slowly
PACKAGE = 'pi0_trt_ros'


def ros_env(domain_id: int, ros_home: Path, repo: Path) -> dict[str, str]:
    """Return the environment of CLI processes: ``domain_id`` on loopback, their own ROS_HOME, ``repo``'s code."""
    return dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
                ROS_HOME=str(ros_home), PYTHONPATH=str(repo), PYTHONUNBUFFERED='1', RCUTILS_COLORIZED_OUTPUT='0')


def ros2(env: dict[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run ``ros2 ARGS...`` and return what it did (output as text)."""
    return subprocess.run(['ros2', *args], env=env, capture_output=True, text=True, timeout=timeout)


def param_get(env: dict[str, str], node: str, name: str) -> str:
    """Return ``ros2 param get``'s output, retried (without the daemon) until discovery has seen the node."""
    end = time.monotonic() + DISCOVERY_TIMEOUT
    while True:
        got = ros2(env, 'param', 'get', '--no-daemon', '--spin-time', '2', node, name)
        if got.returncode == 0 or time.monotonic() > end:
            return got.stdout + got.stderr


def stale_install(repo: Path, files: Sequence[str], executables: Sequence[str]) -> bool:
    """Tell whether the installed package lacks one of ``executables`` or has other ``files`` than ``repo``'s."""
    share = subprocess.run(['ros2', 'pkg', 'prefix', '--share', PACKAGE], capture_output=True, text=True)
    prefix = subprocess.run(['ros2', 'pkg', 'prefix', PACKAGE], capture_output=True, text=True)
    if share.returncode != 0 or prefix.returncode != 0:
        return True
    installed = Path(share.stdout.strip())
    lib = Path(prefix.stdout.strip()) / 'lib' / PACKAGE
    return not (all((installed / f).is_file() and filecmp.cmp(installed / f, repo / f, shallow=False) for f in files)
                and all((lib / e).is_file() for e in executables))


class Launched:
    """``ros2 launch pi0_trt_ros LAUNCH_FILE ARGS...`` in its own session, its output collected."""

    def __init__(self, env: dict[str, str], launch_file: str, *args: str) -> None:
        self.proc = subprocess.Popen(['ros2', 'launch', PACKAGE, launch_file, *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.env = env
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
        """Wait until the output holds ``text`` (or the launch ended); fail with the output if it does not."""
        wait_for(lambda: text in self.output or self.proc.poll() is not None, timeout, repr(text))
        assert text in self.output, self.output

    def instruct(self, topic: str, text: str, logger: str, timeout: float = DISCOVERY_TIMEOUT) -> int:
        """``ros2 topic pub --once`` ``text`` on ``topic`` until node ``logger`` logs it; return the number of tries.

        ``--once`` waits for one matching subscription, publishes, and exits soon after. The
        publisher's side of discovery can finish before the node's: on a loaded machine the node
        may then match the publisher only after the message went by, and a volatile topic does not
        deliver earlier messages. So, as a user watching the log would, publish again until the
        node says ``[logger]: instruction: 'text'``; the same text again changes nothing in the node.
        """
        line = f"[{logger}]: instruction: '{text}'"
        end = time.monotonic() + timeout
        tries = 0
        while line not in self.output:
            if time.monotonic() > end or self.proc.poll() is not None:
                raise AssertionError(f'{logger} logged no instruction after {tries} tries:\n{self.output[-4000:]}')
            tries += 1
            pub = ros2(self.env, 'topic', 'pub', '--once', '--keep-alive', '1', topic, 'std_msgs/msg/String',
                       f"{{data: '{text}'}}", timeout=timeout)
            assert pub.returncode == 0, pub.stdout + pub.stderr
            heard = time.monotonic() + 5.0
            while line not in self.output and time.monotonic() < heard:
                time.sleep(0.05)
        return tries

    def stop(self, timeout: float = 30.0) -> int:
        """Ctrl-C as a terminal sends it, escalating if it hangs; return the exit status.

        SIGINT goes to the whole process group: launch and the node each get it, and launch
        forwards one more to the node, which must shut down cleanly all the same.
        """
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode


class CameraRobots:
    """Robots in this process, one per namespace: 3 cameras (640x480) and joint states at 10 Hz, commands recorded.

    They publish on the control node's default topics under ``/<namespace>/`` and record what
    arrives on ``/<namespace>/forward_position_controller/commands`` in ``commands[namespace]``.
    """

    def __init__(self, domain_id: int, namespaces: Sequence[str]) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray

        from pi0_trt_ros.node.spin_thread import SpinThread

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('camera_robots', context=self.context)
        cameras = ('base', 'left_wrist', 'right_wrist')
        self.cameras = {ns: [self.node.create_publisher(Image, f'/{ns}/cam_{name}/image_raw', 5) for name in cameras]
                        for ns in namespaces}
        self.joints = {ns: self.node.create_publisher(JointState, f'/{ns}/joint_states', 10) for ns in namespaces}
        self.commands: dict[str, list[list[float]]] = {ns: [] for ns in namespaces}
        for ns in namespaces:
            self.node.create_subscription(Float64MultiArray, f'/{ns}/forward_position_controller/commands',
                                          lambda m, ns=ns: self.commands[ns].append(list(m.data)), 50)
        rng = np.random.default_rng(0)
        self.images = []
        for _ in cameras:
            image = Image(height=480, width=640, encoding='bgr8', step=640 * 3)
            image.data = array.array('B', rng.integers(0, 256, 480 * 640 * 3, dtype=np.uint8).tobytes())
            self.images.append(image)
        self.joint_state = JointState(name=[f'joint_{i}' for i in range(1, 7)], position=[0.1] * 6)
        self.spinner = SpinThread(self.context, [self.node], name='camera_robots')
        self.spinner.start()
        self._stop = threading.Event()
        self._publisher = threading.Thread(target=self._publish, daemon=True)
        self._publisher.start()

    def _publish(self) -> None:
        while not self._stop.wait(0.1):  # 10 Hz sets per robot
            stamp: Any = self.node.get_clock().now().to_msg()
            self.joint_state.header.stamp = stamp
            for image in self.images:
                image.header.stamp = stamp
            for ns, joints in self.joints.items():
                joints.publish(self.joint_state)
                for pub, image in zip(self.cameras[ns], self.images):
                    pub.publish(image)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._publisher.join()
        self.spinner.stop()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
