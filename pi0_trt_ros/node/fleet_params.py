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

"""The fleet node's own parameters, the ones its robots share, and the GPU it serves them on.

The fleet node (``pi0_fleet``) reads every control-node parameter and these (all specified in
``param_specs.py``): ``robots`` (the robots' namespaces), ``batch_sizes``, ``max_wait_ms`` and
``device``; this module declares and checks them. Each robot
is a node ``<robot>/pi0_control`` that declares the control-node parameters again, defaulting to
the fleet node's values, so a parameter file section ``/<robot>/pi0_control`` overrides any of
them for that robot. The model, the backend and the process-wide runtime settings
(``SHARED_PARAMETERS``) are the fleet's: one policy serves every robot, so a robot that sets one
differently is refused, naming the parameter.

``device`` picks the GPU of the process (``cpu``, ``cuda`` or ``cuda:N``), one fleet process per
GPU: it becomes the backend's own device option (torch ``cuda:N``, TensorRT device ``N``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidNamespaceException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.validate_namespace import validate_namespace

from pi0_trt_ros.batch_sizes import check_batch_sizes, DEFAULT_BATCH_SIZES
from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.param_specs import FLEET_NODE_NAME, FLEET_PARAMETERS, ROBOTS, SHARED_PARAMETERS
from pi0_trt_ros.node.params import ControlParams, rclpy_reason

_CUDA = re.compile(r'cuda(?::(\d+))?')


@dataclasses.dataclass(frozen=True)
class FleetParams:
    """Validated fleet parameters."""

    robots: tuple[str, ...]  # namespaces, absolute ('/robot_a')
    batch_sizes: tuple[int, ...]
    max_wait_ms: float
    device: str


def declare_fleet(node: Node) -> FleetParams:
    """Declare the fleet's own parameters on ``node``, read and check them; raise Pi0Error naming every problem."""
    values: dict[str, Any] = {}
    problems = []
    for spec in FLEET_PARAMETERS:
        descriptor = ParameterDescriptor(description=spec.description, read_only=True,
                                         additional_constraints=spec.constraint())
        # An empty list has no type of its own: ``robots`` is declared by type, unset until given.
        default = Parameter.Type.STRING_ARRAY if spec is ROBOTS else spec.default
        try:
            values[spec.name] = node.declare_parameter(spec.name, default, descriptor).value
        except ParameterException as err:  # a value of another type (an empty list reads as a byte array)
            problems.append(f'{spec.name}: {err}' if spec is not ROBOTS else f'robots is empty: {ROBOTS.hint}')
            values[spec.name] = None if spec is ROBOTS else spec.default
    names = list(values['robots'] or [])
    robots = [f'/{name.strip("/")}' for name in names if name.strip('/')]
    if len(robots) != len(names) or (not robots and not problems):
        problems.append(f'robots is empty or names an empty namespace ({names}): {ROBOTS.hint}')
    if len(set(robots)) != len(robots):
        problems.append(f'robots has duplicates: {robots}')
    for namespace in robots:
        try:
            validate_namespace(namespace)
        except InvalidNamespaceException as err:
            problems.append(f'robots: {namespace!r} is not a valid namespace ({rclpy_reason(err)}): use names such as '
                            'robot_a or site_1/arm_a')
    try:
        sizes = check_batch_sizes(list(values['batch_sizes']))
    except Pi0Error as err:
        problems.append(str(err))
        sizes = DEFAULT_BATCH_SIZES
    wait = float(values['max_wait_ms'])
    if not wait >= 0:
        problems.append(f'max_wait_ms must be >= 0, got {wait}')
    device = values['device'].strip()
    if device and device != 'cpu' and _CUDA.fullmatch(device) is None:
        problems.append(f'device must be cpu, cuda or cuda:N (N the GPU index), got {device!r}')
    if problems:
        raise Pi0Error('invalid fleet parameters (set them in config/fleet.yaml or as launch arguments):\n'
                       + '\n'.join(f'  - {p}' for p in problems))
    return FleetParams(tuple(robots), sizes, wait, device)


def check_shared(robot: ControlParams, fleet: ControlParams, robot_name: str) -> None:
    """Refuse a robot whose shared parameters differ from the fleet's, naming each and where to set it."""
    differ = [f'{name}: {getattr(robot, name)!r} for {robot_name}, {getattr(fleet, name)!r} for the fleet'
              for name in SHARED_PARAMETERS if getattr(robot, name) != getattr(fleet, name)]
    if differ:
        raise Pi0Error(f'{", ".join(d.split(":")[0] for d in differ)} must be the same for every robot of a fleet '
                       f'(one policy serves them all): set it for every node (/**) or for {FLEET_NODE_NAME}, not '
                       'for one robot:\n' + '\n'.join(f'  - {d}' for d in differ))


def device_options(backend: str, device: str, options: dict[str, Any]) -> dict[str, Any]:
    """Return ``options`` with ``device`` ('', cpu, cuda, cuda:N) written as ``backend``'s own device option."""
    if not device:
        return dict(options)
    match = _CUDA.fullmatch(device)
    index = int(match.group(1) or 0) if match else None
    if backend == 'torch':
        return {**options, 'device': device}
    if backend in ('tensorrt', 'tensorrt_rtx'):
        if index is None:
            raise Pi0Error(f'device {device!r}: the {backend} backend runs on a GPU: give device:=cuda:N')
        return {**options, 'device': index}
    if backend == 'onnxruntime':
        if index not in (None, 0):
            raise Pi0Error(f'device {device!r}: the onnxruntime backend runs on cuda:0 of what the process sees: start '
                           f'it with CUDA_VISIBLE_DEVICES={index} and device:=cuda:0, or use tensorrt or torch')
        return {**options, 'device': 'cpu' if index is None else 'cuda'}
    raise Pi0Error(f'device {device!r}: no device option known for backend {backend!r}')


def effective_device(backend: str, options: dict[str, Any]) -> str:
    """Return where ``backend`` with ``options`` runs: 'cpu' or 'cuda:N' (N as the process numbers GPUs)."""
    device = options.get('device')
    if backend == 'torch':
        device = device or 'cuda'
        return 'cuda:0' if device == 'cuda' else device
    if backend in ('tensorrt', 'tensorrt_rtx'):
        return f'cuda:{device or 0}'
    return 'cuda:0' if device == 'cuda' else 'cpu'


def physical_gpu(device: str) -> int | str | None:
    """Return the GPU that NVML knows as ``device`` ('cuda:N'): its index, its UUID, or None (not a GPU).

    CUDA numbers only the GPUs in ``CUDA_VISIBLE_DEVICES``; NVML numbers every GPU of the host.
    """
    match = _CUDA.fullmatch(device)
    if match is None:
        return None
    index = int(match.group(1) or 0)
    listed = os.environ.get('CUDA_VISIBLE_DEVICES')
    if listed is None:
        return index
    visible = [v.strip() for v in listed.split(',') if v.strip()]
    if index >= len(visible):
        return None
    chosen = visible[index]
    return int(chosen) if chosen.isdigit() else chosen
