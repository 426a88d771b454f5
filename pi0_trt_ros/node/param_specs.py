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

"""Every parameter of the control and fleet nodes, once: name, default (and so type), description, constraint.

The control node declares each of ``PARAMETERS`` from here (``params.py``: description and
constraint in its ParameterDescriptor), checks each value against its constraint, prints it in
``--help`` (``usage.py``), and the launch file offers the ones marked ``launch`` as arguments; the
tests hold ``config/control.yaml`` and ``docs/PARAMETERS.md`` to this table. Only rules that tie
several parameters together (limits per joint, one camera per checkpoint key, backend options)
live in ``params.py``. The fleet node takes all of them and ``FLEET_PARAMETERS``
(``fleet_params.py`` declares and checks those). This module imports no rclpy, so the launch
files and documentation tools can read it anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from pi0_trt_ros.batch_sizes import DEFAULT_BATCH_SIZES
from pi0_trt_ros.runners.registry import BACKENDS, describe_backend_options, describe_backends

INFERENCE_MODES = ('chunk', 'every_set')
MISS_POLICIES = ('publish', 'drop', 'hold')
STALE_POLICIES = ('hold', 'stop')
RELIABILITIES = ('best_effort', 'reliable')
CAMERA_TYPES = ('raw', 'compressed')
GC_MODES = ('tuned', 'default')


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One read-only parameter; its type is its default's (doubles also take integers)."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()  # allowed values (strings); empty: any
    minimum: float | None = None  # lowest allowed value (numbers); None: any
    maximum: float | None = None  # highest allowed value (numbers, with a minimum); None: any
    strict: bool = False  # the value must be above ``minimum``, not equal to it
    non_empty: bool = False  # strings and lists: must not be empty
    hint: str = ''  # appended to a violation, e.g. what 0 means or what to pass
    launch: bool = False  # also an argument of the node's launch file (control.launch.py, fleet.launch.py)
    item_type: type | None = None  # the items' type of a list whose default is empty (it cannot tell)
    topic: bool = False  # a topic name: params.py resolves it as rclpy would (this module imports no rclpy)

    @property
    def is_double(self) -> bool:
        """Whether the parameter is a double or a list of doubles (then integers are converted)."""
        default = self.default
        return isinstance(default, float) or (isinstance(default, list) and bool(default)
                                              and isinstance(default[0], float))

    @property
    def type_name(self) -> str:
        """ROS parameter type, as ``ros2 param describe`` names it (``double``, ``string array``, ...)."""
        default = self.default
        if isinstance(default, list):
            item_type = type(default[0]) if default else self.item_type
        else:
            item_type = type(default)
        name = {bool: 'boolean', int: 'integer', float: 'double', str: 'string'}[item_type]
        return f'{name} array' if isinstance(default, list) else name

    def constraint(self) -> str:
        """Return the constraint in words (``ParameterDescriptor.additional_constraints``, help texts); '' if none."""
        if self.choices:
            text = f'one of {", ".join(self.choices)}'
        elif self.minimum is not None and self.maximum is not None:
            text = f'{self.minimum:g} to {self.maximum:g}'
        elif self.minimum is not None:
            text = f'{">" if self.strict else ">="} {self.minimum:g}'
        elif self.non_empty:
            text = 'non-empty'
        else:
            return ''
        return f'{text} ({self.hint})' if self.hint and self.minimum is not None else text

    def problem(self, value: Any, name: str | None = None) -> str | None:
        """Return what is wrong with ``value`` (named ``name``, default this parameter's), or None."""
        name = name or self.name
        if self.choices and value not in self.choices:
            return f'{name} must be one of {", ".join(self.choices)}, got {value!r}'
        if self.minimum is not None:
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if (not number or value < self.minimum or (self.strict and value == self.minimum)
                    or (self.maximum is not None and value > self.maximum)):
                return f'{name} must be {self.constraint()}, got {value!r}'
        if self.non_empty and not value:
            return f'{name} is empty' + (f': {self.hint}' if self.hint else '')
        return None

    def show_default(self) -> str:
        """Return the default as YAML/JSON writes it (``true``, ``"tensorrt"``, ``["base", ...]``)."""
        return json.dumps(self.default)


def _spec(name: str, default: Any, description: str, **constraint: Any) -> ParamSpec:
    return ParamSpec(name, default, description, **constraint)


PARAMETERS: tuple[ParamSpec, ...] = (
    # model
    _spec('checkpoint', '', 'LeRobot pi0 checkpoint directory (torch backend; other backends read the export)',
          launch=True),
    _spec('engine_dir', '', 'export directory from `pi0-trt export` (ONNX graphs, pi0_export.json, TensorRT plans)',
          launch=True),
    _spec('tokenizer', '', 'PaliGemma tokenizer: tokenizer.json, tokenizer.model, a directory or HF cache entry',
          non_empty=True, hint='pass tokenizer:=<path to PaliGemma tokenizer.json or tokenizer.model>', launch=True),
    _spec('backend', 'tensorrt', f'inference backend: {describe_backends()}', choices=tuple(BACKENDS), launch=True),
    _spec('backend_options', '{}', 'JSON object of options for the backend, e.g. {"device": "cuda"}; each takes '
          f'only its own ({describe_backend_options()})', launch=True),
    _spec('warmup_iterations', 3, 'policy calls at start-up before the first cycle, timed and logged apart',
          minimum=0),
    # inputs
    _spec('cameras', ['base', 'left_wrist', 'right_wrist'], 'camera names; each has camera.<name>.{topic,type,key}',
          non_empty=True, hint='list the camera names, e.g. [base, left_wrist, right_wrist]'),
    _spec('sensor_qos_reliability', 'best_effort', 'camera and joint_states subscriptions: best_effort (matches any '
          'publisher, the sensor-data convention) or reliable (lossless bag replay)', choices=RELIABILITIES,
          launch=True),
    _spec('sensor_qos_depth', 5, 'history depth of each camera subscription', minimum=1),
    _spec('resize_mismatched', False, 'resize frames whose size differs from the exported camera size (else '
          'dropped)'),
    _spec('joint_states_topic', 'joint_states', 'sensor_msgs/JointState topic', non_empty=True, topic=True),
    _spec('joint_names', ['joint_1', 'joint_2', 'joint_3', 'joint_4', 'joint_5', 'joint_6'],
          'joints in policy state/action order, picked by name from JointState'),
    _spec('joint_lower_limits', [-3.14159] * 6, 'per-joint lower command limit, robot units (rad / m)'),
    _spec('joint_upper_limits', [3.14159] * 6, 'per-joint upper command limit, robot units (rad / m)'),
    _spec('joint_limit_margin', 0.2, 'joint states more than this outside [lower, upper] limits are rejected (robot '
          'units): never used as policy input nor as the hold position', minimum=0),
    _spec('joint_state_tolerance_ms', 50.0, 'largest |joint sample stamp - newest camera stamp| accepted', minimum=0),
    _spec('joint_state_buffer', 100, 'joint samples kept for the nearest-stamp lookup', minimum=1),
    _spec('instruction_topic', 'instruction', 'std_msgs/String instruction topic (reliable, volatile)',
          non_empty=True, topic=True),
    _spec('max_instruction_chars', 512, 'longer instructions are rejected', minimum=1),
    # sync
    _spec('sync_queue_size', 10, 'per-camera queue of the approximate-time synchronizer', minimum=1),
    _spec('sync_slop_ms', 30.0, 'largest stamp spread of a camera set (inclusive)', minimum=0),
    _spec('max_observation_age_ms', 500.0, 'drop sets whose oldest stamp is older than this at arrival (0: off)',
          minimum=0),
    _spec('max_future_stamp_ms', 300.0, 'reject a message stamped more than this ahead of the node clock (0: off); '
          'it does not become the newest stamp of its input', minimum=0),
    # outputs and control
    _spec('commands_topic', 'forward_position_controller/commands', 'std_msgs/Float64MultiArray, next action',
          non_empty=True, topic=True),
    _spec('trajectory_topic', 'joint_trajectory_controller/joint_trajectory',
          'trajectory_msgs/JointTrajectory, chunk', non_empty=True, topic=True),
    _spec('publish_trajectory', True, 'publish the whole chunk as a JointTrajectory at each inference'),
    _spec('trajectory_stamp_now', False, 'JointTrajectory header.stamp = publish time (ROS clock); default zero: '
          'the controller starts it on receipt, whatever its clock'),
    _spec('trajectory_velocities', False, 'JointTrajectory points carry velocities (finite differences of the chunk '
          'at control_rate_hz): spline interpolation; the last point then has a velocity, which needs '
          'allow_nonzero_velocity_at_trajectory_end: true in the controller'),
    _spec('inference_mode', 'chunk', 'chunk: one action per tick at control_rate_hz, n_action_steps from each '
          'chunk, the next chunk inferred on the newest set while the running one is published; every_set: one '
          'inference per set, first action', choices=INFERENCE_MODES),
    _spec('n_action_steps', 0, 'actions executed from each chunk in chunk mode, from the one matching the time '
          'elapsed since its observation (0: the exported n_action_steps)', minimum=0, hint='0: the exported value'),
    _spec('control_rate_hz', 50.0, 'command rate in chunk mode, hold rate, and trajectory point spacing', minimum=0,
          strict=True),
    _spec('chunk_lead_ms', 0.0, 'chunk mode: start the next inference when the running chunk has this long left (0: '
          'the measured p99 latency, warm-up calls first, then the last deadline_window chunks, plus '
          'chunk_lead_margin_ms)', minimum=0, launch=True),
    _spec('chunk_lead_margin_ms', 10.0, 'chunk mode with chunk_lead_ms 0: added to the measured p99 latency',
          minimum=0, launch=True),
    _spec('chunk_crossfade_steps', 0, 'chunk mode: blend linearly from the running chunk into a new one over this '
          'many ticks (0: switch at once)', minimum=0, hint='0: no blend', launch=True),
    _spec('noise_seed', 0, 'seed of the flow-matching noise generator (-1: from OS entropy)', minimum=-1,
          hint='-1: OS entropy'),
    _spec('fixed_noise', False, 'reuse the first noise draw for every inference instead of drawing anew'),
    # deadline and safety
    _spec('deadline_ms', 20.0, 'every_set mode: compute budget per cycle, synchronized set complete -> commands '
          'published (chunk mode: each command within its control tick, each chunk before the running one runs '
          'out)', minimum=0, strict=True),
    _spec('deadline_window', 1000, 'cycles in the statistics window', minimum=1),
    _spec('deadline_error_consecutive', 3, 'consecutive misses that make diagnostics ERROR', minimum=1),
    _spec('on_deadline_miss', 'publish', 'late commands: publish anyway, drop, or hold current joint positions '
          '(chunk mode, a chunk later than the running one: switch to it when it comes, drop it, or hold on the '
          'ticks in between)', choices=MISS_POLICIES),
    _spec('stale_timeout_ms', 500.0, 'no usable set for this long: inputs are stale', minimum=0, strict=True),
    _spec('on_stale', 'hold', 'stale inputs: hold current joint positions (until stop_timeout_ms), or stop',
          choices=STALE_POLICIES),
    _spec('stop_timeout_ms', 2000.0, 'stale for this long: stop commanding until inputs recover', minimum=0),
    # diagnostics and runtime
    _spec('diagnostics_period_sec', 1.0, '/diagnostics period', minimum=0, strict=True),
    _spec('hardware_id', '', 'DiagnosticStatus.hardware_id (default: backend and engine directory)'),
    _spec('log_throttle_sec', 5.0, 'each kind of bad input is logged at most once per this period, per source',
          minimum=0),
    _spec('gc_mode', 'tuned', 'tuned: gc.freeze() after warm-up, automatic GC off, gen-0/1 collection in idle time; '
          'default: leave Python GC alone', choices=GC_MODES),
    _spec('switch_interval_ms', 0.5, 'sys.setswitchinterval: longest a thread holds the GIL while another waits for '
          'it (Python default 5 ms); lower lets the control thread resume sooner (0: leave it)', minimum=0),
    _spec('tune_malloc', True, 'glibc: serve large messages from the heap instead of fresh mmaps (no page faults '
          'per frame): mallopt M_MMAP_THRESHOLD 64 MiB, M_TRIM_THRESHOLD 256 MiB'),
    _spec('realtime_priority', 0, "Linux SCHED_FIFO priority of the node's control, sensor and inference threads, "
          'so that other processes do not preempt them mid-cycle. Needs CAP_SYS_NICE or an rtprio limit (e.g. '
          '`@realtime - rtprio 98` in /etc/security/limits.conf); refused: a warning, and the threads keep the '
          'default scheduling', minimum=0, maximum=98, hint='0: leave their scheduling alone'),
)
# camera.<name>.<field>: defaults hold ``{name}`` for the camera's name.
CAMERA_FIELDS: tuple[ParamSpec, ...] = (
    _spec('topic', 'cam_{name}/image_raw', 'image topic of this camera', non_empty=True, topic=True),
    _spec('type', 'raw', 'raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage, jpeg/png)',
          choices=CAMERA_TYPES),
    _spec('key', 'observation.images.{name}_0_rgb', 'checkpoint camera key this camera feeds', non_empty=True,
          hint='set the checkpoint camera key it feeds'),
)
SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}

