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
default, description and constraint (``param_specs.py`` is the one source), so it cannot drift from the node.
"""

from __future__ import annotations

from typing import Sequence

from pi0_trt_ros.node.param_specs import CAMERA_FIELDS, PARAMETERS, ParamSpec

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
        'parameters (default, description, allowed values):',
    ]
    for spec in PARAMETERS:
        lines += _entry(spec.name, spec)
    lines.append('  camera.<name>.<field> for each name in cameras:')
    for spec in CAMERA_FIELDS:
        lines += _entry(f'camera.<name>.{spec.name}', spec)
    return '\n'.join(lines) + '\n'


def fleet_usage_text(prog: str = 'fleet_node') -> str:
    """Return the fleet node's usage text: how to run it, its own parameters, and where the others are."""
    from pi0_trt_ros.node.fleet_params import FLEET_PARAMETERS  # rclpy: only when this text is asked for

    lines = [
        f'usage: ros2 run pi0_trt_ros {prog} --ros-args --params-file control.yaml --params-file fleet.yaml',
        '       ros2 launch pi0_trt_ros fleet.launch.py robots:=[robot_a,robot_b] [device:=cuda:N] [config:=FILE]',
        '',
        'Several robots served by one batched Pi0 policy: each robot a namespace with the topics and',
        'parameters of the control node (<robot>/pi0_control; `control_node --help` lists them).',
        '',
        'fleet parameters (default, description, allowed values):',
    ]
    for spec in FLEET_PARAMETERS:
        lines += _entry(spec.name, spec)
    return '\n'.join(lines) + '\n'


def _entry(name: str, spec: ParamSpec) -> list[str]:
    """Two or three lines: name (default), description, and the constraint if there is one."""
    lines = [f'  {name} ({spec.show_default()})', f'      {spec.description}']
    if spec.constraint():
        lines.append(f'      allowed: {spec.constraint()}')
    return lines


def parameter_table() -> str:
    """Return ``docs/PARAMETERS.md``: one Markdown table row per parameter (name, type, default, allowed, ...)."""
    lines = [
        '# Parameters of the control node',
        '',
        'Generated from `pi0_trt_ros/node/param_specs.py` (`pi0_trt_ros.node.usage.parameter_table()`);',
        '`test/test_node_params.py` fails when this file is out of date. Every parameter is read-only',
        '(restart to change it); `config/control.yaml` sets each to its default, and `launch` marks the',
        'ones `control.launch.py` also takes as arguments. Durations are in milliseconds unless the name',
        'says otherwise.',
        '',
        '| name | type | default | allowed | launch | meaning |',
        '| --- | --- | --- | --- | --- | --- |',
    ]
    for spec in PARAMETERS:
        lines.append(_row(spec.name, spec))
    for spec in CAMERA_FIELDS:
        lines.append(_row(f'camera.<name>.{spec.name}', spec))
    return '\n'.join(lines) + '\n'


def _row(name: str, spec: ParamSpec) -> str:
    cells = (f'`{name}`', spec.type_name, f'`{spec.show_default()}`', spec.constraint(),
             'launch' if spec.launch else '', spec.description.replace('|', '\\|'))
    return '| ' + ' | '.join(cells) + ' |'
