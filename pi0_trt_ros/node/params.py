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

"""Declare, read and validate every parameter of the control node; return one frozen dataclass.

The parameters themselves (name, default, description, constraint) are listed once, in
``param_specs.py``; this module declares them on the node, checks each against its constraint,
then checks the rules that tie several together. Topic names are resolved as the node's
subscriptions and publishers will resolve them (namespace, ``~``, substitutions, remappings), so a
name rclpy would refuse is reported here with the rest, not as a traceback half-way through start-up.

All parameters are read-only (changing them needs a restart: buffers, subscriptions and the
engine are sized from them). Durations are in milliseconds unless the name says otherwise.
Per-camera parameters are nested under the camera's name, as ``config/control.yaml`` shows::

    cameras: [base, left_wrist, right_wrist]
    camera:
      base: {topic: cam_base/image_raw, type: raw, key: observation.images.base_0_rgb}

Every problem found is reported at once, in one ``Pi0Error`` whose message says what to change.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidTopicNameException, ParameterException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.validate_topic_name import validate_topic_name
import yaml

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.manifest import PolicyIO
from pi0_trt_ros.node.param_specs import CAMERA_FIELDS, PARAMETERS, ParamSpec
from pi0_trt_ros.runners.registry import BACKENDS


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """One camera input."""

    name: str
    topic: str
    transport: str  # 'raw' or 'compressed'
    key: str  # checkpoint camera key


@dataclasses.dataclass(frozen=True)
class ControlParams:
    """Validated node parameters (field names as the parameters)."""

    checkpoint: str
    engine_dir: str
    tokenizer: str
    backend: str
    backend_options: dict[str, Any]
    warmup_iterations: int
    cameras: tuple[CameraConfig, ...]
    sensor_qos_reliability: str
    sensor_qos_depth: int
    resize_mismatched: bool
    joint_states_topic: str
    joint_names: tuple[str, ...]
    joint_lower_limits: tuple[float, ...]
    joint_upper_limits: tuple[float, ...]
    joint_limit_margin: float
    joint_state_tolerance_ms: float
    joint_state_buffer: int
    instruction_topic: str
    max_instruction_chars: int
    sync_queue_size: int
    sync_slop_ms: float
    max_observation_age_ms: float
    max_future_stamp_ms: float
    commands_topic: str
    trajectory_topic: str
    publish_trajectory: bool
    trajectory_stamp_now: bool
    trajectory_velocities: bool
    inference_mode: str
    n_action_steps: int
    control_rate_hz: float
    chunk_lead_ms: float
    chunk_lead_margin_ms: float
    chunk_crossfade_steps: int
    noise_seed: int
    fixed_noise: bool
    deadline_ms: float
    deadline_window: int
    deadline_error_consecutive: int
    on_deadline_miss: str
    stale_timeout_ms: float
    on_stale: str
    stop_timeout_ms: float
    diagnostics_period_sec: float
    hardware_id: str
    log_throttle_sec: float
    gc_mode: str
    switch_interval_ms: float
    tune_malloc: bool
    realtime_priority: int


def declare_and_read(node: Node, defaults: Mapping[str, Any] | None = None) -> ControlParams:
    """Declare every parameter on ``node`` (read-only, described, constraint stated), read and validate them.

    ``defaults`` (parameter name -> value, e.g. ``camera.base.topic``, as ``declared_values``
    returns them) replace the table's defaults: a robot of a fleet takes the fleet node's values
    wherever its own parameters set nothing. Raises Pi0Error listing every invalid parameter and
    what is expected.
    """
    given = defaults or {}
    problems: list[str] = []
    raw: dict[str, Any] = {spec.name: _declare(node, spec, spec.name, given.get(spec.name, spec.default), '',
                                               problems)
                           for spec in PARAMETERS}
    raw['cameras'] = _cameras(raw['cameras'], lambda cam, spec, default: _declare(
        node, spec, f'camera.{cam}.{spec.name}', given.get(f'camera.{cam}.{spec.name}', default), f'{cam}: ',
        problems))
    return _build_or_raise(raw, problems, node.resolve_topic_name)


def declared_values(node: Node, params: ControlParams) -> dict[str, Any]:
    """Return the values of the parameters ``declare_and_read`` declared on ``node``, by parameter name."""
    names = [spec.name for spec in PARAMETERS]
    names += [f'camera.{c.name}.{spec.name}' for c in params.cameras for spec in CAMERA_FIELDS]
    return {name: node.get_parameter(name).value for name in names}


def default_params_file() -> Path:
    """Find the package's ``config/control.yaml`` (installed share/ first, else the source tree)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory('pi0_trt_ros')) / 'config' / 'control.yaml'
        if installed.is_file():
            return installed
    except (ImportError, LookupError, ValueError):
        pass
    return Path(__file__).resolve().parents[2] / 'config' / 'control.yaml'


