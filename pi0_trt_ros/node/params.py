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
from typing import Any, Callable

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node
import yaml

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.runners.registry import BACKENDS, describe_backend_options, describe_backends

INFERENCE_MODES = ('chunk', 'every_set')
MISS_POLICIES = ('publish', 'drop', 'hold')
STALE_POLICIES = ('hold', 'stop')
RELIABILITIES = ('best_effort', 'reliable')
CAMERA_TYPES = ('raw', 'compressed')
GC_MODES = ('tuned', 'default')

# name -> (default, description). The type is the default's; doubles also accept integers.
_SPECS: dict[str, tuple[Any, str]] = {
    # model
    'checkpoint': ('', 'LeRobot pi0 checkpoint directory (torch backend; other backends read the export)'),
    'engine_dir': ('', 'export directory from `pi0-trt export` (ONNX graphs, pi0_export.json, TensorRT plans)'),
    'tokenizer': ('', 'PaliGemma tokenizer: tokenizer.json, tokenizer.model, a directory or HF cache entry'),
    'backend': ('tensorrt', f'inference backend: {describe_backends()}'),
    'backend_options': ('{}', 'JSON object of options for the backend, e.g. {"device": "cuda"}; each takes '
                        f'only its own ({describe_backend_options()})'),
    'warmup_iterations': (3, 'policy calls at start-up before the first cycle, timed and logged apart'),
    # inputs
    'cameras': (['base', 'left_wrist', 'right_wrist'], 'camera names; each has camera.<name>.{topic,type,key}'),
    'sensor_qos_reliability': ('best_effort', 'camera and joint_states subscriptions: best_effort (matches any '
                               'publisher, the sensor-data convention) or reliable (lossless bag replay)'),
    'sensor_qos_depth': (5, 'history depth of each camera subscription'),
    'resize_mismatched': (False, 'resize frames whose size differs from the exported camera size (else dropped)'),
    'joint_states_topic': ('joint_states', 'sensor_msgs/JointState topic'),
    'joint_names': (['joint_1', 'joint_2', 'joint_3', 'joint_4', 'joint_5', 'joint_6'],
                    'joints in policy state/action order, picked by name from JointState'),
    'joint_lower_limits': ([-3.14159] * 6, 'per-joint lower command limit, robot units (rad / m)'),
    'joint_upper_limits': ([3.14159] * 6, 'per-joint upper command limit, robot units (rad / m)'),
    'joint_limit_margin': (0.2, 'joint states more than this outside [lower, upper] limits are rejected (robot '
                           'units): never used as policy input nor as the hold position'),
    'joint_state_tolerance_ms': (50.0, 'largest |joint sample stamp - newest camera stamp| accepted'),
    'joint_state_buffer': (100, 'joint samples kept for the nearest-stamp lookup'),
    'instruction_topic': ('instruction', 'std_msgs/String instruction topic (reliable, volatile)'),
    'max_instruction_chars': (512, 'longer instructions are rejected'),
    # sync
    'sync_queue_size': (10, 'per-camera queue of the approximate-time synchronizer'),
    'sync_slop_ms': (30.0, 'largest stamp spread of a camera set (inclusive)'),
    'max_observation_age_ms': (500.0, 'drop sets whose oldest stamp is older than this at arrival (0: off)'),
    'max_future_stamp_ms': (300.0, 'reject a message stamped more than this ahead of the node clock (0: off); '
                            'it does not become the newest stamp of its input'),
    # outputs and control
    'commands_topic': ('forward_position_controller/commands', 'std_msgs/Float64MultiArray, next action'),
    'trajectory_topic': ('joint_trajectory_controller/joint_trajectory', 'trajectory_msgs/JointTrajectory, chunk'),
    'publish_trajectory': (True, 'publish the whole chunk as a JointTrajectory at each inference'),
    'trajectory_stamp_now': (False, 'JointTrajectory header.stamp = publish time (ROS clock); default zero: the '
                             'controller starts it on receipt, whatever its clock'),
    'trajectory_velocities': (False, 'JointTrajectory points carry velocities (finite differences of the chunk at '
                              'control_rate_hz): spline interpolation; the last point then has a velocity, which '
                              'needs allow_nonzero_velocity_at_trajectory_end: true in the controller'),
    'inference_mode': ('chunk', 'chunk: one action per tick at control_rate_hz, n_action_steps from each chunk, '
                       'the next chunk inferred on the newest set while the running one is published; '
                       'every_set: one inference per set, first action'),
    'n_action_steps': (0, 'actions executed from each chunk in chunk mode, from the one matching the time elapsed '
                       'since its observation (0: the exported n_action_steps)'),
    'control_rate_hz': (50.0, 'command rate in chunk mode, hold rate, and trajectory point spacing'),
    'chunk_lead_ms': (0.0, 'chunk mode: start the next inference when the running chunk has this long left (0: the '
                      'measured p99 latency, warm-up calls first, then the last deadline_window chunks, '
                      'plus chunk_lead_margin_ms)'),
    'chunk_lead_margin_ms': (10.0, 'chunk mode with chunk_lead_ms 0: added to the measured p99 latency'),
    'chunk_crossfade_steps': (0, 'chunk mode: blend linearly from the running chunk into a new one over this many '
                              'ticks (0: switch at once)'),
    'noise_seed': (0, 'seed of the flow-matching noise generator (-1: from OS entropy)'),
    'fixed_noise': (False, 'reuse the first noise draw for every inference instead of drawing anew'),
    # deadline and safety
    'deadline_ms': (20.0, 'every_set mode: compute budget per cycle, synchronized set complete -> commands '
                    'published (chunk mode: each command within its control tick, each chunk before the running '
                    'one runs out)'),
    'deadline_window': (1000, 'cycles in the statistics window'),
    'deadline_error_consecutive': (3, 'consecutive misses that make diagnostics ERROR'),
    'on_deadline_miss': ('publish', 'late commands: publish anyway, drop, or hold current joint positions (chunk '
                         'mode, a chunk later than the running one: switch to it when it comes, drop it, or hold '
                         'on the ticks in between)'),
    'stale_timeout_ms': (500.0, 'no usable set for this long: inputs are stale'),
    'on_stale': ('hold', 'stale inputs: hold current joint positions (until stop_timeout_ms), or stop'),
    'stop_timeout_ms': (2000.0, 'stale for this long: stop commanding until inputs recover'),
    # diagnostics and runtime
    'diagnostics_period_sec': (1.0, '/diagnostics period'),
    'hardware_id': ('', 'DiagnosticStatus.hardware_id (default: backend and engine directory)'),
    'log_throttle_sec': (5.0, 'each kind of bad input is logged at most once per this period, per source'),
    'gc_mode': ('tuned', 'tuned: gc.freeze() after warm-up, automatic GC off, gen-0/1 collection in idle time; '
                'default: leave Python GC alone'),
    'switch_interval_ms': (0.5, 'sys.setswitchinterval: longest a thread holds the GIL while another waits for it '
                           '(Python default 5 ms); lower lets the control thread resume sooner (0: leave it)'),
    'tune_malloc': (True, 'glibc: serve large messages from the heap instead of fresh mmaps (no page faults per '
                    'frame): mallopt M_MMAP_THRESHOLD 64 MiB, M_TRIM_THRESHOLD 256 MiB'),
}
# camera.<name>.<field> -> (default given the camera name, description)
_CAMERA_FIELDS = {
    'topic': ('cam_{name}/image_raw', 'image topic of this camera'),
    'type': ('raw', 'raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage, jpeg/png)'),
    'key': ('observation.images.{name}_0_rgb', 'checkpoint camera key this camera feeds'),
}


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


