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

"""Write synthetic robot bags: a 6-joint robot seen by three cameras, 100 Hz joint states, an instruction.

The robot (``SyntheticRobot``): each joint moves on a sinusoid around its own centre
(``JOINT_CENTRES_RAD``), with amplitude, frequency, phase and offset drawn from the seed. The
cameras (``SyntheticScene``) show where the robot is going: camera k draws a red block whose
x / y position is the position joint 2k / 2k+1 will have ``TARGET_LEAD_S`` later (relative to
the joint's centre, ``TARGET_SPAN_RAD`` to the image edge), a blue distractor block on a path of
its own, a gradient background in the camera's own hue, and its index and frame number. A
policy that reads the red blocks and the joint states can predict the joints' next second; one
that mixes up cameras, colour channels, joint order or normalization cannot (the trained demo
policy, ``pi0_trt_ros.train_tiny``, learns exactly this from these functions).

The content is deterministic for a seed and cheap to make (numpy + OpenCV, no per-pixel Python).
Header stamps are the capture times with gaussian jitter; the bag's log time is the stamp plus a
transport delay with its own jitter, so ``log_time >= stamp`` and both increase per topic (the
``clock_jump`` and ``repeat_every`` options break that on purpose, for the node's stamp rules). Size
guide: one raw 640x480 rgb8 frame is 0.92 MB, so three cameras at 30 Hz write about 83 MB per
second; JPEG (``compressed=True``) or a smaller ``width``/``height`` keep bags small.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from pi0_trt_ros.bag.bag_io import bag_summary, BagSummary, jazzy_typestore, make_writer

# The camera topics of config/control.yaml (base, left wrist, right wrist).
DEFAULT_CAMERA_TOPICS = ('/cam_base/image_raw', '/cam_left_wrist/image_raw', '/cam_right_wrist/image_raw')
DEFAULT_JOINT_TOPIC = '/joint_states'
DEFAULT_INSTRUCTION_TOPIC = '/instruction'
DEFAULT_INSTRUCTION = 'pick up the red block and place it in the bin'
DEFAULT_JOINT_NAMES = tuple(f'joint_{i}' for i in range(1, 7))
DEFAULT_START_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z, fixed so bags reproduce
# What compressed_image_transport writes for an rgb8 source encoded by OpenCV (BGR order inside).
JPEG_FORMAT = 'rgb8; jpeg compressed bgr8'
CAMERA_DELAY_MS = 8.0  # capture -> recorder, mean part of the transport delay
JOINT_DELAY_MS = 1.0
_MAX_JITTER_PERIODS = 0.3  # jitter is clipped to this fraction of the period: order never changes
CLOCK_JUMP_PAUSE_S = 0.2  # clock_jump: the senders capture nothing this long before the jump
REPEAT_DELAY_NS = 100_000  # repeat_every: a message sent again is logged this long after the first
_LEAD_S = 0.02  # sensor streams start this long after the instruction, so it is logged first
_QOS = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE, QosTime(0, 0),
           QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)


# Joint j moves around JOINT_CENTRES_RAD[j % 6] (distinct per joint, as on a real arm, so that
# per-joint normalization statistics differ and a mix-up shows).
JOINT_CENTRES_RAD = (0.0, -0.6, 0.9, -0.3, 0.5, -1.0)
TARGET_LEAD_S = 0.5  # the red blocks show the joint positions this far ahead (s)
TARGET_SPAN_RAD = 0.9  # joint centre +- this maps to the image's edges
TARGET_RGB = (230, 40, 40)  # red: the target block
DISTRACTOR_RGB = (40, 40, 230)  # blue: same size, moves on its own
DISTRACTOR_HZ = (0.23, 0.31)  # x, y frequencies of the distractor's path


def joint_centres(num_joints: int) -> np.ndarray:
    """Centre of each joint's motion (rad), float64 [J]."""
    return np.array([JOINT_CENTRES_RAD[j % len(JOINT_CENTRES_RAD)] for j in range(num_joints)], np.float64)


