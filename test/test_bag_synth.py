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

"""Tests of the synthetic bag writer and the bag reader, sqlite3 and mcap, raw and JPEG."""

from collections import defaultdict
import math

import cv2
import numpy as np
import pytest

from pi0_trt_ros.bag.bag_io import bag_storage, bag_summary, read_bag, stamp_ns
from pi0_trt_ros.bag.synth import (
    CLOCK_JUMP_PAUSE_S, DEFAULT_CAMERA_TOPICS, DEFAULT_INSTRUCTION, DEFAULT_JOINT_NAMES, DEFAULT_START_NS, JPEG_FORMAT,
    make_bag, REPEAT_DELAY_NS)
from pi0_trt_ros.errors import Pi0Error

W, H = 160, 120
DURATION = 1.0
LEAD_S = 0.02  # sensor streams start 20 ms after the instruction
JITTER_MS = 1.5
CLIP_S = 0.3 / 100.0  # jitter clip of the fastest (100 Hz) stream


def _expected_frames(cam: int, hz: float = 30.0) -> int:
    start = LEAD_S + cam * 1e-3
    return sum(1 for k in range(200) if start + k / hz < DURATION)


def _by_topic(path):
    out = defaultdict(list)
    for m in read_bag(path):
        out[m.topic].append(m)
    return out


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
@pytest.mark.parametrize('compressed', [False, True])
def test_round_trip_writes_every_stream_with_jittered_monotonic_stamps(tmp_path, storage, compressed):
    path = tmp_path / 'bag'
    summary = make_bag(path, duration_s=DURATION, width=W, height=H, compressed=compressed, storage=storage,
                       jitter_ms=JITTER_MS, seed=3)
    assert bag_storage(path) == storage
    image_type = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
    expected = {t: (image_type, _expected_frames(i)) for i, t in enumerate(DEFAULT_CAMERA_TOPICS)}
    expected['/joint_states'] = ('sensor_msgs/msg/JointState', _expected_frames(0, 100.0))
    expected['/instruction'] = ('std_msgs/msg/String', 1)
    assert summary.topics == expected
    assert summary == bag_summary(path)

    messages = list(read_bag(path))
    assert [m.log_time_ns for m in messages] == sorted(m.log_time_ns for m in messages)
    first = messages[0]
    assert (first.topic, first.msg.data, first.log_time_ns) == ('/instruction', DEFAULT_INSTRUCTION, DEFAULT_START_NS)

    topics = _by_topic(path)
    for topic in [*DEFAULT_CAMERA_TOPICS, '/joint_states']:
        hz = 100.0 if topic == '/joint_states' else 30.0
        cam = DEFAULT_CAMERA_TOPICS.index(topic) if topic in DEFAULT_CAMERA_TOPICS else 0
        stamps = np.array([stamp_ns(m.msg.header.stamp) for m in topics[topic]], dtype=np.int64)
        logs = np.array([m.log_time_ns for m in topics[topic]], dtype=np.int64)
        assert np.all(np.diff(stamps) > 0) and np.all(np.diff(logs) > 0)
        assert np.all(logs > stamps)  # received after capture
        nominal_ns = (LEAD_S + cam * 1e-3 + np.arange(stamps.size) / hz) * 1e9
        jitter_ms = ((stamps - DEFAULT_START_NS) - nominal_ns) / 1e6
        assert np.abs(jitter_ms).max() <= 0.3e3 / hz + 1e-6  # clipped to 0.3 periods
        assert 0.5 * JITTER_MS < jitter_ms.std() < 1.5 * JITTER_MS  # realistic, not constant

    for i, topic in enumerate(DEFAULT_CAMERA_TOPICS):
        frames = []
        for m in topics[topic][:3]:
            assert m.msg.header.frame_id == f'camera_{i}_optical_frame'
            if compressed:
                assert m.msg.format == JPEG_FORMAT
                bgr = cv2.imdecode(m.msg.data, cv2.IMREAD_COLOR)
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            else:
                assert (m.msg.encoding, m.msg.width, m.msg.height, m.msg.step) == ('rgb8', W, H, W * 3)
                assert m.msg.is_bigendian == 0 and m.msg.data.size == W * H * 3
                frames.append(m.msg.data.reshape(H, W, 3))
        assert frames[0].shape == (H, W, 3)
        assert np.abs(frames[1].astype(int) - frames[0]).mean() > 0.1  # the scene moves

    joints = topics['/joint_states']
    assert all(list(m.msg.name) == list(DEFAULT_JOINT_NAMES) for m in joints)
    t = np.array([stamp_ns(m.msg.header.stamp) for m in joints]) / 1e9
    pos = np.stack([m.msg.position for m in joints])  # [n, 6] rad
    vel = np.stack([m.msg.velocity for m in joints])  # [n, 6] rad/s
    finite_diff = np.diff(pos, axis=0) / np.diff(t)[:, None]
    assert np.allclose(finite_diff, 0.5 * (vel[1:] + vel[:-1]), atol=2e-3)
    assert np.ptp(pos, axis=0).min() > 0.01  # every joint moves


