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

"""Fault injection around a real runner and real rclpy, for the node's fault tests.

``FaultInjectingRunner`` wraps an active runner (ONNX Runtime in the tests) and runs the real
model on every call; on request it makes the next calls raise, return NaN, or take longer. How
"longer" passes is injected too (a real sleep over DDS, a fake clock's advance in unit tests).
``refused_subscription`` makes rclpy refuse one subscription, for the start-up clean-up tests;
``tokenizer_failing_on`` makes one instruction's callback raise, for the fleet's failed-robot test.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np


class InjectedFault(RuntimeError):
    """The exception an injected failing call raises."""


@contextlib.contextmanager
def refused_subscription(topic: str) -> Iterator[None]:
    """Inside the block, rclpy's ``Node.create_subscription`` raises InjectedFault for ``topic`` (a resolved name).

    As a subscription fails for real (a name that resolves to nothing valid, the middleware out of
    resources), half-way through a node's start-up; every other subscription is made as usual.
    """
    from rclpy.node import Node

    create = Node.create_subscription

    def create_or_refuse(node: Node, msg_type: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if node.resolve_topic_name(name) == topic:
            raise InjectedFault(f'subscription to {topic} refused')
        return create(node, msg_type, name, *args, **kwargs)

    Node.create_subscription = create_or_refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        Node.create_subscription = create  # type: ignore[method-assign]


@contextlib.contextmanager
def tokenizer_failing_on(text: str) -> Iterator[None]:
    """Inside the block, ``Pi0Tokenizer.encode_into`` raises InjectedFault for ``text``: a bug in a callback.

    Not a bad instruction (those are ``Pi0Error``s the node counts and survives): an exception
    nothing expects, raised in the instruction subscription's callback.
    """
    from pi0_trt_ros.tokenizer import Pi0Tokenizer

    encode_into = Pi0Tokenizer.encode_into

    def encode_or_fail(tokenizer: Pi0Tokenizer, prompt: str, *args: Any, **kwargs: Any) -> Any:
        if prompt == text:
            raise InjectedFault(f'tokenizer failed on {text!r}')
        return encode_into(tokenizer, prompt, *args, **kwargs)

    Pi0Tokenizer.encode_into = encode_or_fail  # type: ignore[method-assign]
    try:
        yield
    finally:
        Pi0Tokenizer.encode_into = encode_into  # type: ignore[method-assign]


class FaultInjectingRunner:
    """Delegates ``staging``, ``io`` and ``infer`` to ``runner``; injects faults into the next calls."""

    def __init__(self, runner: Any, delay_ns: Callable[[int], object] = lambda ns: time.sleep(ns / 1e9)) -> None:
        self.runner = runner
        self._delay_ns = delay_ns
        self._lock = threading.Lock()
        self._pending = {'raise': 0, 'nan': 0, 'slow': 0}  # kind -> calls still to affect
        self._slow_ns = 0
        self._nan = np.full((runner.io.chunk_size, runner.io.action_dim), np.nan, np.float32)  # [T, action_dim]
        self.calls = 0
        self.injected = {'raise': 0, 'nan': 0, 'slow': 0}  # kind -> calls affected so far

    @property
    def staging(self) -> Any:
        return self.runner.staging

    @property
    def io(self) -> Any:
        return self.runner.io

    def inject(self, kind: str, calls: int, slow_ns: int = 0) -> None:
        """Make the next ``calls`` calls raise ('raise'), return NaN ('nan') or take ``slow_ns`` longer ('slow')."""
        if kind not in self._pending:
            raise ValueError(f'kind must be one of {sorted(self._pending)}, got {kind!r}')
        with self._lock:
            self._pending[kind] = calls
            if kind == 'slow':
                self._slow_ns = slow_ns

    def infer(self) -> np.ndarray:
        """Run the real model, then apply the next injected fault, if any."""
        with self._lock:
            self.calls += 1
            kind = next((k for k, n in self._pending.items() if n > 0), None)
            if kind is not None:
                self._pending[kind] -= 1
                self.injected[kind] += 1
        if kind == 'raise':
            raise InjectedFault(f'injected failure of call {self.calls}')
        actions = self.runner.infer()
        if kind == 'slow':
            self._delay_ns(self._slow_ns)
        return self._nan if kind == 'nan' else actions
