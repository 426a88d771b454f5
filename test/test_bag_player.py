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

"""Bag replay and recording over real DDS (loopback, base domains 72 and 73), against rclpy subscribers."""

from collections import defaultdict
import json
import os
from pathlib import Path
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # before any rclpy.init

import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from rosidl_runtime_py.utilities import get_message  # noqa: E402

from pi0_trt_ros.bag.bag_io import read_bag, stamp_ns  # noqa: E402
from pi0_trt_ros.bag.player import BagPlayer  # noqa: E402
from pi0_trt_ros.bag.recorder import BagRecorder  # noqa: E402
from pi0_trt_ros.bag.synth import make_bag  # noqa: E402
from pi0_trt_ros.errors import Pi0Error  # noqa: E402
from pi0_trt_ros.testing.dds import domain_id  # noqa: E402

PLAYER_DOMAIN = domain_id(72)
RECORDER_DOMAIN = domain_id(73)
REPO = Path(__file__).resolve().parents[1]

# A plain rclpy subscriber in its own process: raw subscriptions, every message kept with its
# receive times (monotonic and wall, ns), pickled to OUT once EXPECT messages arrived or on timeout.
SUBSCRIBER = r"""
import json, pickle, sys, time
import rclpy
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosidl_runtime_py.utilities import get_message
spec = json.loads(sys.argv[1])
rclpy.init()
node = rclpy.create_node('bag_test_subscriber')
got = []
subs = []
for topic, (msgtype, best_effort) in spec['topics'].items():
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, durability=DurabilityPolicy.VOLATILE,
                     reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE)
    subs.append(node.create_subscription(
        get_message(msgtype), topic, lambda data, t=topic: got.append((t, time.monotonic_ns(), time.time_ns(), data)),
        qos, raw=True))
print('READY', flush=True)
deadline = time.monotonic() + spec['timeout']
while any(s.get_publisher_count() == 0 for s in subs) and time.monotonic() < deadline:
    time.sleep(0.01)
print('MATCHED', flush=True)
while sum(t in spec['count'] for t, *_ in got) < spec['expect'] and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.05)
end = time.monotonic() + spec.get('linger', 0.0)
while time.monotonic() < end:
    rclpy.spin_once(node, timeout_sec=0.01)
with open(spec['out'], 'wb') as f:
    pickle.dump(got, f)
"""


def _env(domain: int) -> dict:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
    return env


def _start_subscriber(tmp_path: Path, topics: dict, expect: int, count=None, linger: float = 0.0):
    out = tmp_path / 'received.pkl'
    spec = {'topics': topics, 'expect': expect, 'out': str(out), 'timeout': 20.0, 'linger': linger,
            'count': list(count or topics)}
    proc = subprocess.Popen([sys.executable, '-c', SUBSCRIBER, json.dumps(spec)], stdout=subprocess.PIPE,
                            text=True, env=_env(PLAYER_DOMAIN))
    assert proc.stdout.readline().strip() == 'READY'

    def matched():  # call once the publishers exist: the subscriber has seen every one of them
        assert proc.stdout.readline().strip() == 'MATCHED'

    def result():
        assert proc.wait(timeout=30) == 0
        with open(out, 'rb') as f:
            return pickle.load(f)
    return matched, result


@pytest.fixture
def player_context():
    context = Context()
    rclpy.init(context=context, domain_id=PLAYER_DOMAIN)
    yield context
    context.try_shutdown()


def _rclpy_msgs(bag: Path):
    """(topic, log time ns, rclpy message) of every bag message, via rclpy's own deserializer."""
    return [(m.topic, m.log_time_ns, deserialize_message(m.msg, get_message(m.msgtype)))
            for m in read_bag(bag, raw=True)]


