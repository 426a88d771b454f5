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

"""The fault matrix over real DDS: each fault sent through the node while good traffic flows.

For every fault: the node survives, counts it in /diagnostics, publishes nothing derived from it
(every command finite and within the joint limits), and commands again on good data. Runner
faults wrap the real ONNX Runtime runner (``FaultInjectingRunner``). No assertion here is on how
long anything takes: tests send traffic until the node reaches the state they check.
"""

import array
import os
import resource
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import pytest
from rclpy.context import Context
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import String
from test_control_node import INSTRUCTION, node_parameters, Rig

from pi0_trt_ros.node.control_node import ControlNode
from pi0_trt_ros.node.spin_thread import SpinThread
from pi0_trt_ros.testing.dds import domain_id
from pi0_trt_ros.testing.faults import FaultInjectingRunner
from pi0_trt_ros.testing.tiny import make_tiny_bundle, tiny_io
from pi0_trt_ros.testing.wait import wait_for

DOMAIN_ID = domain_id(77)  # this module's own DDS domain (also the context fixture's, conftest.py)
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'

H, W = 96, 128
LIMIT = 3.14159
SAFE = {  # every timing generous: a loaded machine must not look like a fault
    'joint_lower_limits': [-LIMIT] * 6, 'joint_upper_limits': [LIMIT] * 6, 'stale_timeout_ms': 1500.0,
    'stop_timeout_ms': 1000.0, 'deadline_ms': 2000.0, 'deadline_window': 5, 'max_observation_age_ms': 0.0,
}


class Faulty:
    """A node with a fault-injecting runner, spinning in its own thread, and its rig."""

    def __init__(self, context: Context, bundle: Any, namespace: str, compressed_base: bool = False,
                 **overrides: Any) -> None:
        params = {**SAFE, **overrides}
        if compressed_base:
            params.update({'camera.base.type': 'compressed', 'camera.base.topic': 'base/compressed'})
        self.node = ControlNode(context=context, namespace=namespace,
                                parameter_overrides=node_parameters(bundle, **params))
        self.runner = FaultInjectingRunner(self.node.loop.parts.runner)
        self.node.loop.parts.runner = self.runner
        self.spinner = SpinThread(context, [self.node], name='control_node')
        self.spinner.start()
        self.rig = Rig(context, namespace)
        self.base_payload: bytes | None = None
        if compressed_base:
            self.rig.node.destroy_publisher(self.rig.cameras['base'])
            self.rig.cameras['base'] = self.rig.node.create_publisher(CompressedImage, 'base/compressed', 10)
            self.jpeg = cv2.imencode('.jpg', self.rig.frames['base'])[1].tobytes()
            raw_image = self.rig.image
            self.rig.image = lambda name, stamp, **kw: (self.compressed(stamp) if name == 'base'
                                                        else raw_image(name, stamp, **kw))
        self.rig.wait_connected()
        self.rig.instruct()
        wait_for(lambda: self.node.instruction.version == 1, 10.0, 'the instruction')

    def compressed(self, stamp_ns: int) -> CompressedImage:
        data = self.base_payload if self.base_payload is not None else self.jpeg
        msg = CompressedImage(format='png' if data.startswith(b'\x89PNG') else 'jpeg')
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        msg.data = array.array('B', data)
        return msg

    def inputs(self) -> dict[str, Any]:
        return self.rig.latest_status(': inputs')

    def healthy(self) -> bool:
        deadline = self.rig.latest_status(': deadline')
        return self.inputs().get('message') == 'receiving' and deadline.get('level') == 0

    def recover(self, what: str) -> None:
        """Send good sets until the node commands again and both statuses are OK."""
        n = len(self.rig.commands)
        self.rig.stream_until(lambda: len(self.rig.commands) > n and self.healthy(), 60.0, f'recovery after {what}')

    def check_outputs(self) -> None:
        """Nothing out of limits or non-finite ever reached the wire."""
        commands = np.array([c for _, c in self.rig.commands])
        assert np.isfinite(commands).all() and (np.abs(commands) <= LIMIT).all()
        for t in self.rig.trajectories:
            points = np.array([list(p.positions) for p in t.points])
            assert np.isfinite(points).all() and (np.abs(points) <= LIMIT).all()

    def close(self) -> None:
        self.rig.close()
        self.spinner.stop()
        self.node.close()
        self.node.destroy_node()