def declare_and_read(node: Node) -> ControlParams:
    """Declare every parameter on ``node`` (read-only, described), read and validate them.

    Raises Pi0Error listing every invalid parameter and what is expected.
    """
    problems: list[str] = []
    raw: dict[str, Any] = {}
    for name, (default, description) in _SPECS.items():
        raw[name] = _declare(node, name, default, description, problems)
    raw['cameras'] = _cameras(raw['cameras'], lambda cam, field, default, description: _declare(
        node, f'camera.{cam}.{field}', default, f'{cam}: {description}', problems))
    return _build_or_raise(raw, problems)


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
    raw = {name: _coerce(name, values.get(name, default), default, problems) for name, (default, _) in _SPECS.items()}
    per_camera = values.get('camera') or {}
    raw['cameras'] = _cameras(raw['cameras'], lambda cam, field, default, _: str(
        (per_camera.get(cam) or {}).get(field, default)))
    return _build_or_raise(raw, problems)


def _cameras(names: list[str] | None, value: Callable[[str, str, str, str], Any]) -> tuple[CameraConfig, ...]:
    """Build one CameraConfig per name; ``value(camera, field, default, description)`` reads a field."""
    cameras = []
    for cam in names or []:
        fields = {field: value(cam, field, default.format(name=cam), description)
                  for field, (default, description) in _CAMERA_FIELDS.items()}
        cameras.append(CameraConfig(name=cam, topic=fields['topic'], transport=fields['type'], key=fields['key']))
    return tuple(cameras)


def _build_or_raise(raw: dict[str, Any], problems: list[str]) -> ControlParams:
    params = _build(raw, problems)
    if params is None:
        raise Pi0Error(_format(problems))
    return params


def _declare(node: Node, name: str, default: Any, description: str, problems: list[str]) -> Any:
    """Declare one parameter; return its value (ints accepted for doubles), or record a problem."""
    descriptor = ParameterDescriptor(description=description, read_only=True, dynamic_typing=_is_double(default))
    try:
        value = node.declare_parameter(name, default, descriptor).value
    except ParameterException as err:
        problems.append(f'{name}: {err}')
        return default
    return _coerce(name, value, default, problems)


def _is_double(default: Any) -> bool:
    return isinstance(default, float) or (isinstance(default, list) and bool(default)
                                          and isinstance(default[0], float))