@dataclasses.dataclass(frozen=True)
class SyntheticRobot:
    """Joint j at time t (s): ``offset[j] + amplitude[j] * sin(2 pi frequency[j] t + phase[j])`` (rad)."""

    amplitude: np.ndarray  # float64 [J], rad
    frequency: np.ndarray  # float64 [J], Hz
    phase: np.ndarray  # float64 [J], rad
    offset: np.ndarray  # float64 [J], rad

    @classmethod
    def random(cls, rng: np.random.Generator, num_joints: int) -> 'SyntheticRobot':
        """Draw a robot: amplitude 0.2-0.6 rad, 0.1-0.4 Hz, any phase, offset centre +- 0.25 rad."""
        centres = joint_centres(num_joints)
        return cls(amplitude=rng.uniform(0.2, 0.6, num_joints), frequency=rng.uniform(0.1, 0.4, num_joints),
                   phase=rng.uniform(0.0, 2.0 * math.pi, num_joints),
                   offset=centres + rng.uniform(-0.25, 0.25, num_joints))

    @property
    def num_joints(self) -> int:
        return int(self.amplitude.size)

    def positions(self, t_s: np.ndarray | float) -> np.ndarray:
        """Return the joint angles at times t_s [...] (s): rad, float64 [..., J]."""
        arg = 2.0 * math.pi * self.frequency * np.asarray(t_s, np.float64)[..., None] + self.phase
        return self.offset + self.amplitude * np.sin(arg)

    def velocities(self, t_s: np.ndarray | float) -> np.ndarray:
        """Return the joint speeds at times t_s [...] (s): rad/s, float64 [..., J]."""
        arg = 2.0 * math.pi * self.frequency * np.asarray(t_s, np.float64)[..., None] + self.phase
        return self.amplitude * 2.0 * math.pi * self.frequency * np.cos(arg)


def camera_joints(cam: int, num_joints: int) -> tuple[int, int]:
    """Return the joints camera ``cam`` shows: its red block's x is joint 2*cam, y joint 2*cam + 1 (mod J)."""
    return (2 * cam) % num_joints, (2 * cam + 1) % num_joints


def target_xy(robot: SyntheticRobot, cam: int, t_s: float) -> np.ndarray:
    """Red block position of camera ``cam`` at time t_s, float64 [2] in [0, 1] (x, y fractions)."""
    future = robot.positions(t_s + TARGET_LEAD_S)
    joints = list(camera_joints(cam, robot.num_joints))
    rel = (future - joint_centres(robot.num_joints))[joints] / TARGET_SPAN_RAD  # [2] in [-1, 1]
    return np.clip(0.5 + 0.5 * rel, 0.0, 1.0)


def _camera_background(width: int, height: int, cam: int) -> np.ndarray:
    """Gradient in the camera's own hue: uint8 [H, W, 3] RGB."""
    hue = np.array([(cam * 0.37) % 1.0, (cam * 0.37 + 0.33) % 1.0, (cam * 0.37 + 0.66) % 1.0], np.float32)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]  # [1, W, 1]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]  # [H, 1, 1]
    img = 40.0 + 150.0 * (x * hue + y * (1.0 - hue))  # [H, W, 3]
    return img.astype(np.uint8)