def test_jpeg_frames_show_the_same_scene_as_raw_frames(tmp_path):
    raw = _by_topic(make_bag(tmp_path / 'raw', duration_s=0.2, width=W, height=H, seed=5).path)
    jpg = _by_topic(make_bag(tmp_path / 'jpg', duration_s=0.2, width=W, height=H, seed=5, compressed=True,
                             jpeg_quality=95).path)
    for topic in DEFAULT_CAMERA_TOPICS:
        a = raw[topic][0].msg.data.reshape(H, W, 3).astype(np.float32)
        b = cv2.cvtColor(cv2.imdecode(jpg[topic][0].msg.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.abs(a - b).mean() < 3.0
    # different cameras show different views
    c0, c1 = (raw[t][0].msg.data.astype(np.int16) for t in DEFAULT_CAMERA_TOPICS[:2])
    assert np.abs(c0 - c1).mean() > 10


def test_dropout_removes_only_that_cameras_frames_in_the_window(tmp_path):
    full = _by_topic(make_bag(tmp_path / 'full', duration_s=DURATION, width=32, height=24, seed=1).path)
    cut = _by_topic(make_bag(tmp_path / 'cut', duration_s=DURATION, width=32, height=24, seed=1,
                             dropout=(1, 0.3, 0.6)).path)
    cam = DEFAULT_CAMERA_TOPICS[1]
    rel = np.array([(stamp_ns(m.msg.header.stamp) - DEFAULT_START_NS) / 1e9 for m in cut[cam]])
    assert not np.any((rel > 0.3 + CLIP_S * 4) & (rel < 0.6 - CLIP_S * 4))
    nominal = LEAD_S + 1e-3 + np.arange(len(full[cam])) / 30.0
    dropped = int(((nominal >= 0.3) & (nominal < 0.6)).sum())
    assert dropped == 9 and len(cut[cam]) == len(full[cam]) - dropped
    kept_full = [m.msg.header.stamp for m, n in zip(full[cam], nominal) if not 0.3 <= n < 0.6]
    assert [m.msg.header.stamp for m in cut[cam]] == kept_full
    for topic in (DEFAULT_CAMERA_TOPICS[0], DEFAULT_CAMERA_TOPICS[2], '/joint_states'):
        assert len(cut[topic]) == len(full[topic])


def test_clock_jump_sets_stamps_back_after_a_pause_and_repeats_send_messages_again(tmp_path):
    kwargs = {'duration_s': DURATION, 'width': 32, 'height': 24, 'seed': 1}
    full = _by_topic(make_bag(tmp_path / 'full', **kwargs).path)
    odd_path = make_bag(tmp_path / 'odd', clock_jump=(0.6, 5.0), repeat_every=4, **kwargs).path
    odd = _by_topic(odd_path)
    for topic in (*DEFAULT_CAMERA_TOPICS, '/joint_states'):
        hz = 100.0 if topic == '/joint_states' else 30.0
        cam = DEFAULT_CAMERA_TOPICS.index(topic) if topic in DEFAULT_CAMERA_TOPICS else 0
        nominal = LEAD_S + cam * 1e-3 + np.arange(len(full[topic])) / hz
        kept = [(m, n) for m, n in zip(full[topic], nominal) if not 0.6 - CLOCK_JUMP_PAUSE_S <= n < 0.6]
        expected = []  # (stamp, log time) of every message, the repeated ones twice
        for i, (m, n) in enumerate(kept):
            stamp = stamp_ns(m.msg.header.stamp) - (5_000_000_000 if n >= 0.6 else 0)  # captured after the jump
            expected.append((stamp, m.log_time_ns))
            if i % 4 == 3:
                expected.append((stamp, m.log_time_ns + REPEAT_DELAY_NS))
        got = [(stamp_ns(m.msg.header.stamp), m.log_time_ns) for m in odd[topic]]
        assert got == expected, topic
        stamps = np.array([g[0] for g in got])
        assert (np.diff(stamps) < -4e9).sum() == 1 and (np.diff(stamps) == 0).sum() == len(kept) // 4
        repeated = [i for i in range(1, len(got)) if got[i][0] == got[i - 1][0]]
        raw = [m.msg for m in read_bag(odd_path, [topic], raw=True)]
        assert all(raw[i] == raw[i - 1] for i in repeated)  # the same message again
        assert len(kept) < len(full[topic])


def test_same_seed_writes_identical_bags_and_another_seed_does_not(tmp_path):
    def content(path):
        return [(m.topic, m.log_time_ns, m.msg) for m in read_bag(path, raw=True)]

    kwargs = {'duration_s': 0.3, 'width': 32, 'height': 24}
    a = content(make_bag(tmp_path / 'a', seed=7, **kwargs).path)
    b = content(make_bag(tmp_path / 'b', seed=7, storage='mcap', **kwargs).path)
    c = content(make_bag(tmp_path / 'c', seed=8, **kwargs).path)
    assert a == b
    assert a != c and len(a) == len(c)


def test_custom_topics_rates_and_names_are_used(tmp_path):
    cams = ('/left/image', '/right/image')
    summary = make_bag(tmp_path / 'bag', duration_s=0.5, camera_topics=cams, joint_topic='/arm/joint_states',
                       instruction_topic='/task', instruction='wave', width=16, height=8, camera_hz=10.0,
                       joint_hz=50.0, joint_names=('a', 'b'), jitter_ms=0.0)
    assert summary.topics == {'/left/image': ('sensor_msgs/msg/Image', 5), '/right/image': ('sensor_msgs/msg/Image', 5),
                              '/arm/joint_states': ('sensor_msgs/msg/JointState', 24),
                              '/task': ('std_msgs/msg/String', 1)}
    msgs = _by_topic(summary.path)
    assert msgs['/task'][0].msg.data == 'wave'
    assert list(msgs['/arm/joint_states'][0].msg.name) == ['a', 'b']
    stamps = np.array([stamp_ns(m.msg.header.stamp) for m in msgs['/arm/joint_states']])
    assert np.all(np.diff(stamps) == 20_000_000)  # no jitter requested: exactly 50 Hz
    assert math.isclose(summary.duration_s, (msgs['/arm/joint_states'][-1].log_time_ns - DEFAULT_START_NS) / 1e9)


def test_read_bag_filters_topics_and_rejects_unknown_ones(tmp_path):
    path = make_bag(tmp_path / 'bag', duration_s=0.2, width=16, height=8).path
    assert {m.topic for m in read_bag(path, ['/joint_states'])} == {'/joint_states'}
    raw = next(iter(read_bag(path, ['/instruction'], raw=True)))
    assert isinstance(raw.msg, bytes) and raw.msg[:4] == b'\x00\x01\x00\x00'  # CDR little endian
    with pytest.raises(Pi0Error, match=r"has no topic\(s\) \['/nope'\]"):
        list(read_bag(path, ['/nope']))


def test_bad_arguments_and_paths_raise_clear_errors(tmp_path):
    make_bag(tmp_path / 'bag', duration_s=0.1, width=16, height=8)
    with pytest.raises(Pi0Error, match='exists already'):
        make_bag(tmp_path / 'bag', duration_s=0.1, width=16, height=8)
    with pytest.raises(ValueError, match="storage must be one of \\('sqlite3', 'mcap'\\)"):
        make_bag(tmp_path / 'x', storage='rosbag1')
    with pytest.raises(ValueError, match='dropout camera index 3'):
        make_bag(tmp_path / 'y', dropout=(3, 0.0, 1.0))
    with pytest.raises(ValueError, match='clock_jump'):
        make_bag(tmp_path / 'z', duration_s=1.0, clock_jump=(1.5, 1.0))
    with pytest.raises(ValueError, match='repeat_every'):
        make_bag(tmp_path / 'w', repeat_every=-1)
    with pytest.raises(Pi0Error, match='not a rosbag2 bag: metadata.yaml not found'):
        bag_summary(tmp_path)
