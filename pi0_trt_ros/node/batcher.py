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

"""One batched runner shared by several robots: each robot gets a ``Seat``, one thread runs the batches.

A ``Seat`` has the part of the runner contract a robot's control loop uses (``io``, ``staging``,
``infer()``), so each robot keeps its own ``ControlLoop``/``ChunkLoop``, synchronizer, instruction,
safety state and deadline monitor, exactly as the single-robot node wires them. The seat's staging
is private to its robot (allocated once), so a robot stages its next observation while another
robot's batch runs, and nothing a robot writes can reach another robot's row.

``seat.infer()`` puts the seat in the ready queue and waits. The batcher thread takes the ready
seats as soon as the runner is free (up to the runner's largest batch size; optionally waiting up
to ``max_wait_ms`` for more robots, never longer), copies each seat's staging into one row of the
runner's staging, runs ``runner.infer_batch(n)`` (padded to the next batch size) and copies each
chunk back to its seat. A robot whose cameras are stale, whose input is bad, or whose link is slow
simply does not submit: no batch waits for it beyond ``max_wait_ms``, and rows never mix in the
policy, so its state cannot change another robot's chunk. A failed batch fails the ``infer()`` of
the seats in it (each robot's loop counts an inference error and holds, as with one robot).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Callable

import numpy as np

from pi0_trt_ros.errors import RunnerError
from pi0_trt_ros.manifest import PolicyIO
from pi0_trt_ros.runners.base import Runner, Staging


class Seat:
    """One robot's place at the batched runner: private staging, ``infer()`` through the batcher."""

    def __init__(self, batcher: 'Batcher', name: str) -> None:
        self.name = name
        self.io: PolicyIO = batcher.runner.io
        self.staging = Staging.allocate(self.io)  # this robot's observation; only its control thread writes it
        self._actions = np.zeros((self.io.chunk_size, self.io.action_dim), np.float32)  # [T, action_dim]
        self._batcher = batcher
        self._done = threading.Event()
        self._error: BaseException | None = None
        self.batch_size = 0  # observations in the batch that served the last infer()

    def infer(self) -> np.ndarray:
        """Run this robot's staged observation in the next batch: float32 [chunk, action_dim], a reused buffer."""
        self._done.clear()
        self._error = None
        self._batcher.submit(self)
        self._done.wait()
        if self._error is not None:
            raise RunnerError(f'{self.name}: batched inference failed: {type(self._error).__name__}: '
                              f'{self._error}') from None
        return self._actions

    def _finish(self, chunk: np.ndarray | None, batch_size: int, error: BaseException | None) -> None:
        """Batcher thread: hand the chunk (or the error) back and wake the robot."""
        if chunk is not None:
            np.copyto(self._actions, chunk)
        self.batch_size = batch_size
        self._error = error
        self._done.set()


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """What the batcher has served so far (a consistent copy, for diagnostics)."""

    histogram: dict[int, int]  # observations in a batch -> batches served
    batch_ns: dict[int, int]  # observations in a batch -> summed time of those batches (copies + policy), ns
    observations: int  # observations served, all batches
    busy_ns: int  # summed time of every batch (the runner busy), ns
    failed_batches: int  # batches whose policy call raised (each of their robots got the error)


class Batcher:
    """Runs the ready seats of an active batched ``runner`` in batches, on its own thread.

    ``now_ns`` and ``max_wait_ms`` bound the optional wait for more robots (monotonic clock, ns).
    ``histogram`` counts batches by observations in them; ``stats()`` copies every figure.
    """

    def __init__(self, runner: Runner, max_wait_ms: float = 0.0,
                 now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if not runner.active:
            raise RunnerError('the fleet batcher needs an active runner: activate it first')
        self.runner = runner
        self.max_wait_ns = int(round(max_wait_ms * 1e6))
        self._now_ns = now_ns
        self._seats: list[Seat] = []
        self._ready: collections.deque[Seat] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.histogram: collections.Counter[int] = collections.Counter()
        self._batch_ns: collections.Counter[int] = collections.Counter()
        self._observations = self._busy_ns = self._failed = 0
        self._thread = threading.Thread(target=self._run, name='pi0_fleet_batcher', daemon=True)

    def stats(self) -> BatchStats:
        """Copy what was served so far (any thread)."""
        with self._cond:
            return BatchStats(dict(self.histogram), dict(self._batch_ns), self._observations, self._busy_ns,
                              self._failed)

    def seat(self, name: str) -> Seat:
        """Add a robot; call before ``start``."""
        seat = Seat(self, name)
        self._seats.append(seat)
        return seat

    @property
    def thread(self) -> threading.Thread:
        """Return the thread that runs the batches."""
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the batcher thread after the batch in flight; waiting seats get an error. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)
        with self._cond:
            waiting, self._ready = list(self._ready), collections.deque()
        for seat in waiting:
            seat._finish(None, 0, RunnerError('the fleet batcher is closed'))

    def submit(self, seat: Seat) -> None:
        """Queue ``seat`` for the next batch (its robot's control thread)."""
        with self._cond:
            if self._closed:
                seat._finish(None, 0, RunnerError('the fleet batcher is closed'))
                return
            self._ready.append(seat)
            self._cond.notify_all()

    # -- batcher thread ------------------------------------------------------------------------
    def _take(self) -> list[Seat]:
        """Wait for ready seats; with ``max_wait_ns``, wait that long at most for more; return a batch ([] on close)."""
        largest = self.runner.max_batch
        with self._cond:
            while not self._ready and not self._closed:
                self._cond.wait()
            if self.max_wait_ns > 0:
                until = self._now_ns() + self.max_wait_ns
                while not self._closed and len(self._ready) < min(len(self._seats), largest):
                    left = until - self._now_ns()
                    if left <= 0:
                        break
                    self._cond.wait(left / 1e9)
            if self._closed:
                return []
            return [self._ready.popleft() for _ in range(min(len(self._ready), largest))]

    def _run(self) -> None:
        runner = self.runner
        while True:
            batch = self._take()
            if not batch:
                return
            n = len(batch)
            t0 = time.monotonic_ns()
            try:
                for row, seat in enumerate(batch):
                    target = runner.row(row)
                    for name, src in seat.staging.buffers.items():  # [1, ...] -> row ``row`` of [B, ...]
                        np.copyto(target.buffers[name][row], src[0])
                chunks = runner.infer_batch(n)  # [n, T, action_dim]
            except Exception as err:  # the runner's failure is each robot's inference error
                with self._cond:
                    self._failed += 1
                for seat in batch:
                    seat._finish(None, n, err)
                continue
            took = time.monotonic_ns() - t0
            with self._cond:
                self.histogram[n] += 1
                self._batch_ns[n] += took
                self._observations += n
                self._busy_ns += took
            for seat, chunk in zip(batch, chunks):
                seat._finish(chunk, n, None)
