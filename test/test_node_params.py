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

"""The parameter table is the one source: the node, config/control.yaml, the launch file and the docs follow it."""

import json
import os
from pathlib import Path
import subprocess
import sys
from typing import Any, Iterator

import pytest
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
import yaml

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.param_specs import (CAMERA_FIELDS, FLEET_NODE_NAME, FLEET_PARAMETERS, launch_arguments,
                                          PARAMETERS, SHARED_PARAMETERS, SPECS)
from pi0_trt_ros.node.params import declare_and_read, default_params_file, params_from_yaml
from pi0_trt_ros.node.usage import fleet_usage_text, parameter_table, usage_text
from pi0_trt_ros.testing.dds import domain_id

DOMAIN_ID = domain_id(97)  # this module's own DDS domain (one node, no traffic)
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
REPO = Path(__file__).resolve().parents[1]
REQUIRED = {'engine_dir': '/some/export', 'tokenizer': '/some/tokenizer.json'}  # empty by default, checked


def control_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO / 'config' / 'control.yaml').read_text())['/**']['ros__parameters']


def test_control_yaml_sets_every_declared_parameter_to_its_default() -> None:
    node_params = control_yaml()
    cameras = node_params.pop('camera')
    assert sorted(node_params) == sorted(SPECS), 'control.yaml and param_specs.PARAMETERS list different names'
    for spec in PARAMETERS:
        assert node_params[spec.name] == spec.default, spec.name
    assert list(cameras) == node_params['cameras']
    for cam, fields in cameras.items():
        assert fields == {spec.name: spec.default.format(name=cam) for spec in CAMERA_FIELDS}


def test_fleet_yaml_sets_the_fleet_parameters_to_their_defaults_and_only_shared_ones_for_every_node() -> None:
    sections = yaml.safe_load((REPO / 'config' / 'fleet.yaml').read_text())
    fleet = sections[f'/{FLEET_NODE_NAME}']['ros__parameters']
    assert fleet == {spec.name: spec.default for spec in FLEET_PARAMETERS if spec.name != 'robots'}  # robots: given
    assert set(sections['/**']['ros__parameters']) <= set(SHARED_PARAMETERS) <= set(SPECS)


def test_defaults_pass_their_own_constraints() -> None:
    for spec in PARAMETERS:
        assert spec.problem(spec.default) is None or spec.name == 'tokenizer', spec.name
    params = params_from_yaml(default_params_file(), REQUIRED)
    assert params.deadline_ms == SPECS['deadline_ms'].default and params.backend == 'tensorrt'


def violation(spec_name: str) -> Any:
    """Return a value that breaks the named parameter's constraint."""
    spec = SPECS[spec_name]
    if spec.choices:
        return 'nothing_like_it'
    if spec.minimum is not None:
        return spec.minimum if spec.strict else spec.minimum - 1
    return '' if isinstance(spec.default, str) else []


@pytest.mark.parametrize('name', [s.name for s in PARAMETERS if s.constraint()])
def test_each_constraint_is_enforced_with_its_own_message(name: str) -> None:
    spec = SPECS[name]
    value = violation(name)
    with pytest.raises(Pi0Error) as caught:
        params_from_yaml(default_params_file(), {**REQUIRED, name: value})
    read_as = float(value) if spec.is_double else value  # doubles take integers, read as floats
    assert spec.problem(read_as) in str(caught.value)
    assert str(caught.value).count('\n  - ') >= 1