def test_replay_delivers_every_message_unchanged_with_recorded_timing(tmp_path, player_context):
    bag = make_bag(tmp_path / 'bag', duration_s=1.5, width=160, height=120, storage='sqlite3', seed=11).path
    expected = _rclpy_msgs(bag)
    types = {m.topic: m.msgtype for m in read_bag(bag, raw=True)}
    matched, received = _start_subscriber(tmp_path, {t: (ty, False) for t, ty in types.items()}, len(expected))
    player = BagPlayer(bag, context=player_context)
    try:
        matched()
        assert player.wait_for_subscribers(10.0) == []
        stats = player.play()
    finally:
        player.destroy_node()
    got = received()
    print(f'\n{stats.summary()}')
    assert stats.messages == len(expected) and stats.loops == 1
    assert stats.per_topic == {t: sum(1 for e in expected if e[0] == t) for t in types}

    # identical content, in order per topic (rclpy deserializes the bag's and the received CDR alike)
    for topic, msgtype in types.items():
        cls = get_message(msgtype)
        sent = [msg for t, _, msg in expected if t == topic]
        arrived = [deserialize_message(data, cls) for t, _, _, data in got if t == topic]
        assert arrived == sent, topic

    # timing: never before the schedule (how far after is a figure, printed, not a test: it depends on the machine)
    assert stats.error_ms.size == len(expected)
    assert stats.error_ms.min() >= 0.0
    log = np.array([e[1] for e in expected], dtype=np.int64)
    index_of = defaultdict(list)  # topic -> positions in the bag, in order
    for k, (t, _, _) in enumerate(expected):
        index_of[t].append(k)
    recv = np.zeros(len(expected), dtype=np.int64)
    arrived_so_far: dict = defaultdict(int)
    for t, mono, _, _ in got:
        recv[index_of[t][arrived_so_far[t]]] = mono
        arrived_so_far[t] += 1
    offset_ms = ((recv - recv[0]) - (log - log[0])) / 1e6  # receive time minus recorded time, from the first
    print(f'receive - recorded timing (ms): p50 {np.percentile(offset_ms, 50):.3f}, '
          f'p99 {np.percentile(offset_ms, 99):.3f}, max {np.abs(offset_ms).max():.3f}')


def test_replay_remaps_restamps_scales_rate_and_publishes_clock(tmp_path, player_context):
    bag = make_bag(tmp_path / 'bag', duration_s=1.0, width=64, height=48, storage='mcap', compressed=True,
                   seed=4).path
    expected = _rclpy_msgs(bag)
    types = {m.topic: m.msgtype for m in read_bag(bag, raw=True)}
    remap = {'/instruction': '/task'}
    out_topics = {t: remap.get(t, '/replay' + t) for t in types}
    spec = {out_topics[t]: (ty, False) for t, ty in types.items()}
    spec['/clock'] = ('rosgraph_msgs/msg/Clock', True)
    matched, received = _start_subscriber(tmp_path, spec, len(expected), count=list(out_topics.values()),
                                          linger=0.1)
    player = BagPlayer(bag, rate=2.0, prefix='/replay/', remap=remap, restamp=True, clock_hz=50.0,
                       context=player_context)
    try:
        matched()
        assert sorted(player.wait_for_subscribers(10.0)) == []
        wall_before = time.time_ns()
        stats = player.play()
        wall_after = time.time_ns()
    finally:
        player.destroy_node()
    got = received()
    print(f'\n{stats.summary()}')
    assert stats.per_topic == {out_topics[t]: sum(1 for e in expected if e[0] == t) for t in types}

    log = np.array([e[1] for e in expected], dtype=np.int64)
    span_s = (log[-1] - log[0]) / 1e9
    assert stats.wall_s >= span_s / 2.0 - 1e-3  # rate 2: the last message is not published before its time
    for topic, msgtype in types.items():
        cls = get_message(msgtype)
        sent = [msg for t, _, msg in expected if t == topic]
        arrived = [(deserialize_message(data, cls), wall) for t, _, wall, data in got if t == out_topics[topic]]
        assert len(arrived) == len(sent), topic
        if not hasattr(cls, 'header'):
            assert [a for a, _ in arrived] == sent
            continue
        stamps = np.array([stamp_ns(a.header.stamp) for a, _ in arrived])
        original = np.array([stamp_ns(s.header.stamp) for s in sent])
        assert np.all(np.diff(stamps) > 0)
        assert np.allclose(np.diff(stamps), np.diff(original) / 2.0, atol=2)  # spacing scaled by the rate
        jitter = np.abs(original - log[[i for i, e in enumerate(expected) if e[0] == topic]]).max()
        assert wall_before - jitter <= stamps.min() and stamps.max() <= wall_after + jitter, topic  # moved to now
        age_ms = (np.array([wall for _, wall in arrived]) - stamps) / 1e6  # as a live node would see it
        print(f'{topic}: age at arrival p50 {np.median(age_ms):.3f} ms')
        for (a, _), s in zip(arrived, sent):
            a.header.stamp = s.header.stamp
            assert a == s  # nothing but the stamp changed

    clock_cls = get_message('rosgraph_msgs/msg/Clock')
    clocks = [(deserialize_message(d, clock_cls), wall) for t, _, wall, d in got if t == '/clock']
    assert stats.clock_ticks == (log[-1] - log[0]) // 2 // 20_000_000 + 1  # a tick every 20 ms up to the last message
    assert len(clocks) >= 0.8 * stats.clock_ticks
    clock_ns = np.array([stamp_ns(c.clock) for c, _ in clocks])
    assert np.all(np.diff(clock_ns) == 20_000_000)  # 50 Hz in wall time (restamped)
    assert wall_before <= clock_ns.min() and clock_ns.max() <= wall_after


