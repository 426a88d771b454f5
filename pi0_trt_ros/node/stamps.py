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

"""Which header stamps an input may carry: not zero, not backwards, not repeated, not far in the future.

Each input (camera or joint states) must stamp its messages with increasing capture times. A
stamp that goes back a little is a reordered or duplicated message: rejected. One that goes back
by ``clock_jump_ns`` or more means time was reset (a looping bag): accepted, and the caller clears
its synchronizer. A stamp more than ``max_future_ns`` ahead of the node's clock is an outlier (a
broken clock, a bad driver): rejected *without* becoming the input's newest stamp, so one such
message does not make the good messages after it look "backwards".

A stamp equal to the input's newest one is a message sent again. On a camera it is rejected: the
frame of that capture time may already have left in a set, and its copy would wait in the
synchronizer to pair with the next frames of the other cameras. Inputs listed in ``repeat_ok``
(joint states, which any number of sets may share) accept it: the later reading wins.
"""

from __future__ import annotations

from typing import Collection, NamedTuple

from pi0_trt_ros.node.faults import BadInput

CLOCK_JUMP_NS = 1_000_000_000  # a stamp this much older than the previous one: time was reset (bag loop)


class StampVerdict(NamedTuple):
    """What to do with a message: use it, clear the synchronizer first, and what to report."""

    accepted: bool
    reset_sync: bool
    bad: BadInput | None


_ACCEPTED = StampVerdict(True, False, None)  # the good path allocates nothing


class StampGate:
    """Per-input newest accepted stamp, and the acceptance rules of the module docstring."""

    def __init__(self, num_inputs: int, max_future_ns: int, clock_jump_ns: int = CLOCK_JUMP_NS,
                 repeat_ok: Collection[int] = ()) -> None:
        if num_inputs < 1 or max_future_ns < 0 or clock_jump_ns <= 0 or not set(repeat_ok) <= set(range(num_inputs)):
            raise ValueError(f'need num_inputs >= 1, max_future_ns >= 0 (0: unbounded), clock_jump_ns > 0, repeat_ok '
                             f'among the inputs; got {num_inputs}, {max_future_ns}, {clock_jump_ns}, {repeat_ok}')
        self.max_future_ns = max_future_ns
        self.clock_jump_ns = clock_jump_ns
        self.repeat_ok = [i in repeat_ok for i in range(num_inputs)]  # per input: may a stamp repeat?
        self.last = [0] * num_inputs  # newest accepted stamp per input (ns, the stamps' clock)

    def check(self, index: int, stamp_ns: int, now_ns: int) -> StampVerdict:
        """Judge input ``index``'s message stamped ``stamp_ns`` at node time ``now_ns``; record it if used."""
        if stamp_ns == 0:
            return StampVerdict(False, False, BadInput('stamp_zero', 'header.stamp is zero: stamp messages with '
                                                       'their capture time'))
        if self.max_future_ns and stamp_ns - now_ns > self.max_future_ns:
            return StampVerdict(False, False, BadInput(
                'stamp_future', f'stamp is {(stamp_ns - now_ns) / 1e6:.1f} ms ahead of the node clock (more than '
                f'max_future_stamp_ms {self.max_future_ns / 1e6:g}): check the sender clock; message not used'))
        last = self.last[index]
        if stamp_ns == last and not self.repeat_ok[index]:
            return StampVerdict(False, False, BadInput('stamp_repeated', 'same stamp as the previous message: '
                                                       'sent again; not used'))
        if stamp_ns < last:
            if last - stamp_ns < self.clock_jump_ns:
                return StampVerdict(False, False, BadInput('stamp_backwards', f'stamp went back by '
                                                           f'{(last - stamp_ns) / 1e6:.3f} ms'))
            self.last = [0] * len(self.last)
            self.last[index] = stamp_ns
            return StampVerdict(True, True, BadInput(
                'clock_jump', f'stamp jumped back by {(last - stamp_ns) / 1e9:.3f} s: time was reset (looping '
                'bag?); sync queues cleared', used=True))
        self.last[index] = stamp_ns
        return _ACCEPTED
