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

"""The fleet batcher: several robots' seats served by one batched runner (real ONNX Runtime, real threads).

Each robot's chunk equals the single-robot runner's on the same inputs and noise; a robot that
stops submitting (stale cameras) or submits a poisoned state never stalls or changes another's.
"""

from pathlib import Path
import threading

import numpy as np
import pytest

pytest.importorskip('torch')
pytest.importorskip('onnxruntime')

from pi0_trt_ros.errors import RunnerError  # noqa: E402
from pi0_trt_ros.export.onnx import export_policy  # noqa: E402
from pi0_trt_ros.node.batcher import Batcher, Seat  # noqa: E402
from pi0_trt_ros.runners import make_runner  # noqa: E402

FIXTURE = Path(__file__).parent / 'fixtures' / 'lerobot_seed0'
ROW_TOL = 1e-5  # as test_batched_runners: batched rows against batch-1 calls, measured ~1e-6
WAIT_S = 120.0  # generous: the machine is loaded; nothing is asserted about how long it took


@pytest.fixture(scope='module')
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_policy(FIXTURE / 'policy', tmp_path_factory.mktemp('fleet'), arch=FIXTURE / 'hf_configs.json',
                         precision='fp32', batch_sizes=(1, 2, 4))


def robot_observations(robot: int, cycles: int) -> list[tuple]:
    """``cycles`` observations of robot ``robot``: its own frames shift, state and noise."""
    f = np.load(FIXTURE / 'fixture.npz')
    frames = [np.ascontiguousarray(f[f'image_u8.{i}'][0].transpose(1, 2, 0)) for i in range(3)]
    rng = np.random.default_rng(100 + robot)
    return [([np.roll(frame, 31 * robot + 5 * k, axis=0) for frame in frames],
             (f['state_raw'][0] + 0.3 * rng.standard_normal(6)).astype(np.float32),
             f['lang_tokens'][0], f['lang_mask'][0], rng.standard_normal(f['noise'][0].shape, dtype=np.float32))
            for k in range(cycles)]


def single_robot_chunks(engine_dir: Path, observations: list[tuple]) -> list[np.ndarray]:
    with make_runner('onnxruntime', engine_dir=engine_dir) as runner:
        out = []
        for obs in observations:
            runner.stage(*obs)
            out.append(runner.infer().copy())
    return out


def stage(seat: Seat, obs: tuple) -> None:
    """Write an observation into the seat's staging, as a robot's control loop does."""
    images, state, tokens, mask, noise = obs
    for dst, src in zip(seat.staging.images, images):
        np.copyto(dst, src)
    np.copyto(seat.staging.state, state)
    np.copyto(seat.staging.tokens, tokens)
    np.copyto(seat.staging.token_mask, mask)
    np.copyto(seat.staging.noise, noise)


def drive(seats: list[Seat], plans: list[list[tuple]]) -> list[list[np.ndarray]]:
    """One thread per robot: stage each observation, infer, keep a copy of the chunk; return the chunks."""
    results: list[list[np.ndarray]] = [[] for _ in seats]
    errors: list[BaseException] = []

    def robot(i: int) -> None:
        try:
            for obs in plans[i]:
                stage(seats[i], obs)
                results[i].append(seats[i].infer().copy())
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)
    threads = [threading.Thread(target=robot, args=(i,)) for i in range(len(seats))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
        assert not t.is_alive(), 'a robot is still waiting for its chunk'
    assert not errors, errors
    return results


def test_three_robots_batched_get_the_single_robot_chunks(engine_dir):
    plans = [robot_observations(r, 3) for r in range(3)]
    expected = [single_robot_chunks(engine_dir, plan) for plan in plans]
    with make_runner('onnxruntime', engine_dir=engine_dir, batch_sizes=(1, 2, 4)) as runner:
        batcher = Batcher(runner, max_wait_ms=WAIT_S * 1e3)  # wait for all three: every batch is the whole fleet
        seats = [batcher.seat(f'robot_{r}') for r in range(3)]
        batcher.start()
        try:
            results = drive(seats, plans)
        finally:
            batcher.close()
    assert dict(batcher.histogram) == {3: 3}  # three batches of three, padded to 4
    for r in range(3):
        for k in range(3):
            err = float(np.abs(results[r][k] - expected[r][k]).max())
            assert err <= ROW_TOL, f'robot {r} cycle {k}: {err:.2e}'
    assert np.abs(results[0][0] - results[1][0]).max() > 1e-2  # the robots' chunks really differ


def test_a_robot_that_stops_submitting_stalls_no_other(engine_dir):
    plans = [robot_observations(r, 3) for r in range(2)]
    expected = [single_robot_chunks(engine_dir, plan) for plan in plans]
    with make_runner('onnxruntime', engine_dir=engine_dir, batch_sizes=(1, 2, 4)) as runner:
        batcher = Batcher(runner, max_wait_ms=20.0)  # waits for the stale robot at most 20 ms per batch
        seats = [batcher.seat('robot_0'), batcher.seat('robot_1'), batcher.seat('robot_stale')]
        stage(seats[2], robot_observations(2, 1)[0])  # staged once, never submitted: its cameras went stale
        batcher.start()
        try:
            results = drive(seats[:2], plans)
        finally:
            batcher.close()
    assert sum(batcher.histogram.values()) >= 3 and max(batcher.histogram) <= 2
    for r in range(2):
        for k in range(3):
            assert np.abs(results[r][k] - expected[r][k]).max() <= ROW_TOL, (r, k)


def test_a_poisoned_state_stays_in_its_own_row(engine_dir):
    plans = [robot_observations(r, 2) for r in range(3)]
    expected = [single_robot_chunks(engine_dir, plan) for plan in plans]
    poisoned = [(images, np.full(6, np.nan, np.float32), tokens, mask, noise)
                for images, _, tokens, mask, noise in plans[1]]
    with make_runner('onnxruntime', engine_dir=engine_dir, batch_sizes=(1, 2, 4)) as runner:
        batcher = Batcher(runner, max_wait_ms=WAIT_S * 1e3)
        seats = [batcher.seat(f'robot_{r}') for r in range(3)]
        batcher.start()
        try:
            results = drive(seats, [plans[0], poisoned, plans[2]])
        finally:
            batcher.close()
    assert dict(batcher.histogram) == {3: 2}
    assert not np.isfinite(results[1][0]).any()  # the robot's own sanitizer turns this into a hold
    for r in (0, 2):
        for k in range(2):
            assert np.abs(results[r][k] - expected[r][k]).max() <= ROW_TOL, (r, k)


def test_a_closed_batcher_fails_the_robots_call_with_a_message(engine_dir):
    with make_runner('onnxruntime', engine_dir=engine_dir, batch_sizes=(1, 2)) as runner:
        batcher = Batcher(runner)
        seat = batcher.seat('robot_0')
        batcher.start()
        batcher.close()
        with pytest.raises(RunnerError, match='robot_0: batched inference failed: RunnerError: the fleet batcher '
                           'is closed'):
            seat.infer()
    with pytest.raises(RunnerError, match='needs an active runner'):
        Batcher(make_runner('onnxruntime', engine_dir=engine_dir, batch_sizes=(1, 2)))
