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

"""What the package's launch files share: their arguments, and a node whose end ends the launch.

Arguments: ``config`` (the parameter file), ``log_level``, and one argument per parameter a launch
file lets override the file (the parameters marked ``launch`` in ``param_specs.py``, and
``use_sim_time``), empty unless given; the ones given apply to the node.

``ros2 launch`` (launch 3.x, Jazzy) returns non-zero only when an exception reaches its event
loop, so the exit handler raises one naming the node's exit code; the launch service logs it as
the shutdown reason, and scripts and supervisors see the failure in the exit status.
"""

from __future__ import annotations

from typing import Any, Sequence

from launch import LaunchContext
from launch.actions import DeclareLaunchArgument, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
import yaml

from pi0_trt_ros.node.param_specs import ParamSpec

USE_SIM_TIME = 'true to follow /clock (bag replay)'  # rclpy's parameter, not the node's


class NodeFailed(RuntimeError):
    """A node exited with a non-zero code: raised to make ``ros2 launch`` exit non-zero."""


def overridable(specs: Sequence[ParamSpec]) -> dict[str, str]:
    """Return name -> description of the arguments that override the parameter file: ``specs`` and use_sim_time."""
    return {**{spec.name: spec.description for spec in specs}, 'use_sim_time': USE_SIM_TIME}


def declare_arguments(default_config: str, config_description: str, specs: Sequence[ParamSpec],
                      *own: DeclareLaunchArgument) -> list[DeclareLaunchArgument]:
    """Return the arguments: ``config``, ``log_level``, the launch file's ``own``, then the overriding ones."""
    return [DeclareLaunchArgument('config', default_value=default_config, description=config_description),
            DeclareLaunchArgument('log_level', default_value='info', description="debug logs each cycle's timing"),
            *own] + [DeclareLaunchArgument(name, default_value='', description=f'{text} (empty: from config)')
                     for name, text in overridable(specs).items()]


def given_overrides(context: LaunchContext, specs: Sequence[ParamSpec]) -> dict[str, Any]:
    """Return the overriding arguments given (non-empty) as parameter values: lists parsed as YAML."""
    overrides: dict[str, Any] = {}
    for name in overridable(specs):
        text = LaunchConfiguration(name).perform(context)
        if text:
            overrides[name] = _value(next((s for s in specs if s.name == name), None), text)
    return overrides


def _value(spec: ParamSpec | None, text: str) -> Any:
    """Turn an argument's text into the parameter's value (``spec`` None: use_sim_time)."""
    if spec is None:
        return text.lower() == 'true'
    if isinstance(spec.default, list):  # robots:=[robot_a,robot_b]
        value = yaml.safe_load(text)
        return [str(v) for v in value] if spec.type_name == 'string array' and isinstance(value, list) else value
    return text


def node_until_exit(context: LaunchContext, executable: str, parameters: list, remaps: Sequence[str] = (),
                    **node_kwargs: Any) -> list:
    """Return the package's ``executable`` as a node whose exit ends the launch (``on_node_exit``)."""
    node = Node(package='pi0_trt_ros', executable=executable, parameters=parameters,
                arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level').perform(context),
                           *(arg for remap in remaps for arg in ('-r', remap))],
                output='screen', emulate_tty=True, **node_kwargs)
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_node_exit))]


def on_node_exit(event: ProcessExited, context: LaunchContext) -> list:
    """Shut the launch down with the node; fail it when the node failed."""
    if event.returncode != 0:
        raise NodeFailed(f'{event.process_name} exited with code {event.returncode} (see its log above); '
                         'shutting down the launch with an error')
    return [] if context.is_shutdown else [Shutdown(reason=f'{event.process_name} exited')]