def test_loop_repeats_passes_until_the_duration(tmp_path, player_context):
    bag = make_bag(tmp_path / 'bag', duration_s=0.25, width=16, height=8, seed=2)
    player = BagPlayer(bag.path, loop=True, topics=['/joint_states', '/instruction'], context=player_context)
    try:
        stats = player.play(duration_s=0.9)
    finally:
        player.destroy_node()
    per_pass = bag.topics['/joint_states'][1] + 1
    assert stats.loops == 4  # a pass lasts the bag span plus its mean gap, ~0.25 s
    assert per_pass * 3 < stats.messages <= per_pass * 4
    assert set(stats.per_topic) == {'/joint_states', '/instruction'}
    assert stats.error_ms.min() >= 0.0


def test_player_rejects_unknown_topics_and_bad_rates(tmp_path, player_context):
    bag = make_bag(tmp_path / 'bag', duration_s=0.1, width=16, height=8).path
    with pytest.raises(Pi0Error, match=r"has no topic\(s\) \['/nope'\]"):
        BagPlayer(bag, topics=['/nope'], context=player_context)
    with pytest.raises(ValueError, match='rate must be > 0'):
        BagPlayer(bag, rate=0.0, context=player_context)
    with pytest.raises(Pi0Error, match='not a rosbag2 bag'):
        BagPlayer(tmp_path, context=player_context)


# -- recorder ----------------------------------------------------------------------------------

@pytest.fixture
def recorder_context():
    context = Context()
    rclpy.init(context=context, domain_id=RECORDER_DOMAIN)
    yield context
    context.try_shutdown()


