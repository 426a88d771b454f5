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

"""Write synthetic robot bags: three moving camera views, 100 Hz joint states and one instruction.

The content is deterministic for a seed and cheap to make (numpy + OpenCV, no per-pixel Python):
each camera shows a gradient background in its own hue, a block moving on a smooth path, and
its camera index and frame number drawn in. Joint positions are sinusoids with matching
velocities. Header stamps are the capture times with gaussian jitter; the bag's log time is the
stamp plus a transport delay with its own jitter, so ``log_time >= stamp`` and both increase per
topic. Size guide: one raw 640x480 rgb8 frame is 0.92 MB, so three cameras at 30 Hz write about
83 MB per second; JPEG (``compressed=True``) or a smaller ``width``/``height`` keep bags small.
"""

from __future__ import annotations

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
_LEAD_S = 0.02  # sensor streams start this long after the instruction, so it is logged first
_QOS = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE, QosTime(0, 0),
           QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)


def _camera_background(width: int, height: int, cam: int) -> np.ndarray:
    """Gradient in the camera's own hue: uint8 [H, W, 3] RGB."""
    hue = np.array([(cam * 0.37) % 1.0, (cam * 0.37 + 0.33) % 1.0, (cam * 0.37 + 0.66) % 1.0], np.float32)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]  # [1, W, 1]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]  # [H, 1, 1]
    img = 40.0 + 150.0 * (x * hue + y * (1.0 - hue))  # [H, W, 3]
    return img.astype(np.uint8)


class _Scene:
    """Renders the frames of every camera; per camera a different hue, path and block color."""

    def __init__(self, width: int, height: int, num_cameras: int, rng: np.random.Generator) -> None:
        self.width, self.height = width, height
        self.backgrounds = [_camera_background(width, height, i) for i in range(num_cameras)]
        self.phases = rng.uniform(0.0, 2.0 * math.pi, size=(num_cameras, 2))
        self.colors = [tuple(int(c) for c in rng.integers(0, 256, size=3)) for _ in range(num_cameras)]
        self.block = max(4, min(width, height) // 6)
        self.font_scale = max(0.3, height / 480.0)

    def render(self, cam: int, t_s: float, frame: int) -> np.ndarray:
        """Frame ``frame`` of camera ``cam`` at scene time ``t_s``: uint8 [H, W, 3] RGB."""
        img = self.backgrounds[cam].copy()
        fx = 0.5 + 0.45 * math.sin(2.0 * math.pi * 0.25 * t_s + self.phases[cam, 0])
        fy = 0.5 + 0.45 * math.sin(2.0 * math.pi * 0.17 * t_s + self.phases[cam, 1])
        x0 = int(fx * (self.width - self.block))
        y0 = int(fy * (self.height - self.block))
        cv2.rectangle(img, (x0, y0), (x0 + self.block, y0 + self.block), self.colors[cam], thickness=-1)
        baseline = int(22 * self.font_scale)
        cv2.putText(img, f'cam {cam}  #{frame}', (4, baseline), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * self.font_scale,
                    (255, 255, 255), max(1, int(round(self.font_scale))), cv2.LINE_AA)
        return img


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
             jitter_ms: float = 1.5, dropout: tuple[int, float, float] | None = None, seed: int = 0,
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
    ts = jazzy_typestore()
    Header, Time = ts.types['std_msgs/msg/Header'], ts.types['builtin_interfaces/msg/Time']
    image_type = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
    Image, JointState = ts.types[image_type], ts.types['sensor_msgs/msg/JointState']
    String = ts.types['std_msgs/msg/String']
    rng = np.random.default_rng(seed)
    scene = _Scene(width, height, len(camera_topics), rng)

    # Every message as (log time ns, kind, index); kind -1 is the joint stream, k >= 0 camera k.
    events: list[tuple[int, int, int]] = []
    cam_times = []
    for cam in range(len(camera_topics)):
        nominal, stamps, logs = _times(rng, _LEAD_S + cam * 1e-3, duration_s, camera_hz, jitter_ms, CAMERA_DELAY_MS)
        keep = np.ones(nominal.size, bool)
        if dropout is not None and dropout[0] == cam:
            keep = (nominal < dropout[1]) | (nominal >= dropout[2])
        cam_times.append((nominal, stamps))
        events.extend((int(logs[k]), cam, int(k)) for k in np.flatnonzero(keep))
    j_nominal, j_stamps, j_logs = _times(rng, _LEAD_S, duration_s, joint_hz, jitter_ms, JOINT_DELAY_MS)
    events.extend((int(j_logs[k]), -1, k) for k in range(j_nominal.size))
    events.sort()

    n_joints = len(joint_names)
    amp = rng.uniform(0.2, 0.6, n_joints)  # rad
    freq = rng.uniform(0.1, 0.4, n_joints)  # Hz
    phase = rng.uniform(0.0, 2.0 * math.pi, n_joints)
    offset = rng.uniform(-0.5, 0.5, n_joints)  # rad

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
                arg = 2.0 * math.pi * freq * t + phase
                msg = JointState(header=header(int(j_stamps[k]), 'base_link'), name=list(joint_names),
                                 position=amp * np.sin(arg) + offset, velocity=amp * 2.0 * math.pi * freq * np.cos(arg),
                                 effort=np.zeros(0, np.float64))
                writer.write(conn_joint, start_ns + log, ts.serialize_cdr(msg, 'sensor_msgs/msg/JointState'))
                continue
            nominal, stamps = cam_times[kind]
            rgb = scene.render(kind, float(nominal[k]), k)
            hdr = header(int(stamps[k]), f'camera_{kind}_optical_frame')
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
