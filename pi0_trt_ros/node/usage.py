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

"""``control_node --help``, ``fleet_node --help`` and ``docs/PARAMETERS.md``, built from the parameter specs.

rclpy has no notion of ``--help``: without this the node starts, declares its parameters and dies
on the empty ``engine_dir``/``tokenizer`` it was given. The texts list every parameter with its
default, description and constraint (``param_specs.py`` is the one source), so they cannot drift
from the nodes; the usage is printed before ROS starts.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from pi0_trt_ros.node.param_specs import (CAMERA_FIELDS, FLEET_NODE_NAME, FLEET_PARAMETERS, PARAMETERS, ParamSpec,
                                          SHARED_PARAMETERS)

HELP_FLAGS = ('-h', '--help')
TABLE_HEAD = ('| name | type | default | allowed | launch | meaning |', '| --- | --- | --- | --- | --- | --- |')


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
        *_entries(PARAMETERS),
        '  camera.<name>.<field> for each name in cameras:',
        *_entries(CAMERA_FIELDS, prefix='camera.<name>.'),
    ]
    return '\n'.join(lines) + '\n'


def fleet_usage_text(prog: str = 'fleet_node') -> str:
    """Return the fleet node's usage text: how to run it, its own parameters, and where the others are."""
    lines = [
        f'usage: ros2 run pi0_trt_ros {prog} --ros-args --params-file control.yaml --params-file fleet.yaml',
        '       ros2 launch pi0_trt_ros fleet.launch.py robots:=[robot_a,robot_b] [device:=cuda:N] [config:=FILE]',
        '',
        'Several robots served by one batched Pi0 policy: each robot a namespace with the topics and',
        'parameters of the control node (<robot>/pi0_control; `control_node --help` lists them).',
        '',
        'fleet parameters (default, description, allowed values):',
        *_entries(FLEET_PARAMETERS),
    ]
    return '\n'.join(lines) + '\n'


def _entries(specs: Iterable[ParamSpec], prefix: str = '') -> list[str]:
    """Two or three lines a parameter: name (default), description, and the constraint if there is one."""
    lines = []
    for spec in specs:
        lines += [f'  {prefix}{spec.name} ({spec.show_default()})', f'      {spec.description}']
        if spec.constraint():
            lines.append(f'      allowed: {spec.constraint()}')
    return lines


def parameter_table() -> str:
    """Return ``docs/PARAMETERS.md``: one Markdown table row per parameter (name, type, default, allowed, ...)."""
    shared = ', '.join(f'`{name}`' for name in SHARED_PARAMETERS)
    lines = [
        '# Parameters of the control and fleet nodes',
        '',
        'Generated from `pi0_trt_ros/node/param_specs.py` (`pi0_trt_ros.node.usage.parameter_table()`);',
        '`test/test_node_params.py` fails when this file is out of date. Every parameter is read-only',
        '(restart to change it); `config/control.yaml` sets each to its default, and `launch` marks the',
        'ones `control.launch.py` also takes as arguments. Durations are in milliseconds unless the name',
        'says otherwise.',
        '',
        *TABLE_HEAD,
        *(_row(spec) for spec in PARAMETERS),
        *(_row(spec, prefix='camera.<name>.') for spec in CAMERA_FIELDS),
        '',
        '## Fleet node',
        '',
        '`ros2 launch pi0_trt_ros fleet.launch.py robots:=[robot_a,robot_b] [device:=cuda:N] [config:=FILE]`',
        'starts `fleet_node`: several robots served by one batched policy in one process ([README, the',
        'fleet node](../README.md#many-robots-one-gpu-the-fleet-node)). Its parameters come from',
        '`config/control.yaml` (every parameter above, at its default), then `config/fleet.yaml` (or the',
        'file given as `config:=`), then the launch arguments given, which apply to every node of the',
        f'process. `fleet.yaml` has a section `/**` for every node, `/{FLEET_NODE_NAME}` for the fleet node and',
        '`/<robot>/pi0_control` for one robot: each robot is a node `/<robot>/pi0_control` that takes',
        "every parameter above, defaulting to the fleet node's, so its section overrides any of them for",
        'that robot, except the ones all robots of a fleet share (one policy, one process); a robot that',
        'sets one of these differently is refused:',
        f'{shared}.',
        '',
        f"The fleet node's own parameters (section `/{FLEET_NODE_NAME}`); `launch` marks the ones",
        "`fleet.launch.py` takes as arguments. It also takes the control node's launch arguments,",
        '`use_sim_time`, `config`, `log_level` and `fleet_name`.',
        '',
        *TABLE_HEAD,
        *(_row(spec) for spec in FLEET_PARAMETERS),
        '',
        '### One fleet process per GPU, several hosts',
        '',
        'A fleet process runs its policy on one GPU (`device:=cuda:N`). To use several GPUs, start one',
        'fleet process per GPU, each with its own `robots` (a robot is served by one process) and its own',
        "`fleet_name:=` (the fleet node's name, unique in the ROS domain; its section in the parameter",
        "file is then `/<fleet_name>`). Processes on other hosts reach the robots through ROS 2's own DDS,",
        'with no transport of this package: every process, on the robots too, in the same `ROS_DOMAIN_ID`,',
        'and a discovery that reaches the other hosts (`ROS_AUTOMATIC_DISCOVERY_RANGE`,',
        '`ROS_STATIC_PEERS`). The README\'s "Several GPUs, several hosts" gives the commands and the',
        'discovery setup.',
    ]
    return '\n'.join(lines) + '\n'


def _row(spec: ParamSpec, prefix: str = '') -> str:
    cells = (f'`{prefix}{spec.name}`', spec.type_name, f'`{spec.show_default()}`', spec.constraint(),
             'launch' if spec.launch else '', spec.description.replace('|', '\\|'))
    return '| ' + ' | '.join(cells) + ' |'
