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

"""What the node reports on ``/diagnostics``: input liveness, the inputs' level and key/values, the statuses.

The node gathers plain values (counters, flags, receive times) from its parts once per
diagnostics period and passes them here, so every rule (which input counts as stopped, which
condition wins the inputs' level, how each value is written) is a function of those values and
a given time, testable without a node or DDS. Only the message types are ROS here.
"""

from __future__ import annotations

from typing import Callable, Sequence

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from pi0_trt_ros.node.deadline import Level
from pi0_trt_ros.node.faults import BadInput, FaultCounters

KeyValues = list[tuple[str, str]]


class InputLiveness:
    """Tells which inputs stopped: accepted once, then nothing accepted for ``stale_timeout_ms``.

    A stop is counted once (``camera_stopped`` or ``joint_states_stopped`` in the fault
    counters, with a warning); the input's first message after it is logged as ``messages again``.
    An input that never sent anything is not "stopped" (the inputs' level says "no synchronized
    observation yet" instead).
    """

    def __init__(self, sources: Sequence[str], joint_input: int, stale_timeout_ms: float, faults: FaultCounters,
                 info: Callable[[str], object]) -> None:
        self.sources = tuple(sources)  # per input, for logs: 'camera <name>', ..., 'joint_states'
        self.joint_input = joint_input  # index of the joint states among sources
        self.stale_timeout_ms = stale_timeout_ms
        self.stopped = [False] * len(self.sources)  # per input
        self._faults = faults
        self._info = info

    def check(self, now_ns: int, last_accepted_ns: Sequence[int]) -> None:
        """Update ``stopped`` from each input's last accepted receive time (monotonic ns, 0: never)."""
        for i, last in enumerate(last_accepted_ns):
            if last == 0:
                continue
            silent_ms = (now_ns - last) / 1e6
            if silent_ms > self.stale_timeout_ms and not self.stopped[i]:
                self.stopped[i] = True
                counter = 'joint_states_stopped' if i == self.joint_input else 'camera_stopped'
                self._faults.add(self.sources[i], BadInput(counter, f'no message for {silent_ms:.0f} ms'))
            elif silent_ms <= self.stale_timeout_ms and self.stopped[i]:
                self.stopped[i] = False
                self._info(f'{self.sources[i]}: messages again')

    def stopped_names(self) -> str:
        """Return the stopped inputs, comma-separated ('' when none)."""
        return ', '.join(name for name, stopped in zip(self.sources, self.stopped) if stopped)


def inputs_level(*, has_instruction: bool, commands_stopped: bool, stale: bool, failing: str, on_stale: str,
                 stopped_inputs: str, has_set: bool) -> tuple[Level, str]:
    """Return the inputs' level and message: the first that applies, most severe first.

    ``commands_stopped``/``stale``/``failing`` are the control loop's (stale inputs stopped the
    commands; inputs stale; why the newest sets were not usable, '' if they were);
    ``stopped_inputs`` is ``InputLiveness.stopped_names()``; ``has_set``: a set was handed over.
    """
    if not has_instruction:
        return Level.OK, 'waiting for an instruction'
    if commands_stopped:
        return Level.ERROR, 'inputs stale: commands stopped'
    if stale:
        return Level.WARN, f'inputs stale: {on_stale}'
    if failing:
        return Level.WARN, f'sets not usable: {failing}'
    if stopped_inputs:
        return Level.WARN, f'stopped: {stopped_inputs}'
    if not has_set:
        return Level.WARN, 'no synchronized observation yet'
    return Level.OK, 'receiving'


def input_key_values(now_ns: int, *, instruction: str, inference_mode: str, commands_published: int,
                     holds_published: int, sets_emitted: int, sets_superseded: int, sync_dropped: int,
                     joint_lookup_misses: int, cameras: Sequence[str], received: Sequence[int],
                     last_accepted_ns: Sequence[int], faults: KeyValues) -> KeyValues:
    """Return the inputs' key/values: counters, then per camera received and age, then the fault counters.

    ``received``/``last_accepted_ns`` are per camera (configured order; further inputs ignored);
    ``age_ms`` is ``now_ns`` minus the last accepted receive time, or 'never'.
    """
    pairs = [('instruction', instruction), ('inference_mode', inference_mode),
             ('commands_published', str(commands_published)), ('holds_published', str(holds_published)),
             ('sets_emitted', str(sets_emitted)), ('sets_superseded', str(sets_superseded)),
             ('sync_dropped', str(sync_dropped)), ('joint_lookup_misses', str(joint_lookup_misses))]
    for i, cam in enumerate(cameras):
        last = last_accepted_ns[i]
        pairs.append((f'camera.{cam}.received', str(received[i])))
        pairs.append((f'camera.{cam}.age_ms', f'{(now_ns - last) / 1e6:.1f}' if last else 'never'))
    return pairs + list(faults)


def diagnostic_status(name: str, hardware_id: str, level: Level, message: str, pairs: KeyValues) -> DiagnosticStatus:
    """Return one DiagnosticStatus with ``pairs`` as its values."""
    status = DiagnosticStatus(level=bytes([int(level)]), name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=k, value=v) for k, v in pairs]
    return status
