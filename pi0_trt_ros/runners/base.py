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

Graph tensor names and shapes (batch 1, every backend):

===============  =======  ==========================  =====================================
name             dtype    shape                       meaning
===============  =======  ==========================  =====================================
``image_{i}``    uint8    [1, H_i, W_i, 3]            raw RGB frame of camera i
``state``        float32  [1, state_dim]              joint state, robot units
``tokens``       int64    [1, L]                      instruction token ids (right-padded)
``token_mask``   bool     [1, L]                      True for real tokens
``noise``        float32  [1, chunk, max_action_dim]  flow-matching start x_1 ~ N(0, 1)
``actions``      float32  [1, chunk, action_dim]      action chunk, robot units (output)
===============  =======  ==========================  =====================================
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Sequence

import numpy as np

from pi0_trt_ros.errors import RunnerError
from pi0_trt_ros.manifest import PolicyIO


@dataclasses.dataclass
class Staging:
    """Per-cycle host inputs, filled in place by the caller. Arrays are views without batch dim.

    ``buffers`` maps each graph input name to its full batch-1 array (what the backend
    reads); the named fields are views of the same memory.
    """

    buffers: dict[str, np.ndarray]
    images: list[np.ndarray]  # uint8 [H_i, W_i, 3] each, RGB
    state: np.ndarray  # float32 [state_dim], robot units
    tokens: np.ndarray  # int64 [L]
    token_mask: np.ndarray  # bool [L]
    noise: np.ndarray  # float32 [chunk, max_action_dim]

    @classmethod
    def over(cls, io: PolicyIO, buffers: dict[str, np.ndarray]) -> 'Staging':
        """Wrap existing batch-1 buffers (e.g. views of pinned memory) named as in the graph."""
        for name, (shape, dtype) in io.input_specs().items():
            buf = buffers.get(name)
            if buf is None or buf.shape != shape or buf.dtype != dtype:
                got = None if buf is None else (buf.shape, buf.dtype)
                raise RunnerError(f'staging buffer {name!r}: want {shape} {dtype}, got {got}')
        return cls(
            buffers=buffers,
            images=[buffers[f'image_{i}'][0] for i in range(io.num_cameras)],
            state=buffers['state'][0],
            tokens=buffers['tokens'][0],
            token_mask=buffers['token_mask'][0],
            noise=buffers['noise'][0],
        )

    @classmethod
    def allocate(cls, io: PolicyIO) -> 'Staging':
        """Plain (pageable) numpy buffers, for CPU backends."""
        return cls.over(io, {n: np.zeros(s, d) for n, (s, d) in io.input_specs().items()})


def check_array(name: str, value: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Raise RunnerError naming the tensor when ``value`` is not exactly ``shape``/``dtype``."""
    if not isinstance(value, np.ndarray):
        raise RunnerError(f'{name}: expected a numpy array, got {type(value).__name__}')
    if value.dtype != dtype:
        raise RunnerError(f'{name}: expected dtype {dtype}, got {value.dtype}')
    if value.shape != shape:
        raise RunnerError(f'{name}: expected shape {shape}, got {value.shape}')


class Runner(abc.ABC):
    """Batch-1 policy runner. The constructor stores settings; ``activate`` allocates.

    Use as a context manager::

        with make_runner(...) as runner:
            runner.stage(images, state, tokens, token_mask, noise)   # or fill runner.staging
            actions = runner.infer()        # float32 [chunk, action_dim], a reused buffer

    The array ``infer`` returns is overwritten by the next call: copy it to keep it.
    """

    name = 'base'

    def __init__(self, io: PolicyIO) -> None:
        self.io = io
        self._staging: Staging | None = None
        self._active = False

    # -- lifecycle -------------------------------------------------------------------------
    def activate(self) -> 'Runner':
        if not self._active:
            self._staging = self._activate_impl()
            self._active = True
        return self

    def deactivate(self) -> None:
        if self._active:
            self._deactivate_impl()
            self._staging = None
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
        if self._staging is None:
            raise RunnerError(f'{self.name} runner is not active: call activate() or use it in a with-block')
        return self._staging

    # -- per cycle -------------------------------------------------------------------------
    def stage(self, images: Sequence[np.ndarray], state: np.ndarray, tokens: np.ndarray,
              token_mask: np.ndarray, noise: np.ndarray) -> None:
        """Validate a whole observation, then copy it into the staging buffers.

        Every check runs before the first copy, so a bad observation leaves staging untouched.
        """
        staging = self.staging
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
        """Run the policy on the staged observation: float32 [chunk, action_dim], robot units."""
        if not self._active:
            raise RunnerError(f'{self.name} runner is not active: call activate() or use it in a with-block')
        return self._infer_impl()

    # -- backend hooks ---------------------------------------------------------------------
    @abc.abstractmethod
    def _activate_impl(self) -> Staging:
        """Allocate everything (buffers, sessions, streams) and return the staging buffers."""

    @abc.abstractmethod
    def _deactivate_impl(self) -> None:
        """Free what ``_activate_impl`` allocated."""

    @abc.abstractmethod
    def _infer_impl(self) -> np.ndarray:
        """One policy call on ``self.staging``; returns a view of the reused output buffer."""