@pytest.fixture(scope='module')
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_tiny_bundle(tmp_path_factory.mktemp('tiny'), seed=3, io=tiny_io(camera_hw=(H, W)))


@pytest.fixture(scope='module')
def raw(context: Context, bundle: Any) -> Iterator[Faulty]:
    faulty = Faulty(context, bundle, '/faults')
    yield faulty
    faulty.close()


@pytest.fixture(scope='module')
def compressed(context: Context, bundle: Any) -> Iterator[Faulty]:
    faulty = Faulty(context, bundle, '/faults_jpeg', compressed_base=True, resize_mismatched=True)
    yield faulty
    faulty.close()


@pytest.fixture
def node(request: pytest.FixtureRequest) -> Iterator[Faulty]:
    faulty: Faulty = request.getfixturevalue(request.param)
    faulty.recover('the previous test')
    yield faulty
    faulty.check_outputs()
    faulty.recover('this test')
    faulty.check_outputs()


def counted(node: Faulty, counter: str) -> int:
    return int(node.inputs().get(f'bad_input.{counter}', 0))


def send_until_counted(node: Faulty, counter: str, send: Callable[[Rig], None], times: int = 1) -> None:
    """Send the fault ``times`` times, each followed by a good set; wait until diagnostics count every one.

    Each fault waits for the node to count it before the next is sent: sensor subscriptions keep
    only the last few messages, so a burst could overwrite one before the node reads it.
    """
    before = counted(node, counter)
    for _ in range(times):
        seen = node.node.faults.count(counter)
        send(node.rig)
        wait_for(lambda: node.node.faults.count(counter) > seen, 30.0, f'{counter} to be counted')
        node.rig.send_set()
    wait_for(lambda: counted(node, counter) >= before + times, 30.0, f'{counter} in diagnostics')


def hold_then_stop_then_ok(node: Faulty, fault: Callable[[], None], what: str, **stream: Any) -> None:
    """While ``fault`` goes on: stale -> hold (WARN) -> stop (ERROR); then good data -> OK."""
    loop = node.node.loop
    holds = loop.holds_published
    node.rig.stream_until(lambda: (fault() or True) and loop.stopped, 60.0, f'{what}: the stop', **stream)
    assert loop.holds_published > holds  # held first (on_stale=hold), then stopped
    wait_for(lambda: node.inputs().get('level') == 2, 10.0, f'{what}: diagnostics ERROR')
    assert counted(node, 'inputs_stale') >= 1


# -- joint states --------------------------------------------------------------------------------
@pytest.mark.parametrize('node', ['raw'], indirect=True)
@pytest.mark.parametrize('value', [3.0e38, 50.0], ids=['3e38', 'beyond_margin'])
def test_absurd_joint_state_is_rejected_and_never_commanded(node: Faulty, value: float) -> None:
    def absurd(rig: Rig) -> None:
        stamp = rig.now_ns()
        rig.joints.publish(rig.joint_state(stamp, [value] + rig.positions[1:]))
        for name, pub in rig.cameras.items():
            pub.publish(rig.image(name, stamp))
    send_until_counted(node, 'joint_out_of_limits', absurd, times=5)
    assert 'joint_1=' in node.inputs()['bad_input.joint_out_of_limits.last']


@pytest.mark.parametrize('node', ['raw'], indirect=True)
def test_joint_states_that_stop_give_hold_then_stop(node: Faulty) -> None:
    hold_then_stop_then_ok(node, lambda: None, 'joint states stopped', skip_joints=True)
    assert counted(node, 'joint_states_stopped') >= 1