# -- the fleet node (``fleet_node.py``): these, besides every parameter above -----------------------
FLEET_NODE_NAME = 'pi0_fleet'
# Parameters every robot of a fleet takes from the fleet: the policy, and settings of the whole process.
SHARED_PARAMETERS = ('checkpoint', 'engine_dir', 'tokenizer', 'backend', 'backend_options', 'warmup_iterations',
                     'gc_mode', 'switch_interval_ms', 'tune_malloc', 'realtime_priority')
ROBOTS = ParamSpec('robots', [], 'namespaces of the robots this process serves, e.g. [robot_a, robot_b]: each gets '
                   'the topics of a control node in that namespace', non_empty=True,
                   hint='pass robots:=[robot_a, robot_b] (namespaces)', launch=True, item_type=str)
FLEET_PARAMETERS: tuple[ParamSpec, ...] = (
    ROBOTS,
    ParamSpec('batch_sizes', list(DEFAULT_BATCH_SIZES), 'batch sizes the runner serves (an export made with '
              '`pi0-trt export --batch-sizes` for the engine backends); a partial batch runs at the next size',
              launch=True),
    ParamSpec('max_wait_ms', 0.0, 'once one robot is ready, wait up to this long for more before running the batch '
              '(0: run as soon as the runner is free)', minimum=0, launch=True),
    ParamSpec('device', '', 'GPU of this process: cuda:N (or cuda, cpu); empty: the backend options decide',
              launch=True),
)


def launch_arguments() -> tuple[ParamSpec, ...]:
    """Return the parameters that ``control.launch.py`` takes as arguments (overriding the YAML when given)."""
    return tuple(spec for spec in PARAMETERS if spec.launch)