@pytest.mark.parametrize('launch_file,own', [('control.launch.py', ()), ('fleet.launch.py', FLEET_PARAMETERS)])
def test_launch_file_offers_exactly_the_launch_parameters(launch_file: str, own: tuple) -> None:
    # In a child process: importing `launch` reconfigures Python logging for the whole process.
    script = ('import importlib.util, json, sys; '
              'spec = importlib.util.spec_from_file_location("launch_file", sys.argv[1]); '
              'module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); '
              'print(json.dumps(module.OVERRIDABLE))')
    done = subprocess.run([sys.executable, '-c', script, str(REPO / 'launch' / launch_file)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    offered = json.loads(done.stdout)
    assert offered.pop('use_sim_time')  # rclpy's, not the node's
    launch_specs = [spec for spec in own if spec.launch] + list(launch_arguments())  # the node's own first
    assert offered == {spec.name: spec.description for spec in launch_specs}
    assert set(offered) <= set(SPECS) | {spec.name for spec in own}


def test_help_and_docs_list_every_parameter_with_default_and_constraint() -> None:
    text = usage_text()
    docs = (REPO / 'docs' / 'PARAMETERS.md').read_text()
    assert docs == parameter_table(), ('docs/PARAMETERS.md is out of date: regenerate it with python -c "from '
                                       'pi0_trt_ros.node.usage import parameter_table; '
                                       "print(parameter_table(), end='')\" > docs/PARAMETERS.md")
    for spec in PARAMETERS:
        assert f'  {spec.name} ({spec.show_default()})\n      {spec.description}\n' in text
        assert f'| `{spec.name}` | {spec.type_name} | `{spec.show_default()}` | {spec.constraint()} |' in docs
        if spec.constraint():
            assert f'      {spec.description}\n      allowed: {spec.constraint()}\n' in text
    fleet_text, fleet_docs = fleet_usage_text(), docs.split('\n## Fleet node\n')[1]
    for spec in FLEET_PARAMETERS:
        assert f'  {spec.name} ({spec.show_default()})\n      {spec.description}\n' in fleet_text
        assert (f'| `{spec.name}` | {spec.type_name} | `{spec.show_default()}` | {spec.constraint()} | '
                f'{"launch" if spec.launch else ""} |') in fleet_docs
    assert 'ros2 launch pi0_trt_ros fleet.launch.py robots:=[' in fleet_docs and 'config/fleet.yaml' in fleet_docs
    assert all(f'`{name}`' in fleet_docs for name in SHARED_PARAMETERS)
    assert 'docs/PARAMETERS.md' in (REPO / 'README.md').read_text()


@pytest.fixture
def context() -> Iterator[Context]:
    ctx = Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
    yield ctx
    rclpy.shutdown(context=ctx)


def test_node_declares_each_parameter_read_only_described_and_constrained(context: Context) -> None:
    overrides = [Parameter(name, value=value) for name, value in REQUIRED.items()]
    node = Node('params_probe', context=context, parameter_overrides=overrides)
    try:
        params = declare_and_read(node)
        assert params.engine_dir == REQUIRED['engine_dir']
        descriptors = node.describe_parameters([spec.name for spec in PARAMETERS])
        for spec, descriptor in zip(PARAMETERS, descriptors):
            assert descriptor.description == spec.description, spec.name
            assert descriptor.additional_constraints == spec.constraint(), spec.name
            assert descriptor.read_only and descriptor.dynamic_typing == spec.is_double, spec.name
            if spec.name not in REQUIRED:
                assert node.get_parameter(spec.name).value == spec.default, spec.name
        camera = node.describe_parameter('camera.base.type')
        assert camera.description.startswith('base: ') and camera.additional_constraints == 'one of raw, compressed'
        assert not node.set_parameters([Parameter('deadline_ms', value=30.0)])[0].successful  # read-only
    finally:
        node.destroy_node()


def test_invalid_topic_names_are_reported_with_the_other_problems(context: Context) -> None:
    """Every topic parameter is resolved as the node's subscriptions will be; each bad one named at once."""
    bad = {'instruction_topic': 'instruction topic', 'commands_topic': '9_commands',
           'camera.base.topic': '{robot}/image', 'joint_states_topic': 'joints//state', 'deadline_ms': -1.0}
    node = Node('params_probe', namespace='/cell', context=context,
                parameter_overrides=[Parameter(name, value=value) for name, value in {**REQUIRED, **bad}.items()])
    try:
        with pytest.raises(Pi0Error) as caught:
            declare_and_read(node)
    finally:
        node.destroy_node()
    message = str(caught.value)
    assert message.count('\n  - ') == len(bad), message
    for name, value in bad.items():
        if name.endswith('topic'):
            assert f'{name}: {value!r} is not a valid topic name (' in message
    assert "'{robot}/image' is not a valid topic name (unknown substitution: {robot})" in message
    assert "'9_commands' is not a valid topic name (topic name token must not start with a number)" in message
    # the names that resolve stay accepted: private, absolute, substituted
    good = {'instruction_topic': '~/instruction', 'commands_topic': '/arm/commands', 'trajectory_topic': '{node}/plan'}
    node = Node('params_probe', namespace='/cell', context=context,
                parameter_overrides=[Parameter(name, value=value) for name, value in {**REQUIRED, **good}.items()])
    try:
        params = declare_and_read(node)
    finally:
        node.destroy_node()
    assert (params.instruction_topic, params.commands_topic, params.trajectory_topic) == tuple(good.values())


def test_a_parameter_file_with_an_invalid_topic_name_is_refused_without_a_node() -> None:
    with pytest.raises(Pi0Error, match=r"instruction_topic: 'say it' is not a valid topic name \(topic name must not "
                                       r'contain characters other than alphanumerics'):
        params_from_yaml(default_params_file(), {**REQUIRED, 'instruction_topic': 'say it'})
