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

"""The runner contract shared by every backend.

A runner owns fixed-size host buffers (``Staging``) that the caller fills in place, then
``infer()`` runs one batch-1 policy call and returns the action chunk. Nothing is allocated
per call: on GPU backends the staging arrays are views of pinned host memory, on CPU
backends plain preallocated arrays.

A batched runner (``batch_sizes`` beyond (1,), see ``pi0_trt_ros.batch_sizes``) allocates its
buffers once for the largest size B; row ``i`` has its own ``Staging`` (``row(i)``), and
``infer_batch(n)`` runs rows 0..n-1 at the smallest batch size that holds them. The rows past
``n`` are padding: they keep whatever was staged there last (always an observation that passed
``stage``'s checks, or activation's zeros), nothing is copied into them, and their actions are
discarded. Rows never mix in the policy, so padding cannot change another row's chunk.

Graph tensor names and shapes (B = 1 for the single-robot runner, every backend):

===============  =======  ==========================  =====================================
name             dtype    shape                       meaning
===============  =======  ==========================  =====================================
``image_{i}``    uint8    [B, H_i, W_i, 3]            raw RGB frame of camera i
``state``        float32  [B, state_dim]              joint state, robot units
``tokens``       int64    [B, L]                      instruction token ids (right-padded)
``token_mask``   bool     [B, L]                      True for real tokens
``noise``        float32  [B, chunk, max_action_dim]  flow-matching start x_1 ~ N(0, 1)
``actions``      float32  [B, chunk, action_dim]      action chunk, robot units (output)
===============  =======  ==========================  =====================================
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Sequence

import numpy as np

from pi0_trt_ros.batch_sizes import check_batch_sizes, padded_size, SINGLE
from pi0_trt_ros.errors import RunnerError
from pi0_trt_ros.manifest import PolicyIO


@dataclasses.dataclass
class Staging:
    """Per-cycle host inputs of one batch row, filled in place by the caller; views without batch dim.

    ``buffers`` maps each graph input name to its full array, [B, ...] (what the backend reads;
    B = 1 for the single-robot runner); the named fields are views of row ``row`` of it.
    """

    buffers: dict[str, np.ndarray]
    images: list[np.ndarray]  # uint8 [H_i, W_i, 3] each, RGB
    state: np.ndarray  # float32 [state_dim], robot units
    tokens: np.ndarray  # int64 [L]
    token_mask: np.ndarray  # bool [L]
    noise: np.ndarray  # float32 [chunk, max_action_dim]
    row: int = 0  # batch row of ``buffers`` the fields view

    @classmethod
    def over(cls, io: PolicyIO, buffers: dict[str, np.ndarray], row: int = 0) -> 'Staging':
        """Wrap existing [B, ...] buffers (e.g. views of pinned memory) named as in the graph; view row ``row``."""
        batch = len(buffers['state']) if 'state' in buffers else 1
        for name, (shape, dtype) in io.input_specs(batch).items():
            buf = buffers.get(name)
            if buf is None or buf.shape != shape or buf.dtype != dtype:
                got = None if buf is None else (buf.shape, buf.dtype)
                raise RunnerError(f'staging buffer {name!r}: want {shape} {dtype}, got {got}')
        if not 0 <= row < batch:
            raise RunnerError(f'staging row {row} is outside the batch of {batch}')
        return cls(
            buffers=buffers,
            images=[buffers[f'image_{i}'][row] for i in range(io.num_cameras)],
            state=buffers['state'][row],
            tokens=buffers['tokens'][row],
            token_mask=buffers['token_mask'][row],
            noise=buffers['noise'][row],
            row=row,
        )

    @classmethod
    def allocate(cls, io: PolicyIO, batch: int = 1) -> 'Staging':
        """Plain (pageable) numpy buffers for ``batch`` rows, for CPU backends; the fields view row 0."""
        return cls.over(io, {n: np.zeros(s, d) for n, (s, d) in io.input_specs(batch).items()})


def check_array(name: str, value: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Raise RunnerError naming the tensor when ``value`` is not exactly ``shape``/``dtype``."""
    if not isinstance(value, np.ndarray):
        raise RunnerError(f'{name}: expected a numpy array, got {type(value).__name__}')
    if value.dtype != dtype:
        raise RunnerError(f'{name}: expected dtype {dtype}, got {value.dtype}')
    if value.shape != shape:
        raise RunnerError(f'{name}: expected shape {shape}, got {value.shape}')


