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

"""``control_node --help``: a usage text built from the parameter specs, printed before ROS starts.

rclpy has no notion of ``--help``: without this the node starts, declares its parameters and dies
on the empty ``engine_dir``/``tokenizer`` it was given. The text lists every parameter with its
default and description (``params.py`` is the one source), so it cannot drift from the node.
"""

from __future__ import annotations

import json
from typing import Sequence

from pi0_trt_ros.node.params import camera_field_specs, parameter_specs

HELP_FLAGS = ('-h', '--help')


def wants_usage(argv: Sequence[str]) -> bool:
    """Tell whether ``argv`` (without the program name) asks for help before any ``--ros-args``."""
    for arg in argv:
        if arg == '--ros-args':
            return False
        if arg in HELP_FLAGS:
            return True
    return False


def usage_text(prog: str = 'control_node') -> str:
    """Return the usage text: how to run the node, then every parameter with default and description."""
    lines = [
        f'usage: ros2 run pi0_trt_ros {prog} --ros-args [--params-file control.yaml] [-p name:=value ...]',
        '       ros2 launch pi0_trt_ros control.launch.py [engine_dir:=DIR] [tokenizer:=FILE] [backend:=NAME]',
        '',
        'Pi0 policy as a ROS 2 controller: synchronized cameras + joint_states in, joint commands out.',
        'Every parameter is read-only (restart to change it); config/control.yaml sets them all.',
        '',
        'parameters (default, description):',
    ]
    for name, (default, description) in parameter_specs().items():
        lines.append(f'  {name} ({_show(default)})')
        lines.append(f'      {description}')
    lines.append('  camera.<name>.<field> for each name in cameras:')
    for field, (default, description) in camera_field_specs().items():
        lines.append(f'  camera.<name>.{field} ({_show(default)})')
        lines.append(f'      {description}')
    return '\n'.join(lines) + '\n'


def _show(value: object) -> str:
    """Write a default as in YAML/JSON (``true``, ``"tensorrt"``, ``["base", ...]``)."""
    return json.dumps(value)
