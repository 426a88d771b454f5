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

"""Launch the fleet node: several robots (namespaces) served by one batched policy on one GPU.

    ros2 launch pi0_trt_ros fleet.launch.py robots:=[robot_a,robot_b,robot_c] device:=cuda:0
        engine_dir:=/path/to/export tokenizer:=/path/to/tokenizer.json  (one line)

Each robot gets the topics of a control node in its namespace (``/robot_a/cam_base/image_raw``,
``/robot_a/forward_position_controller/commands``, ``/robot_a/pi0_control/status``, ...). The
parameters come from ``config/control.yaml`` (every control parameter's default), then ``config``
(default ``config/fleet.yaml``: the shared policy, batch sizes, ``max_wait_ms``, and per-robot
sections ``/<robot>/pi0_control``), then the launch arguments given (non-empty), which apply to
the fleet node and every robot: ``robots``, ``device`` (``cuda:N``: one fleet process per GPU),
``batch_sizes``, ``max_wait_ms``, the control node's launch arguments (checkpoint, engine_dir,
tokenizer, backend, backend_options, the chunk timing) and use_sim_time. The process runs in no
namespace of its own (the robots' namespaces are absolute); ``fleet_name`` renames the fleet node
alone (a node-targeted remap: a plain ``__node``/``__ns`` remap would apply to every robot node of
the process), so that several fleet processes in one domain have distinct names.

The launch ends when the fleet node does, with its exit status (``pi0_trt_ros/launching.py``).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
import yaml

from pi0_trt_ros.launching import on_node_exit
from pi0_trt_ros.node.param_specs import FLEET_NODE_NAME, FLEET_PARAMETERS, launch_arguments

# name -> description: the fleet's own parameters marked ``launch``, the control node's launch arguments, use_sim_time.
OVERRIDABLE = {spec.name: spec.description for spec in FLEET_PARAMETERS if spec.launch}
OVERRIDABLE.update({spec.name: spec.description for spec in launch_arguments()})
OVERRIDABLE['use_sim_time'] = 'true to follow /clock (bag replay)'
LISTS = ('robots', 'batch_sizes')  # given as YAML lists: robots:=[robot_a,robot_b]


def _value(name: str, text: str) -> object:
    """Turn a launch argument's text into the parameter's value (lists and booleans parsed as YAML)."""
    if name == 'use_sim_time':
        return text.lower() == 'true'
    if name in LISTS:
        value = yaml.safe_load(text)
        return [str(v) for v in value] if name == 'robots' and isinstance(value, list) else value
    return text


def _fleet_node(context: LaunchContext) -> list:
    share = get_package_share_directory('pi0_trt_ros')
    fleet_name = LaunchConfiguration('fleet_name').perform(context)  # renames the fleet node, not its robots
    overrides = {}
    for name in OVERRIDABLE:
        text = LaunchConfiguration(name).perform(context)
        if text:
            overrides[name] = _value(name, text)
    node = Node(
        package='pi0_trt_ros',
        executable='fleet_node',
        parameters=[os.path.join(share, 'config', 'control.yaml'), LaunchConfiguration('config').perform(context),
                    overrides],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level').perform(context)] + (
            ['-r', f'{FLEET_NODE_NAME}:__node:={fleet_name}'] if fleet_name != FLEET_NODE_NAME else []),
        output='screen',
        emulate_tty=True,
    )
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_node_exit))]


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(get_package_share_directory('pi0_trt_ros'), 'config', 'fleet.yaml')
    arguments = [
        DeclareLaunchArgument('config', default_value=default_config,
                              description='fleet parameter YAML file (read after config/control.yaml)'),
        DeclareLaunchArgument('log_level', default_value='info', description="debug logs each cycle's timing"),
        DeclareLaunchArgument('fleet_name', default_value=FLEET_NODE_NAME,
                              description='name of the fleet node (unique per process in a domain; its config '
                              'section is /<fleet_name>)'),
    ]
    arguments += [DeclareLaunchArgument(name, default_value='', description=f'{text} (empty: from config)')
                  for name, text in OVERRIDABLE.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_fleet_node)])