def params_from_yaml(path: str | Path, overrides: dict[str, Any] | None = None) -> ControlParams:
    """Read a node parameter file (``config/control.yaml`` layout) without a node, for offline tools.

    Every ``ros__parameters`` section is merged (in file order), then ``overrides``; unset
    parameters take their defaults, and values are validated exactly as the node does.
    """
    doc = yaml.safe_load(Path(path).read_text()) or {}
    values: dict[str, Any] = {}
    for section in doc.values():
        if isinstance(section, dict) and isinstance(section.get('ros__parameters'), dict):
            values.update(section['ros__parameters'])
    values.update(overrides or {})
    problems: list[str] = []
    raw = {spec.name: _coerce(spec, spec.name, values.get(spec.name, spec.default), problems) for spec in PARAMETERS}
    per_camera = values.get('camera') or {}
    raw['cameras'] = _cameras(raw['cameras'], lambda cam, spec, default: str(
        (per_camera.get(cam) or {}).get(spec.name, default)))
    return _build_or_raise(raw, problems, validate_topic_name)  # no node: the name's form only


def _cameras(names: list[str] | None, value: Callable[[str, ParamSpec, str], Any]) -> tuple[CameraConfig, ...]:
    """Build one CameraConfig per name; ``value(camera, field spec, default for this camera)`` reads a field."""
    cameras = []
    for cam in names or []:
        fields = {spec.name: value(cam, spec, spec.default.format(name=cam)) for spec in CAMERA_FIELDS}
        cameras.append(CameraConfig(name=cam, topic=fields['topic'], transport=fields['type'], key=fields['key']))
    return tuple(cameras)


def _build_or_raise(raw: dict[str, Any], problems: list[str], resolve_topic: Callable[[str], Any]) -> ControlParams:
    params = _build(raw, problems, resolve_topic)
    if params is None:
        raise Pi0Error(_format(problems))
    return params


def _declare(node: Node, spec: ParamSpec, name: str, default: Any, prefix: str, problems: list[str]) -> Any:
    """Declare one parameter; return its value (ints accepted for doubles), or record a problem.

    The constraint goes into the descriptor as text only: rclpy's own range checks would reject
    one value at a time, with its wording, while this node reports every problem at once.
    """
    descriptor = ParameterDescriptor(description=prefix + spec.description, read_only=True,
                                     dynamic_typing=spec.is_double, additional_constraints=spec.constraint())
    try:
        value = node.declare_parameter(name, default, descriptor).value
    except ParameterException as err:
        problems.append(f'{name}: {err}')
        return default
    return _coerce(spec, name, value, problems)


def _coerce(spec: ParamSpec, name: str, value: Any, problems: list[str]) -> Any:
    """Doubles accept integers: convert them (and lists of them); record values that are not numbers."""
    if spec.is_double:
        is_list = isinstance(spec.default, list)
        try:
            value = [float(v) for v in value] if is_list else float(value)
        except (TypeError, ValueError):
            problems.append(f'{name}: expected {"a list of numbers" if is_list else "a number"}, got {value!r}')
            return spec.default
    return value


def rclpy_reason(err: Exception) -> str:
    """Return the why of rclpy's name errors, in one line.

    Their texts: 'Invalid topic name: <why>:' or 'Invalid namespace: <why>:' and a caret drawing,
    'failed to resolve name: <why>, at <file>:<line>'.
    """
    reason = str(err).splitlines()[0]
    for prefix in ('Invalid topic name: ', 'Invalid namespace: ', 'failed to resolve name: '):
        reason = reason.removeprefix(prefix)
    return reason.split(', at ')[0].rstrip(':')


def _topic_problem(resolve_topic: Callable[[str], Any], name: str, topic: str) -> str | None:
    """Return why ``resolve_topic`` (rclpy's) refuses ``topic``, the value of parameter ``name``; None if accepted."""
    try:
        resolve_topic(topic)
    except (InvalidTopicNameException, _rclpy.RCLError, ValueError) as err:
        return f'{name}: {topic!r} is not a valid topic name ({rclpy_reason(err)})'
    return None


