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

"""One job at a time on a thread of its own, handed over and collected without blocking.

Chunk mode stages and infers the next chunk here while the control thread keeps publishing the
running chunk's actions: the control thread ``start``s a job when it wants a chunk and ``poll``s
at each control tick, neither ever waiting for the job. Inference releases the GIL (ONNX Runtime,
TensorRT, torch), so the two threads run side by side; between ``start`` and the ``poll`` that
returns the result, the job owns what it works on (the runner's staging buffers, the chunk it
writes), and nothing else touches them.

States: idle → ``start`` → running → (job returns) done → ``poll`` → idle. An exception the job
raises is re-raised by that ``poll``, in the control thread, where the node logs it.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

ArgT = TypeVar('ArgT')
ResultT = TypeVar('ResultT')


class InferenceWorker(Generic[ArgT, ResultT]):
    """Runs ``job(arg)`` on its own thread for each ``start(arg)``; ``poll()`` collects the result."""

    def __init__(self, job: Callable[[ArgT], ResultT], name: str = 'pi0_inference') -> None:
        self._job = job
        self._cv = threading.Condition()
        self._state = 'idle'  # 'idle' | 'running' | 'done'
        self._arg: ArgT | None = None
        self._result: ResultT | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """Return the thread the jobs run on."""
        return self._thread

    @property
    def running(self) -> bool:
        """Whether a job is being worked on now."""
        return self._state == 'running'

    @property
    def busy(self) -> bool:
        """Whether a job was started and its result not yet collected."""
        return self._state != 'idle'

    def start(self, arg: ArgT) -> None:
        """Hand ``arg`` to the thread; refused unless idle (one job at a time)."""
        with self._cv:
            if self._state != 'idle' or self._closed:
                raise RuntimeError(f'cannot start a job: the worker is {"closed" if self._closed else self._state}')
            self._arg, self._state = arg, 'running'
            self._cv.notify_all()

    def poll(self) -> ResultT | None:
        """Return the finished job's result (then idle again), or None while running or idle; re-raise its error."""
        with self._cv:
            if self._state != 'done':
                return None
            result, error = self._result, self._error
            self._result = self._error = None
            self._state = 'idle'
        if error is not None:
            raise error
        return result

    def close(self, timeout_s: float = 30.0) -> None:
        """Let a running job finish, then end the thread. Idempotent."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout_s)

    def _serve(self) -> None:
        while True:
            with self._cv:
                while self._state != 'running' and not self._closed:
                    self._cv.wait()
                if self._state != 'running':
                    return
                arg = self._arg
            try:
                result, error = self._job(arg), None  # type: ignore[arg-type]
            except Exception as err:  # handed to the control thread by poll()
                result, error = None, err
            with self._cv:
                self._arg, self._result, self._error, self._state = None, result, error, 'done'
