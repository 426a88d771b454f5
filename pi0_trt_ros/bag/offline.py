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

"""Offline replay: the control node's observation pipeline and runner on a bag, without DDS.

Messages are taken in log-time order, serialized as recorded, and fed to the node's own
``ObservationPipeline`` (the same CDR reading, frame and joint checks, stamp rules, joint ring,
ApproximateTimeSync, nearest joint sample, observation age), with each message's log time (when the
recorder received it) standing for the node's clock and receive time. So a bag is judged by the
rules the node applies live: a stamp too far ahead of its log time or repeated on a camera is
rejected, a clock jump (a bag that loops) makes the synchronizer and the joint ring start over, and
a set older than ``max_observation_age_ms`` at its log time is not used (0 turns that off, for a
bag whose log times are not on the stamps' clock). Each set handed over is inferred at once (the
node's ``every_set`` mode) with the tokenizer, the runner, noise draw k for inference k and
ActionSanitizer, as fast as possible or paced at the recorded timing (``realtime``). For regression
checks on recorded data, and to compare with what the live node commanded for the same sets.

A live node differs from a replay at full speed in two ways it reports on ``~/status``: when it
is still busy as a newer set arrives it supersedes the older one (newest set wins), and it
matches each set to the nearest joint sample it has received by then, which under load may be
another one (earlier or later) than the bag's order gives. To compare with such a run, pass ``only``: the node's
cycles (``cycles_from_status``), each naming its set by newest camera stamp, its joint sample and
its noise draw (the node's ``cycle_index``: it draws once per inference, so the two agree while no
inference raised). Every other set is formed but not inferred.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
import time
from typing import Any, Sequence

import numpy as np

from pi0_trt_ros.bag.bag_io import read_bag
from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.actions import ActionSanitizer
from pi0_trt_ros.node.cdr import CdrError, parse_joint_state
from pi0_trt_ros.node.deadline import STATUS_FIELDS
from pi0_trt_ros.node.faults import BadInput, FaultCounters
from pi0_trt_ros.node.images import ImageDecoder
from pi0_trt_ros.node.joints import JointPicker
from pi0_trt_ros.node.observation import ObservationPipeline
from pi0_trt_ros.node.params import check_against_policy, ControlParams
from pi0_trt_ros.runners.base import Runner


CAMERA_TYPES = {'raw': 'sensor_msgs/msg/Image', 'compressed': 'sensor_msgs/msg/CompressedImage'}  # by transport
JOINT_STATE = 'sensor_msgs/msg/JointState'


@dataclasses.dataclass
class OfflineResult:
    """One row per synchronized set that reached inference, in order."""

    chunks: np.ndarray  # float64 [n, T, dof], sanitized action chunks (robot units)
    set_stamps_ns: np.ndarray  # int64 [n], newest camera header stamp of each inferred set
    inference_ms: np.ndarray  # float64 [n]
    faults: dict[str, int]  # bad inputs by kind, as the node counts them (some used anyway: joint_extra, clock_jump)
    formed_stamps_ns: np.ndarray  # int64 [m >= n], every set that reached inference or, with ``only``, could have

    @property
    def commands(self) -> np.ndarray:
        """Return the first action of each chunk, float64 [n, dof]: what ``every_set`` mode commands."""
        return self.chunks[:, 0]


def absolute(topic: str) -> str:
    return topic if topic.startswith('/') else '/' + topic


@dataclasses.dataclass(frozen=True)
class NodeCycle:
    """What one cycle of the live node used, as its ``~/status`` reports it."""

    set_stamp_ns: int  # newest camera header stamp of the set
    joint_stamp_ns: int  # header stamp of the joint sample matched to it
    noise_draw: int  # index of the noise draw (the node's cycle_index)


def cycles_from_status(rows: np.ndarray) -> list[NodeCycle]:
    """Read ``NodeCycle``s from ``~/status`` data, float64 [cycles, len(STATUS_FIELDS)]."""
    field = {name: rows[:, i] for i, name in enumerate(STATUS_FIELDS)}
    sets = field['set_stamp_sec'].astype(np.int64) * 1_000_000_000 + field['set_stamp_nanosec'].astype(np.int64)
    joints = sets + np.round(field['joint_offset_ms'] * 1e6).astype(np.int64)
    return [NodeCycle(int(s), int(j), int(k)) for s, j, k in zip(sets, joints, field['cycle_index'])]


class NoiseDraws:
    """The node's noise stream: draw k is the k-th ``rng.standard_normal`` into the staging buffer."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(None if seed < 0 else seed)
        self._next = 0  # index of the next draw

    def draw_into(self, index: int, out: np.ndarray) -> None:
        """Write draw ``index`` into ``out`` (float32 [T, max_action_dim]); indices must increase."""
        if index < self._next:
            raise Pi0Error(f'noise draw {index} was asked after draw {self._next - 1}: ask in increasing order')
        while self._next <= index:
            self._rng.standard_normal(dtype=np.float32, out=out)
            self._next += 1