def _coerce(name: str, value: Any, default: Any, problems: list[str]) -> Any:
    """Doubles accept integers: convert them (and lists of them); record values that are not numbers."""
    if _is_double(default):
        try:
            value = [float(v) for v in value] if isinstance(default, list) else float(value)
        except (TypeError, ValueError):
            problems.append(f'{name}: expected {"a list of numbers" if isinstance(default, list) else "a number"}, '
                            f'got {value!r}')
            return default
    return value


def _build(raw: dict[str, Any], problems: list[str]) -> ControlParams | None:
    """Check values and cross-field rules; append each problem; return the dataclass if none."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    need(bool(raw['engine_dir'] or raw['checkpoint']),
         'engine_dir and checkpoint are both empty: pass engine_dir:=<export dir> (from `pi0-trt export`) '
         'or checkpoint:=<LeRobot pi0 checkpoint dir>')
    need(bool(raw['tokenizer']), 'tokenizer is empty: pass tokenizer:=<path to PaliGemma tokenizer.json or '
         'tokenizer.model>')
    backend = BACKENDS.get(raw['backend'])
    need(backend is not None, f'backend must be one of {", ".join(BACKENDS)}, got {raw["backend"]!r}')
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
    need(len(cams) > 0, 'cameras is empty: list the camera names, e.g. [base, left_wrist, right_wrist]')
    need(len({c.name for c in cams}) == len(cams), f'cameras has duplicate names: {[c.name for c in cams]}')
    for c in cams:
        need(bool(c.topic), f'camera.{c.name}.topic is empty')
        need(c.transport in CAMERA_TYPES, f'camera.{c.name}.type must be one of {CAMERA_TYPES}, got {c.transport!r}')
        need(bool(c.key), f'camera.{c.name}.key is empty: set the checkpoint camera key it feeds')
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

    for name in ('joint_states_topic', 'instruction_topic', 'commands_topic', 'trajectory_topic'):
        need(bool(raw[name]), f'{name} is empty')
    for name, choices in (('inference_mode', INFERENCE_MODES), ('on_deadline_miss', MISS_POLICIES),
                          ('on_stale', STALE_POLICIES), ('sensor_qos_reliability', RELIABILITIES),
                          ('gc_mode', GC_MODES)):
        need(raw[name] in choices, f'{name} must be one of {choices}, got {raw[name]!r}')
    for name in ('deadline_ms', 'control_rate_hz', 'stale_timeout_ms', 'diagnostics_period_sec'):
        need(math.isfinite(raw[name]) and raw[name] > 0, f'{name} must be > 0, got {raw[name]}')
    for name in ('sync_slop_ms', 'max_observation_age_ms', 'max_future_stamp_ms', 'joint_limit_margin',
                 'joint_state_tolerance_ms', 'stop_timeout_ms', 'chunk_lead_ms', 'chunk_lead_margin_ms',
                 'log_throttle_sec', 'switch_interval_ms'):
        need(math.isfinite(raw[name]) and raw[name] >= 0, f'{name} must be >= 0, got {raw[name]}')
    for name in ('sensor_qos_depth', 'joint_state_buffer', 'max_instruction_chars', 'sync_queue_size',
                 'deadline_window', 'deadline_error_consecutive'):
        need(raw[name] >= 1, f'{name} must be >= 1, got {raw[name]}')
    need(raw['warmup_iterations'] >= 0, f'warmup_iterations must be >= 0, got {raw["warmup_iterations"]}')
    need(raw['n_action_steps'] >= 0, f'n_action_steps must be >= 0 (0: the exported value), '
         f'got {raw["n_action_steps"]}')
    need(raw['chunk_crossfade_steps'] >= 0, f'chunk_crossfade_steps must be >= 0 (0: no blend), '
         f'got {raw["chunk_crossfade_steps"]}')
    need(raw['noise_seed'] >= -1, f'noise_seed must be >= 0, or -1 for OS entropy, got {raw["noise_seed"]}')
    if problems:  # including those found while declaring
        return None
    values = dict(raw)
    values.update(backend_options=options, joint_names=tuple(names), joint_lower_limits=tuple(lower),
                  joint_upper_limits=tuple(upper))
    return ControlParams(**values)


def _format(problems: list[str]) -> str:
    lines = '\n'.join(f'  - {p}' for p in problems)
    return f'invalid parameters (set them in config/control.yaml or with --ros-args -p name:=value):\n{lines}'


def parameter_names() -> list[str]:
    """Return the fixed parameter names (per-camera ones excluded), for documentation and tests."""
    return list(_SPECS)


def parameter_specs() -> dict[str, tuple[Any, str]]:
    """Return name -> (default, description) of the fixed parameters, for the usage text."""
    return dict(_SPECS)


def camera_field_specs() -> dict[str, tuple[str, str]]:
    """Return field -> (default with ``{name}`` for the camera name, description) of ``camera.<name>.*``."""
    return dict(_CAMERA_FIELDS)