class Runner(abc.ABC):
    """Policy runner, batch 1 or batched. The constructor stores settings; ``activate`` allocates.

    Use as a context manager::

        with make_runner(...) as runner:
            runner.stage(images, state, tokens, token_mask, noise)   # or fill runner.staging
            actions = runner.infer()        # float32 [chunk, action_dim], a reused buffer

        with make_runner(..., batch_sizes=(1, 2, 4, 8)) as runner:
            for i, obs in enumerate(ready):
                runner.stage(*obs, row=i)   # or fill runner.row(i)
            chunks = runner.infer_batch(len(ready))   # float32 [n, chunk, action_dim], reused

    The arrays ``infer`` and ``infer_batch`` return are overwritten by the next call: copy them to keep them.
    """

    name = 'base'

    def __init__(self, io: PolicyIO, batch_sizes: Sequence[int] = SINGLE) -> None:
        self.io = io
        self.batch_sizes = check_batch_sizes(batch_sizes)
        self._rows: list[Staging] = []
        self._active = False

    @property
    def max_batch(self) -> int:
        """Rows of the staging buffers: the largest batch size."""
        return self.batch_sizes[-1]

    @property
    def batched(self) -> bool:
        """Say whether this runner serves batches (False: the single-robot runner, batch 1 on the static graph)."""
        return self.batch_sizes != SINGLE

    # -- lifecycle -------------------------------------------------------------------------
    def activate(self) -> 'Runner':
        if not self._active:
            staging = self._activate_impl()
            self._rows = [Staging.over(self.io, staging.buffers, i) for i in range(self.max_batch)]
            self._active = True
        return self

    def deactivate(self) -> None:
        if self._active:
            self._deactivate_impl()
            self._rows = []
            self._active = False

    def __enter__(self) -> 'Runner':
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @property
    def active(self) -> bool:
        return self._active

    @property
    def staging(self) -> Staging:
        """Row 0's staging: the single-robot runner's only row."""
        return self.row(0)

    def row(self, i: int) -> Staging:
        """Staging of batch row ``i`` (0..max_batch-1)."""
        if not self._active:
            raise RunnerError(f'{self.name} runner is not active: call activate() or use it in a with-block')
        if not 0 <= i < self.max_batch:
            raise RunnerError(f'staging row {i} is outside 0..{self.max_batch - 1} '
                              f'(batch sizes {",".join(map(str, self.batch_sizes))})')
        return self._rows[i]

    # -- per cycle -------------------------------------------------------------------------
    def stage(self, images: Sequence[np.ndarray], state: np.ndarray, tokens: np.ndarray,
              token_mask: np.ndarray, noise: np.ndarray, row: int = 0) -> None:
        """Validate a whole observation, then copy it into the staging buffers of batch row ``row``.

        Every check runs before the first copy, so a bad observation leaves staging untouched.
        """
        staging = self.row(row)
        io = self.io
        if len(images) != io.num_cameras:
            raise RunnerError(f'expected {io.num_cameras} camera images ({", ".join(io.camera_keys)}), '
                              f'got {len(images)}')
        for i, img in enumerate(images):
            check_array(f'image_{i} ({io.camera_keys[i]})', img, staging.images[i].shape, np.dtype(np.uint8))
        check_array('state', state, staging.state.shape, np.dtype(np.float32))
        check_array('tokens', tokens, staging.tokens.shape, np.dtype(np.int64))
        check_array('token_mask', token_mask, staging.token_mask.shape, np.dtype(np.bool_))
        check_array('noise', noise, staging.noise.shape, np.dtype(np.float32))
        for dst, src in zip(staging.images, images):
            np.copyto(dst, src)
        np.copyto(staging.state, state)
        np.copyto(staging.tokens, tokens)
        np.copyto(staging.token_mask, token_mask)
        np.copyto(staging.noise, noise)

    def infer(self) -> np.ndarray:
        """Run the policy on the staged observation (row 0): float32 [chunk, action_dim], robot units."""
        if not self._active:
            raise RunnerError(f'{self.name} runner is not active: call activate() or use it in a with-block')
        return self._infer_impl(1)[0]

    def infer_batch(self, n: int) -> np.ndarray:
        """Run the policy on rows 0..n-1, padded to the next batch size: float32 [n, chunk, action_dim]."""
        if not self._active:
            raise RunnerError(f'{self.name} runner is not active: call activate() or use it in a with-block')
        return self._infer_impl(padded_size(n, self.batch_sizes))[:n]

    # -- backend hooks ---------------------------------------------------------------------
    @abc.abstractmethod
    def _activate_impl(self) -> Staging:
        """Allocate everything (buffers for ``max_batch`` rows, sessions, streams); return the staging buffers."""

    @abc.abstractmethod
    def _deactivate_impl(self) -> None:
        """Free what ``_activate_impl`` allocated."""

    @abc.abstractmethod
    def _infer_impl(self, batch: int) -> np.ndarray:
        """One policy call on the first ``batch`` rows (``batch`` is one of ``batch_sizes``).

        Returns a view [batch, chunk, action_dim] of the reused output buffer.
        """