def _quiet(line: str) -> None:
    """Log nothing: offline replay reports bad inputs in its result, not line by line."""


def _joint_samples(bag: str | Path, topic: str, picker: JointPicker) -> dict[int, np.ndarray]:
    """Return every usable joint sample of ``bag``: header stamp (ns) -> float32 [dof] positions."""
    samples = {}
    for _, _, _, raw in read_bag(bag, [topic], raw=True):
        try:
            msg = parse_joint_state(raw)
        except CdrError:
            continue  # malformed: the node could not have used it either
        row = np.zeros(picker.dof, np.float32)
        bad = picker.pick_into(msg.name, msg.position, row)
        if bad is None or bad.used:
            samples[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = row
    return samples


def _check_type(topic: str, msgtype: str, expected: str) -> None:
    """Refuse a bag topic whose message type is not the one the configuration reads it as."""
    if msgtype != expected:
        raise Pi0Error(f'{topic} holds {msgtype} but the configuration reads it as {expected}: set the camera '
                       "type ('raw': sensor_msgs/msg/Image, 'compressed': sensor_msgs/msg/CompressedImage) or the "
                       'topic to match the bag')


def replay_offline(bag: str | Path, params: ControlParams, runner: Runner, tokenizer: Any,
                   realtime: bool = False, rate: float = 1.0, only: Sequence[NodeCycle] | None = None
                   ) -> OfflineResult:
    """Run ``bag`` through the node's observation pipeline with an active ``runner``; see the module docstring.

    ``only``: the sets to infer, as a live node used them; None: every set, set k with draw k.
    """
    from pi0_trt_ros.node.instruction import decode_instruction

    io, staging = runner.io, runner.staging
    check_against_policy(params, io)  # the node's start-up check: cameras, joints and chunk settings fit
    cams = {absolute(c.topic): i for i, c in enumerate(params.cameras)}
    joint_topic, instruction_topic = absolute(params.joint_states_topic), absolute(params.instruction_topic)
    decoders = [ImageDecoder(staging.images[io.camera_keys.index(c.key)], c.transport, params.resize_mismatched)
                for c in params.cameras]
    dof = len(params.joint_names)
    sanitizer = ActionSanitizer(params.joint_lower_limits, params.joint_upper_limits, io.chunk_size)
    noise = NoiseDraws(params.noise_seed)
    if params.fixed_noise:
        noise.draw_into(0, staging.noise)
    latest = np.zeros(dof, np.float64)  # [dof] newest accepted joint positions: the hold for NaN actions
    faults = FaultCounters(_quiet, _quiet)  # counted for the result, not logged
    selected = None if only is None else {c.set_stamp_ns: c for c in only}
    chunks, stamps, infer_ms, formed = [], [], [], []
    have_instruction = False

    def infer(frames: tuple[Any, ...], state: np.ndarray, newest: int, joint_stamp: int, t_recv: int) -> bool:
        """Stage one handed-over set and infer it (every set, or those of ``only``); True when formed."""
        cycle = None if selected is None else selected.get(newest)
        if cycle is not None:  # the node's joint sample, which a starved node may have taken from after the frames
            state = node_joints.get(cycle.joint_stamp_ns)
            if state is None:
                faults.add('observation', BadInput('joint_state_unmatched', "the node's joint sample is not in "
                                                   'the bag'))
                return False
        if not have_instruction:
            faults.add('observation', BadInput('no_instruction', 'set formed before the instruction'))
            return False
        formed.append(newest)
        if selected is not None and cycle is None:
            return True
        for decoder, frame in zip(decoders, frames):
            decoder.write(frame)
        np.copyto(staging.state, state)
        if not params.fixed_noise:
            noise.draw_into(len(chunks) if cycle is None else cycle.noise_draw, staging.noise)
        t0 = time.perf_counter()
        actions = runner.infer()
        infer_ms.append((time.perf_counter() - t0) * 1e3)
        chunk = np.zeros((io.chunk_size, dof), np.float64)
        sanitizer.sanitize_into(actions, latest, chunk)
        chunks.append(chunk)
        stamps.append(newest)
        return True

    pipeline = ObservationPipeline.from_params(params, decoders, faults, infer,
                                               lambda positions: np.copyto(latest, positions))
    node_joints = {} if only is None else _joint_samples(bag, joint_topic, pipeline.picker)
    checked: set[str] = set()  # topics whose type was checked against the configuration
    t_wall0 = t_bag0 = None
    for topic, msgtype, log_ns, raw in read_bag(bag, raw=True):
        if realtime:
            t_wall0 = time.monotonic_ns() if t_wall0 is None else t_wall0
            t_bag0 = log_ns if t_bag0 is None else t_bag0
            wait = t_wall0 + (log_ns - t_bag0) / rate - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
        if topic == instruction_topic:
            text = decode_instruction(raw)
            if text.strip():
                tokenizer.encode_into(text, staging.tokens, staging.token_mask)
                have_instruction = True
            continue
        index = cams.get(topic)
        if index is None and topic != joint_topic:
            continue
        if topic not in checked:
            _check_type(topic, msgtype, JOINT_STATE if index is None else CAMERA_TYPES[params.cameras[index].transport])
            checked.add(topic)
        if index is None:  # the log time stands for both the node's clock and the receive time
            pipeline.add_serialized_joint_state(raw, log_ns, log_ns)
        else:
            pipeline.add_serialized_frame(index, raw, log_ns, log_ns)
    counts = faults.counts()
    if not chunks:
        raise Pi0Error(f'{bag}: no synchronized set reached inference ({counts}); check the camera topics '
                       f'{sorted(cams)}, {joint_topic} and {instruction_topic} against the bag')
    return OfflineResult(chunks=np.stack(chunks), set_stamps_ns=np.array(stamps, np.int64),
                         inference_ms=np.array(infer_ms), faults=counts, formed_stamps_ns=np.array(formed, np.int64))


def cmd_replay_offline(args: Any) -> int:
    """`pi0-trt replay BAG --offline ...`."""
    from pi0_trt_ros.node.params import default_params_file, params_from_yaml
    from pi0_trt_ros.runners import make_runner
    from pi0_trt_ros.tokenizer import Pi0Tokenizer

    overrides = {k: str(v) for k, v in (('engine_dir', args.engine_dir), ('checkpoint', args.checkpoint),
                                        ('tokenizer', args.tokenizer)) if v}
    params = params_from_yaml(args.config or default_params_file(), overrides)
    options = params.backend_options if args.backend == params.backend else {}
    runner = make_runner(args.backend, engine_dir=params.engine_dir or None, checkpoint=params.checkpoint or None,
                         **options)
    with runner:
        tokenizer = Pi0Tokenizer.from_path(params.tokenizer, runner.io.token_len)
        result = replay_offline(args.bag, params, runner, tokenizer, realtime=args.realtime, rate=args.rate)
    ms = result.inference_ms
    print(f'offline replay of {args.bag}: {len(result.chunks)} sets -> {len(result.chunks)} inferences; '
          f'inference p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms; '
          f'bad inputs: {result.faults}')
    if args.out:
        np.savez(args.out, commands=result.commands, chunks=result.chunks, set_stamps_ns=result.set_stamps_ns,
                 inference_ms=result.inference_ms)
        print(f'wrote {args.out}')
    return 0
