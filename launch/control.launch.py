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
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from pi0_trt_ros.launching import declare_arguments, given_overrides, node_until_exit, overridable
from pi0_trt_ros.node.param_specs import launch_arguments

# name -> description: the node parameters marked ``launch`` in param_specs.py, and use_sim_time.
OVERRIDABLE = overridable(launch_arguments())


def _control_node(context: LaunchContext) -> list:
    return node_until_exit(context, 'control_node', [LaunchConfiguration('config').perform(context),
                                                     given_overrides(context, launch_arguments())],
                           name='pi0_control', namespace=LaunchConfiguration('namespace').perform(context))


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(get_package_share_directory('pi0_trt_ros'), 'config', 'control.yaml')
    arguments = declare_arguments(default_config, 'parameter YAML file', launch_arguments(), DeclareLaunchArgument(
        'namespace', default_value='', description='namespace of the node and its topics'))
    return LaunchDescription(arguments + [OpaqueFunction(function=_control_node)])