def _build(raw: dict[str, Any], problems: list[str], resolve_topic: Callable[[str], Any]) -> ControlParams | None:
    """Check each value against its spec, then the cross-field rules; record each problem; None if any."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    def check(spec: ParamSpec, value: Any, name: str) -> None:
        problem = spec.problem(value, name)
        if problem is None and spec.topic:
            problem = _topic_problem(resolve_topic, name, value)
        need(problem is None, problem or '')

    for spec in PARAMETERS:
        check(spec, raw[spec.name], spec.name)
    need(bool(raw['engine_dir'] or raw['checkpoint']),
         'engine_dir and checkpoint are both empty: pass engine_dir:=<export dir> (from `pi0-trt export`) '
         'or checkpoint:=<LeRobot pi0 checkpoint dir>')
    backend = BACKENDS.get(raw['backend'])
    options: dict[str, Any] = {}
    try:
        options = json.loads(raw['backend_options'] or '{}')
        need(isinstance(options, dict), f'backend_options must be a JSON object, got {raw["backend_options"]!r}')
    except json.JSONDecodeError as err:
        problems.append(f'backend_options is not valid JSON ({err}): e.g. \'{{"device": "cuda"}}\'')
    if not isinstance(options, dict):
        options = {}
    elif backend is not None:
        try:
            options = backend.check_options(options)
        except Pi0Error as err:
            problems.append(str(err))

    cams: tuple[CameraConfig, ...] = raw['cameras']
    need(len({c.name for c in cams}) == len(cams), f'cameras has duplicate names: {[c.name for c in cams]}')
    for c in cams:
        values = {'topic': c.topic, 'type': c.transport, 'key': c.key}
        for spec in CAMERA_FIELDS:
            check(spec, values[spec.name], f'camera.{c.name}.{spec.name}')
    keys = [c.key for c in cams]
    need(len(set(keys)) == len(keys), f'two cameras feed the same checkpoint key: {keys}')

    names = list(raw['joint_names'])
    need(len(names) > 0 and all(names), f'joint_names must be non-empty names, got {names}')
    need(len(set(names)) == len(names), f'joint_names has duplicates: {names}')
    lower, upper = list(raw['joint_lower_limits']), list(raw['joint_upper_limits'])
    for label, limits in (('joint_lower_limits', lower), ('joint_upper_limits', upper)):
        need(len(limits) == len(names), f'{label} has {len(limits)} values for {len(names)} joint_names')
        need(all(math.isfinite(v) for v in limits), f'{label} must be finite, got {limits}')
    if len(lower) == len(upper):
        bad = [f'{n}: {lo} >= {hi}' for n, lo, hi in zip(names, lower, upper) if not lo < hi]
        need(not bad, f'each lower limit must be below its upper limit ({"; ".join(bad)})')
    if problems:  # including those found while declaring
        return None
    values = dict(raw)
    values.update(backend_options=options, joint_names=tuple(names), joint_lower_limits=tuple(lower),
                  joint_upper_limits=tuple(upper))
    return ControlParams(**values)


def check_against_policy(params: ControlParams, io: PolicyIO) -> None:
    """Fail fast when cameras, joints or chunk settings do not fit the exported policy; say what to change."""
    problems = []
    keys = [c.key for c in params.cameras]
    if sorted(keys) != sorted(io.camera_keys):
        problems.append(f"camera keys {keys} do not match the policy's cameras {list(io.camera_keys)}: "
                        'set camera.<name>.key so that each policy camera is fed exactly once')
    dof = len(params.joint_names)
    if io.state_dim != dof or io.action_dim != dof:
        problems.append(f'{dof} joint_names but the policy has state_dim {io.state_dim} and action_dim '
                        f'{io.action_dim}: list exactly the joints the policy was trained on, in its order')
    if params.n_action_steps > io.chunk_size:
        problems.append(f"n_action_steps {params.n_action_steps} > the policy's chunk size {io.chunk_size}")
    if params.chunk_crossfade_steps >= io.chunk_size:
        problems.append(f"chunk_crossfade_steps {params.chunk_crossfade_steps} >= the policy's chunk size "
                        f'{io.chunk_size}: blend over fewer ticks')
    if problems:
        raise Pi0Error('configuration does not fit the policy:\n' + '\n'.join(f'  - {x}' for x in problems))


def _format(problems: list[str]) -> str:
    lines = '\n'.join(f'  - {p}' for p in problems)
    return f'invalid parameters (set them in config/control.yaml or with --ros-args -p name:=value):\n{lines}'
