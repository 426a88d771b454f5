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

"""What an installer sees: package.xml keys rosdep resolves, setup.py, the node's --help."""

import os
from pathlib import Path
import subprocess
import sys
import xml.etree.ElementTree as ET

from pi0_trt_ros.testing.dds import domain_id

ROOT = Path(__file__).resolve().parent.parent
KEYS_FILE = Path(__file__).parent / 'fixtures' / 'rosdep_keys.txt'
DEPEND_TAGS = ('depend', 'build_depend', 'build_export_depend', 'buildtool_depend', 'buildtool_export_depend',
               'exec_depend', 'test_depend', 'doc_depend')
DOMAIN_ID = domain_id(93)  # this module's DDS domain, should the node ever get as far as rclpy.init


def known_rosdep_keys() -> set[str]:
    """Return the keys listed in the fixture (first word of each non-comment line)."""
    lines = (line.split('#', 1)[0].split() for line in KEYS_FILE.read_text().splitlines())
    return {words[0] for words in lines if words}


def package_depends() -> list[tuple[str, str]]:
    """Return (tag, key) for every dependency element of package.xml."""
    root = ET.parse(ROOT / 'package.xml').getroot()
    return [(el.tag, (el.text or '').strip()) for tag in DEPEND_TAGS for el in root.iter(tag)]


def test_every_dependency_is_a_known_rosdep_key() -> None:
    depends = package_depends()
    assert len(depends) > 10  # the parse found the dependencies
    unknown = [f'<{tag}>{key}</{tag}>' for tag, key in depends if key not in known_rosdep_keys()]
    assert not unknown, (f'{unknown} not in {KEYS_FILE.name}: rosdep would stop on them; check the key in '
                         'ros/rosdistro (jazzy/distribution.yaml or rosdep/*.yaml) and add it with its source')


def test_ament_python_is_a_build_type_not_a_dependency() -> None:
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.findtext('export/build_type') == 'ament_python'
    assert 'ament_python' not in {key for _, key in package_depends()}  # no rosdep key: `rosdep install` fails


def test_python_imports_of_ros_packages_are_declared() -> None:
    declared = {key for _, key in package_depends()}
    for module in ('rclpy', 'rcl_interfaces', 'rosidl_runtime_py', 'launch', 'launch_ros', 'ament_index_python',
                   'std_msgs', 'sensor_msgs', 'trajectory_msgs', 'diagnostic_msgs', 'builtin_interfaces',
                   'rosgraph_msgs'):
        assert module in declared, f'{module} is imported but not in package.xml'
    assert 'ros2launch' in declared  # the launch file is run with `ros2 launch`


def test_setup_py_has_no_tests_require() -> None:
    assert 'tests_require' not in (ROOT / 'setup.py').read_text()  # setuptools warns on every build


def test_control_node_help_prints_usage_and_exits_zero() -> None:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    for flag in ('--help', '-h'):
        done = subprocess.run([sys.executable, '-m', 'pi0_trt_ros.node.control_node', flag], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith('usage: ros2 run pi0_trt_ros control_node')
        assert '  deadline_ms (20.0)\n      every_set mode: compute budget per cycle' in done.stdout
        assert '  chunk_lead_ms (0.0)\n      chunk mode: start the next inference' in done.stdout
        assert '  camera.<name>.key ("observation.images.{name}_0_rgb")' in done.stdout
        assert 'invalid parameters' not in done.stdout + done.stderr


def test_help_after_ros_args_is_not_ours() -> None:
    from pi0_trt_ros.node.usage import wants_usage

    assert wants_usage(['--help']) and wants_usage(['-h', '--ros-args'])
    assert not wants_usage(['--ros-args', '-p', 'x:=1', '--help']) and not wants_usage([])
