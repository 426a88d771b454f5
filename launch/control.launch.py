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

"""Launch the Pi0 control node with parameters from a YAML file.

    ros2 launch pi0_trt_ros control.launch.py engine_dir:=/path/to/export tokenizer:=/path/to/tokenizer.json

Arguments checkpoint, engine_dir, tokenizer, backend, backend_options, use_sim_time and the chunk
timing (chunk_lead_ms, chunk_lead_margin_ms, chunk_crossfade_steps: the parameters marked
``launch`` in ``pi0_trt_ros/node/param_specs.py``) override the YAML only when given (non-empty);
config picks another YAML file; namespace puts the node and its relative topics
under a namespace.

The launch ends when the node does, and its exit status says how the node ended: 0 after a clean
shutdown, non-zero when the node failed (a "start-up failed:" line above says why), so scripts
and supervisors can tell (``pi0_trt_ros/launching.py``).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from pi0_trt_ros.launching import on_node_exit
from pi0_trt_ros.node.param_specs import launch_arguments

# name -> description: the node parameters marked ``launch`` in param_specs.py, and use_sim_time.
OVERRIDABLE = {spec.name: spec.description for spec in launch_arguments()}
OVERRIDABLE['use_sim_time'] = 'true to follow /clock (bag replay)'


def _control_node(context: LaunchContext) -> list:
    overrides = {}
    for name in OVERRIDABLE:
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value.lower() == 'true' if name == 'use_sim_time' else value
    node = Node(
        package='pi0_trt_ros',
        executable='control_node',
        name='pi0_control',
        namespace=LaunchConfiguration('namespace').perform(context),
        parameters=[LaunchConfiguration('config').perform(context), overrides],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level').perform(context)],
        output='screen',
        emulate_tty=True,
    )
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_node_exit))]


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(get_package_share_directory('pi0_trt_ros'), 'config', 'control.yaml')
    arguments = [
        DeclareLaunchArgument('config', default_value=default_config, description='parameter YAML file'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of the node and its topics'),
        DeclareLaunchArgument('log_level', default_value='info', description="debug logs each cycle's timing"),
    ]
    arguments += [DeclareLaunchArgument(name, default_value='', description=f'{text} (empty: from config)')
                  for name, text in OVERRIDABLE.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_control_node)])