def _wait(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_recorder_writes_what_was_published_with_receive_times(tmp_path, recorder_context, storage):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    node = rclpy.create_node('bag_test_publisher', context=recorder_context)
    cmd = node.create_publisher(Float64MultiArray, '/ctrl/commands', 10)
    traj = node.create_publisher(JointTrajectory, '/ctrl/joint_trajectory', 10)
    diag = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
    out = tmp_path / 'out'
    # commands typed up front; the trajectory and diagnostics types come from the graph
    recorder = BagRecorder(out, {'/ctrl/commands': 'std_msgs/msg/Float64MultiArray',
                                 '/ctrl/joint_trajectory': '', '/diagnostics': ''},
                           storage=storage, context=recorder_context)
    with recorder:
        assert recorder.wait_for_publishers(10.0) == []
        time.sleep(0.2)
        t_begin = time.time_ns()
        sent_cmd, sent_traj = [], []
        for i in range(20):
            sent_cmd.append([i * 0.1 + k for k in range(6)])
            cmd.publish(Float64MultiArray(data=sent_cmd[-1]))
            point = JointTrajectoryPoint(positions=[float(i)] * 6)
            point.time_from_start.nanosec = 20_000_000
            sent_traj.append(float(i))
            traj.publish(JointTrajectory(joint_names=[f'joint_{k}' for k in range(1, 7)], points=[point]))
            if i % 5 == 0:
                diag.publish(DiagnosticArray(status=[DiagnosticStatus(
                    name='pi0', level=DiagnosticStatus.OK, values=[KeyValue(key='compute_ms', value=str(i))])]))
            time.sleep(0.005)
        _wait(lambda: sum(recorder.counts.values()) >= 44)
        t_end = time.time_ns()
    node.destroy_node()
    assert recorder.counts == {'/ctrl/commands': 20, '/ctrl/joint_trajectory': 20, '/diagnostics': 4}

    msgs = list(read_bag(out))
    assert [m.msg.data.tolist() for m in msgs if m.topic == '/ctrl/commands'] == sent_cmd
    assert [m.msg.points[0].positions[0] for m in msgs if m.topic == '/ctrl/joint_trajectory'] == sent_traj
    assert [m.msg.status[0].values[0].value for m in msgs if m.topic == '/diagnostics'] == ['0', '5', '10', '15']
    assert {m.msgtype for m in msgs} == {'std_msgs/msg/Float64MultiArray', 'trajectory_msgs/msg/JointTrajectory',
                                         'diagnostic_msgs/msg/DiagnosticArray'}
    logs = np.array([m.log_time_ns for m in msgs if m.topic == '/ctrl/commands'])
    assert np.all(np.diff(logs) > 0) and t_begin <= logs[0] and logs[-1] <= t_end  # receive times


RECORD_MAIN = r"""
import sys
from pi0_trt_ros.bag.recorder import record
counts = record(sys.argv[1], ['/chatter'], storage='mcap')
print('COUNTS', counts, flush=True)
"""


def test_record_finishes_the_bag_cleanly_on_sigint(tmp_path, recorder_context):
    from std_msgs.msg import String

    out = tmp_path / 'out'
    proc = subprocess.Popen([sys.executable, '-c', RECORD_MAIN, str(out)], stdout=subprocess.PIPE, text=True,
                            env=_env(RECORDER_DOMAIN))
    node = rclpy.create_node('bag_test_chatter', context=recorder_context)
    pub = node.create_publisher(String, '/chatter', 10)
    try:
        _wait(lambda: pub.get_subscription_count() > 0, 15.0)
        assert pub.get_subscription_count() == 1
        time.sleep(0.3)
        for i in range(10):
            pub.publish(String(data=f'hello {i}'))
            time.sleep(0.01)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=15)
    finally:
        node.destroy_node()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "COUNTS {'/chatter': 10}" in stdout
    assert [m.msg.data for m in read_bag(out)] == [f'hello {i}' for i in range(10)]


def test_waiting_for_subscribers_gives_up_when_told(tmp_path, player_context):
    bag = make_bag(tmp_path / 'bag', duration_s=0.3, width=32, height=24, seed=5).path
    player = BagPlayer(bag, context=player_context)
    calls = []

    def node_gone() -> bool:  # the node the replay waits for has exited: on the third look
        calls.append(1)
        return len(calls) >= 3

    try:
        lonely = player.wait_for_subscribers(60.0, give_up=node_gone)
    finally:
        player.destroy_node()
    assert len(calls) == 3 and lonely  # nobody subscribed; it stopped waiting when told
