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

"""The task instruction: decoded strictly, validated, tokenized off the hot path, staged on change.

``InstructionBox.receive`` runs in the subscription callback (serialized std_msgs/String bytes):
a bad instruction (not UTF-8, malformed, empty, too long, untokenizable) is counted and the
previous one kept. A new one is tokenized there; the thread that stages (the control thread, or
chunk mode's inference thread) copies the tokens into staging only when the version changed
(``stage_if_changed``). The "instruction: ..." log line is throttled (``throttle_sec``), with the
number of changes not logged since the last line: a publisher alternating instructions at kHz
must not flood the log.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.faults import BadInput, FaultCounters


def decode_instruction(raw: bytes) -> str:
    """Decode a serialized std_msgs/String strictly as UTF-8.

    rclpy decodes strings with ``errors='replace'``, which would hide non-UTF-8 text, so the
    node subscribes raw and reads the CDR itself: a 4-byte encapsulation header (byte 1 odd:
    little-endian), a uint32 length including the terminating NUL, the bytes. Raises
    UnicodeDecodeError when the text is not valid UTF-8, ValueError when the buffer is not a
    serialized string.
    """
    if len(raw) < 9:
        raise ValueError(f'{len(raw)} bytes is too short for a serialized std_msgs/String')
    order = 'little' if raw[1] & 1 else 'big'
    n = int.from_bytes(raw[4:8], order)
    if n < 1 or 8 + n > len(raw) or raw[8 + n - 1] != 0:
        raise ValueError(f'string length field {n} does not fit the {len(raw)}-byte message')
    return bytes(raw[8:8 + n - 1]).decode('utf-8')


class InstructionBox:
    """The current instruction's text and tokens, written by the callback, staged by the control thread."""

    def __init__(self, tokenizer: Any, token_len: int, max_chars: int, faults: FaultCounters,
                 info: Callable[[str], object], throttle_sec: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._tokenizer = tokenizer
        self._max_chars = max_chars
        self._faults = faults
        self._info = info
        self._throttle_sec = throttle_sec
        self._clock = clock
        self._ids = np.zeros(token_len, np.int64)  # [token_len] tokens of the current instruction
        self._mask = np.zeros(token_len, np.bool_)  # [token_len]
        self._lock = threading.Lock()
        self.text = ''
        self.version = 0  # bumped per accepted new instruction; 0: none yet
        self._staged_version = 0  # the version last copied into staging (by the thread that stages)
        self._last_log = -float('inf')
        self._unlogged = 0  # changes since the last log line
        self.lines_logged = 0

    def receive(self, raw: bytes) -> None:
        """Validate and tokenize one serialized std_msgs/String (subscription callback)."""
        try:
            text = decode_instruction(raw)
        except UnicodeDecodeError as err:
            return self._reject('instruction_not_utf8', f'instruction is not UTF-8 ({err})')
        except ValueError as err:
            return self._reject('instruction_malformed', str(err))
        if not text.strip():
            return self._reject('instruction_empty', 'empty instruction')
        if len(text) > self._max_chars:
            return self._reject('instruction_too_long', f'{len(text)} characters > max_instruction_chars '
                                f'{self._max_chars}')
        if text == self.text:
            return None
        ids, mask = np.zeros_like(self._ids), np.zeros_like(self._mask)
        try:
            info = self._tokenizer.encode_into(text, ids, mask)
        except Pi0Error as err:
            return self._reject('instruction_tokenize', str(err))
        if info.truncated:
            self._faults.add('instruction', BadInput('instruction_truncated', f'{info.full_length} tokens; only '
                                                     f'the first {info.num_tokens} are used', used=True))
        with self._lock:
            np.copyto(self._ids, ids)
            np.copyto(self._mask, mask)
            self.text = text
            self.version += 1
        self._log(f'instruction: {text!r} ({info.num_tokens} tokens)')
        return None

    def stage_if_changed(self, tokens: np.ndarray, mask: np.ndarray) -> bool:
        """Copy the tokens into staging if the instruction changed since the last call; say whether it did."""
        if self.version == self._staged_version:
            return False
        with self._lock:
            np.copyto(tokens, self._ids)
            np.copyto(mask, self._mask)
            self._staged_version = self.version
        return True

    @property
    def staged_version(self) -> int:
        """Return the version last copied into staging (0: none yet): the task a chunk inferred now is for."""
        return self._staged_version

    def _reject(self, counter: str, detail: str) -> None:
        self._faults.add('instruction', BadInput(counter, f'{detail}; keeping the previous one'))

    def _log(self, line: str) -> None:
        now = self._clock()
        if now - self._last_log < self._throttle_sec:
            self._unlogged += 1
            return
        more = f' ({self._unlogged} more changes since the last report)' if self._unlogged else ''
        self._last_log, self._unlogged = now, 0
        self.lines_logged += 1
        self._info(line + more)