class SyntheticScene:
    """Renders the camera views: background per camera, blue distractor, red target block, label."""

    def __init__(self, width: int, height: int, num_cameras: int, distractor_phases: np.ndarray) -> None:
        self.width, self.height = width, height
        self.backgrounds = [_camera_background(width, height, i) for i in range(num_cameras)]
        self.distractor_phases = np.asarray(distractor_phases, np.float64).reshape(num_cameras, 2)
        self.block = max(4, min(width, height) // 6)
        self.font_scale = max(0.3, height / 480.0)

    def distractor_xy(self, cam: int, t_s: float) -> np.ndarray:
        """Distractor position of camera ``cam`` at t_s, float64 [2] in [0, 1]."""
        arg = 2.0 * math.pi * np.array(DISTRACTOR_HZ) * t_s + self.distractor_phases[cam]
        return 0.5 + 0.5 * np.sin(arg)

    def render(self, cam: int, frame: int, target: np.ndarray, distractor: np.ndarray) -> np.ndarray:
        """Camera ``cam``'s frame ``frame`` with the blocks at ``target`` / ``distractor`` ([2] in [0, 1]).

        Returns uint8 [H, W, 3] RGB. The target is drawn last (on top).
        """
        img = self.backgrounds[cam].copy()
        for xy, color in ((distractor, DISTRACTOR_RGB), (target, TARGET_RGB)):
            x0 = int(round(float(xy[0]) * (self.width - self.block)))
            y0 = int(round(float(xy[1]) * (self.height - self.block)))
            cv2.rectangle(img, (x0, y0), (x0 + self.block - 1, y0 + self.block - 1), color, thickness=-1)
        baseline = int(22 * self.font_scale)
        cv2.putText(img, f'cam {cam}  #{frame}', (4, baseline), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * self.font_scale,
                    (255, 255, 255), max(1, int(round(self.font_scale))), cv2.LINE_AA)
        return img

    def view(self, robot: SyntheticRobot, cam: int, t_s: float, frame: int) -> np.ndarray:
        """Render what camera ``cam`` sees of ``robot`` at time t_s: uint8 [H, W, 3] RGB."""
        return self.render(cam, frame, target_xy(robot, cam, t_s), self.distractor_xy(cam, t_s))


def _times(rng: np.random.Generator, start_s: float, duration_s: float, hz: float, jitter_ms: float,
           delay_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nominal capture times (s from bag start), jittered stamps and log times (ns offsets), per sample."""
    period = 1.0 / hz
    nominal = start_s + np.arange(int(math.floor((duration_s - start_s) * hz)) + 1) * period
    nominal = nominal[nominal < duration_s]
    limit = _MAX_JITTER_PERIODS * period
    sigma = jitter_ms * 1e-3
    stamp = nominal + np.clip(rng.normal(0.0, sigma, nominal.size), -limit, limit)
    delay = delay_ms * 1e-3 + np.clip(np.abs(rng.normal(0.0, sigma, nominal.size)), 0.0, limit)
    return nominal, np.round(stamp * 1e9).astype(np.int64), np.round((stamp + delay) * 1e9).astype(np.int64)


def make_bag(out_path: str | Path, *, duration_s: float = 3.0,
             camera_topics: Sequence[str] = DEFAULT_CAMERA_TOPICS,
             joint_topic: str = DEFAULT_JOINT_TOPIC, instruction_topic: str = DEFAULT_INSTRUCTION_TOPIC,
             instruction: str = DEFAULT_INSTRUCTION, compressed: bool = False, width: int = 640, height: int = 480,
             camera_hz: float = 30.0, joint_hz: float = 100.0, joint_names: Sequence[str] = DEFAULT_JOINT_NAMES,
             jitter_ms: float = 1.5, dropout: tuple[int, float, float] | None = None,
             clock_jump: tuple[float, float] | None = None, repeat_every: int = 0, seed: int = 0,
             storage: str = 'sqlite3', jpeg_quality: int = 90, start_ns: int = DEFAULT_START_NS) -> BagSummary:
    """Write a synthetic bag to the new directory ``out_path`` and return its summary.

    - ``duration_s``: length of the recording (s); sensor samples are captured in [0.02, duration_s).
    - ``camera_topics``: one topic per camera: ``sensor_msgs/Image`` rgb8, or with ``compressed``
      ``sensor_msgs/CompressedImage`` JPEG (format ``JPEG_FORMAT``), ``width`` x ``height`` pixels.
    - ``joint_topic``: ``sensor_msgs/JointState`` (position rad, velocity rad/s) of ``joint_names``.
    - ``instruction_topic``: ``std_msgs/String``; ``instruction`` is logged once, first, at ``start_ns``.
    - ``camera_hz``, ``joint_hz``: rates (Hz); camera i's stream starts i ms after the joint stream.
    - ``jitter_ms``: standard deviation (ms) of the stamp jitter and of the transport-delay jitter;
      both are clipped to 0.3 periods so each topic stays in order.
    - ``dropout``: ``(camera index, start_s, end_s)``: that camera records no frame captured in
      [start_s, end_s) (a camera that stops and comes back).
    - ``clock_jump``: ``(at_s, back_s)``: the senders' clock is set back by ``back_s`` seconds at
      ``at_s`` (a simulation that restarts, a clock reset): every sample captured from ``at_s`` on
      is stamped ``back_s`` earlier, while log times go on. The senders capture nothing in the
      ``CLOCK_JUMP_PAUSE_S`` before ``at_s``, so every message stamped before the jump is logged
      before any stamped after it. The scene and the joints go on as if nothing happened.
    - ``repeat_every``: every n-th message of each camera and of the joint stream (n > 0) is logged
      a second time, ``REPEAT_DELAY_NS`` later, with the same stamp and content (a driver that
      sends a message again).
    - ``seed``: the random seed; the same seed writes the same bag.
    - ``storage``: 'sqlite3' or 'mcap'.
    - ``jpeg_quality``: OpenCV JPEG quality (0-100) when ``compressed``.
    - ``start_ns``: the bag's first log time (ns since the epoch); stamps are offsets from it.
    """
    if duration_s <= 0 or camera_hz <= 0 or joint_hz <= 0 or width <= 0 or height <= 0:
        raise ValueError('duration_s, camera_hz, joint_hz, width and height must be positive')
    if jitter_ms < 0:
        raise ValueError(f'jitter_ms must be >= 0, got {jitter_ms}')
    if dropout is not None and not 0 <= dropout[0] < len(camera_topics):
        raise ValueError(f'dropout camera index {dropout[0]} is not in 0..{len(camera_topics) - 1}')
    if clock_jump is not None and not (CLOCK_JUMP_PAUSE_S < clock_jump[0] < duration_s and clock_jump[1] > 0):
        raise ValueError(f'clock_jump (at_s, back_s) needs {CLOCK_JUMP_PAUSE_S} < at_s < duration_s and back_s > 0, '
                         f'got {clock_jump}')
    if repeat_every < 0:
        raise ValueError(f'repeat_every must be >= 0 (0: no message sent again), got {repeat_every}')
    ts = jazzy_typestore()
    Header, Time = ts.types['std_msgs/msg/Header'], ts.types['builtin_interfaces/msg/Time']
    image_type = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
    Image, JointState = ts.types[image_type], ts.types['sensor_msgs/msg/JointState']
    String = ts.types['std_msgs/msg/String']
    rng = np.random.default_rng(seed)
    robot = SyntheticRobot.random(rng, len(joint_names))
    scene = SyntheticScene(width, height, len(camera_topics),
                           rng.uniform(0.0, 2.0 * math.pi, (len(camera_topics), 2)))

    def header_offsets(nominal: np.ndarray) -> np.ndarray:
        """Stamp minus capture time per sample (ns): -back_s after a clock jump, else 0."""
        if clock_jump is None:
            return np.zeros(nominal.size, np.int64)
        return np.where(nominal >= clock_jump[0], -int(round(clock_jump[1] * 1e9)), 0)

    def sent(kind: int, nominal: np.ndarray, logs: np.ndarray, keep: np.ndarray) -> list[tuple[int, int, int]]:
        """Events of one stream: the kept samples, and the ones sent again."""
        if clock_jump is not None:
            keep = keep & ((nominal < clock_jump[0] - CLOCK_JUMP_PAUSE_S) | (nominal >= clock_jump[0]))
        kept = np.flatnonzero(keep)
        again = kept[repeat_every - 1::repeat_every] if repeat_every else kept[:0]
        return ([(int(logs[k]), kind, int(k)) for k in kept]
                + [(int(logs[k]) + REPEAT_DELAY_NS, kind, int(k)) for k in again])

    # Every message as (log time ns, kind, index); kind -1 is the joint stream, k >= 0 camera k.
    events: list[tuple[int, int, int]] = []
    cam_times = []
    for cam in range(len(camera_topics)):
        nominal, stamps, logs = _times(rng, _LEAD_S + cam * 1e-3, duration_s, camera_hz, jitter_ms, CAMERA_DELAY_MS)
        keep = np.ones(nominal.size, bool)
        if dropout is not None and dropout[0] == cam:
            keep = (nominal < dropout[1]) | (nominal >= dropout[2])
        cam_times.append((nominal, stamps, header_offsets(nominal)))
        events.extend(sent(cam, nominal, logs, keep))
    j_nominal, j_stamps, j_logs = _times(rng, _LEAD_S, duration_s, joint_hz, jitter_ms, JOINT_DELAY_MS)
    j_offsets = header_offsets(j_nominal)
    events.extend(sent(-1, j_nominal, j_logs, np.ones(j_nominal.size, bool)))
    events.sort()

    def header(stamp: int, frame_id: str) -> object:
        sec, nanosec = divmod(start_ns + stamp, 1_000_000_000)
        return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)

    with make_writer(out_path, storage) as writer:
        conn_instr = writer.add_connection(instruction_topic, 'std_msgs/msg/String', typestore=ts,
                                           offered_qos_profiles=[_QOS])
        conn_cams = [writer.add_connection(t, image_type, typestore=ts, offered_qos_profiles=[_QOS])
                     for t in camera_topics]
        conn_joint = writer.add_connection(joint_topic, 'sensor_msgs/msg/JointState', typestore=ts,
                                           offered_qos_profiles=[_QOS])
        writer.write(conn_instr, start_ns, ts.serialize_cdr(String(data=instruction), 'std_msgs/msg/String'))
        for log, kind, k in events:
            if kind < 0:
                t = j_stamps[k] * 1e-9
                msg = JointState(header=header(int(j_stamps[k] + j_offsets[k]), 'base_link'), name=list(joint_names),
                                 position=robot.positions(t), velocity=robot.velocities(t),
                                 effort=np.zeros(0, np.float64))
                writer.write(conn_joint, start_ns + log, ts.serialize_cdr(msg, 'sensor_msgs/msg/JointState'))
                continue
            nominal, stamps, offsets = cam_times[kind]
            rgb = scene.view(robot, kind, float(nominal[k]), k)
            hdr = header(int(stamps[k] + offsets[k]), f'camera_{kind}_optical_frame')
            if compressed:
                ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                if not ok:
                    raise RuntimeError('OpenCV failed to encode a JPEG frame')
                msg = Image(header=hdr, format=JPEG_FORMAT, data=jpeg.reshape(-1))
            else:
                msg = Image(header=hdr, height=height, width=width, encoding='rgb8', is_bigendian=0, step=width * 3,
                            data=rgb.reshape(-1))
            writer.write(conn_cams[kind], start_ns + log, ts.serialize_cdr(msg, image_type))
    return bag_summary(out_path)