# -- serialized messages that do not parse ------------------------------------------------------
@pytest.mark.parametrize('node', ['raw'], indirect=True)
@pytest.mark.parametrize('topic', ['left_wrist', 'joint_states'])
def test_a_message_whose_lengths_do_not_fit_its_bytes_is_counted_as_malformed(node: Faulty, topic: str) -> None:
    def cut(rig: Rig) -> None:  # the serialized message, cut inside its data: a length field runs past the end
        stamp = rig.now_ns()
        if topic == 'joint_states':
            raw = serialize_message(rig.joint_state(stamp))
            rig.joints.publish(raw[:len(raw) - 20])
        else:
            raw = serialize_message(rig.image(topic, stamp))
            rig.cameras[topic].publish(raw[:len(raw) // 2])
    send_until_counted(node, 'message_malformed', cut, times=2)
    source = 'joint_states' if topic == 'joint_states' else f'camera {topic}'
    assert node.inputs()['bad_input.message_malformed.last'].startswith(f'{source}: ')


# -- cameras -------------------------------------------------------------------------------------
@pytest.mark.parametrize('node', ['raw'], indirect=True)
def test_camera_that_stops_and_resumes_gives_hold_then_stop(node: Faulty) -> None:
    hold_then_stop_then_ok(node, lambda: None, 'camera stopped', skip_camera='left_wrist')
    assert counted(node, 'camera_stopped') >= 1


@pytest.mark.parametrize('node', ['compressed'], indirect=True)
def test_undecodable_jpeg_counts_as_a_stopped_camera(node: Faulty) -> None:
    header = node.jpeg[:node.jpeg.index(b'\xff\xda')]
    node.base_payload = header + bytes(range(256)) * 4 + b'\xff\xd9'  # passes the header check, never decodes
    try:  # rejected on arrival (decoded there): the camera's frames never join a set, so it stops
        wait_for(lambda: node.rig.send_set() and node.inputs().get('level') == 1
                 and node.inputs().get('bad_input.image_decode.last', '').startswith('camera base: '), 30.0,
                 'WARN, the undecodable frames counted for their camera')
        hold_then_stop_then_ok(node, lambda: None, 'undecodable frames')
        assert counted(node, 'image_decode') > 0
        assert node.inputs()['bad_input.camera_stopped.last'].startswith('camera base: ')
    finally:
        node.base_payload = None


@pytest.mark.parametrize('node', ['compressed'], indirect=True)
@pytest.mark.parametrize('kind', ['jpeg', 'png'])
def test_decompression_bomb_is_rejected_from_the_header(node: Faulty, kind: str) -> None:
    from test_node_images import bomb

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB

    def send(rig: Rig) -> None:
        node.base_payload = bytes(bomb(kind, 20000, 20000).data)
        rig.send_set()
        node.base_payload = None
    send_until_counted(node, 'image_size', send, times=3)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024  # no 1.2 GB frame


@pytest.mark.parametrize('node', ['compressed'], indirect=True)
def test_many_frame_sizes_keep_the_resize_scratch_bounded(node: Faulty) -> None:
    def send(k: int) -> Callable[[Rig], None]:
        def one(rig: Rig) -> None:
            node.base_payload = cv2.imencode('.png', np.zeros((H + k, W + 2 * k, 3), np.uint8))[1].tobytes()
            rig.send_set()
            node.base_payload = None
        return one
    for k in range(1, 13):
        send_until_counted(node, 'image_resized', send(k))
    decoder = node.node.loop.parts.frames.decoders[[c.name for c in node.node.p.cameras].index('base')]
    assert len(decoder._scratch) <= 4


# -- stamps ---------------------------------------------------------------------------------------
@pytest.mark.parametrize('node', ['raw'], indirect=True)
def test_one_future_stamp_does_not_poison_the_input(node: Faulty) -> None:
    backwards = counted(node, 'stamp_backwards')

    def future(rig: Rig) -> None:
        rig.cameras['base'].publish(rig.image('base', rig.now_ns() + 900_000_000))
    send_until_counted(node, 'stamp_future', future)
    n = len(node.rig.commands)
    node.rig.stream_until(lambda: len(node.rig.commands) > n + 3, 30.0, 'commands after the outlier')
    assert counted(node, 'stamp_backwards') == backwards  # the good messages after it were not rejected


@pytest.mark.parametrize('node', ['raw'], indirect=True)
def test_all_inputs_stamped_far_in_the_future_are_counted_and_never_used(node: Faulty) -> None:
    statuses = len(node.rig.status)
    hold_then_stop_then_ok(node, lambda: None, 'future stamps', stamp_offset_ns=10_000_000_000)
    assert counted(node, 'stamp_future') > 0
    # No cycle used them: an observation stamped 10 s ahead would show a negative age in ~/status.
    assert all(obs_age_ms > 0 for _, _, obs_age_ms, *_ in node.rig.status[statuses:])


# -- instruction ----------------------------------------------------------------------------------
@pytest.mark.parametrize('node', ['raw'], indirect=True)
def test_instruction_publisher_restart_keeps_the_task(node: Faulty) -> None:
    rig = node.rig
    rig.node.destroy_publisher(rig.instruction)
    rig.instruction = rig.node.create_publisher(String, 'instruction', 10)
    wait_for(lambda: rig.instruction.get_subscription_count() > 0, 10.0, 'the new instruction publisher')
    rig.instruct()  # the same text again: not a new task
    n = len(rig.commands)
    rig.stream_until(lambda: len(rig.commands) > n + 3, 30.0, 'commands')
    assert node.node.instruction.version == 1


@pytest.mark.parametrize('node', ['raw'], indirect=True)
def test_instruction_flood_is_logged_throttled(node: Faulty) -> None:
    box = node.node.instruction
    lines, version = box.lines_logged, box.version
    for k in range(300):
        node.rig.instruct(f'task {k % 2}')
    node.rig.instruct()
    wait_for(lambda: box.text == INSTRUCTION and box.version > version, 30.0, 'the last instruction')
    # The subscription keeps the last 10 of a burst: at least those were new tasks; one log line, maybe two.
    assert box.version - version >= 5 and box.lines_logged - lines <= 2
    assert box.text == INSTRUCTION


# -- the runner -----------------------------------------------------------------------------------
@pytest.mark.parametrize('node', ['raw'], indirect=True)
@pytest.mark.parametrize('kind,counter', [('raise', 'inference_error'), ('nan', 'action_nonfinite')])
def test_runner_that_fails_gives_warn_hold_stop_then_ok(node: Faulty, kind: str, counter: str) -> None:
    node.runner.inject(kind, 1_000_000)
    try:
        wait_for(lambda: node.rig.send_set() and node.inputs().get('level') == 1
                 and 'policy' in node.inputs().get('message', ''), 30.0, 'WARN naming the policy')
        hold_then_stop_then_ok(node, lambda: None, f'inference {kind}')
    finally:
        node.runner.inject(kind, 0)
    assert counted(node, counter) > 0


@pytest.mark.parametrize('node', ['raw'], indirect=True)
def test_slow_runner_gives_deadline_error_then_ok(node: Faulty) -> None:
    node.runner.inject('slow', 3, slow_ns=2_100_000_000)  # just over the 2000 ms budget, three times
    rig = node.rig
    rig.stream_until(lambda: node.runner.injected['slow'] >= 3, 60.0, 'three slow calls', rate_hz=5.0)
    # No more sets until the third slow cycle is reported: three consecutive misses, nothing after them.
    wait_for(lambda: rig.latest_status(': deadline').get('level') == 2, 30.0, 'deadline ERROR')
    assert 'consecutive' in rig.latest_status(': deadline')['message']
