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
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from pi0_trt_ros.launching import declare_arguments, given_overrides, node_until_exit, overridable
from pi0_trt_ros.node.param_specs import FLEET_NODE_NAME, FLEET_PARAMETERS, launch_arguments

# The fleet's own parameters marked ``launch``, then the control node's launch arguments.
LAUNCH_PARAMETERS = tuple(spec for spec in FLEET_PARAMETERS if spec.launch) + launch_arguments()
OVERRIDABLE = overridable(LAUNCH_PARAMETERS)  # name -> description, and use_sim_time


def _fleet_node(context: LaunchContext) -> list:
    share = get_package_share_directory('pi0_trt_ros')
    fleet_name = LaunchConfiguration('fleet_name').perform(context)  # renames the fleet node, not its robots
    parameters = [os.path.join(share, 'config', 'control.yaml'), LaunchConfiguration('config').perform(context),
                  given_overrides(context, LAUNCH_PARAMETERS)]
    return node_until_exit(context, 'fleet_node', parameters,
                           remaps=[f'{FLEET_NODE_NAME}:__node:={fleet_name}'] if fleet_name != FLEET_NODE_NAME else [])


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(get_package_share_directory('pi0_trt_ros'), 'config', 'fleet.yaml')
    arguments = declare_arguments(
        default_config, 'fleet parameter YAML file (read after config/control.yaml)', LAUNCH_PARAMETERS,
        DeclareLaunchArgument('fleet_name', default_value=FLEET_NODE_NAME,
                              description='name of the fleet node (unique per process in a domain; its config '
                              'section is /<fleet_name>)'))
    return LaunchDescription(arguments + [OpaqueFunction(function=_fleet_node)])
