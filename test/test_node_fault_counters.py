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

"""FaultCounters: counting bad inputs by kind, throttling their log lines per source and kind."""

from pi0_trt_ros.node.faults import BadInput, FaultCounters


class Clock:
    """A settable time source for FaultCounters."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_fault_counters_count_and_throttle_per_source_and_kind() -> None:
    warnings: list[str] = []
    infos: list[str] = []
    clock = Clock()
    faults = FaultCounters(warnings.append, infos.append, throttle_sec=5.0, clock=clock)
    for _ in range(10):
        faults.add('camera top', BadInput('image_size', 'frame is 320x240'))
    faults.add('camera left', BadInput('image_size', 'frame is 320x240'))  # another source: its own line
    faults.add('camera top', BadInput('image_row_padding', 'rows padded', used=True))  # a note: info
    assert faults.count('image_size') == 11 and faults.count('image_row_padding') == 1
    assert faults.count('never') == 0
    assert warnings == ['camera top: frame is 320x240 [image_size]', 'camera left: frame is 320x240 [image_size]']
    assert infos == ['camera top: rows padded [image_row_padding]']
    clock.now += 5.0
    faults.add('camera top', BadInput('image_size', 'frame is 320x241'))
    assert warnings[-1] == 'camera top: frame is 320x241 [image_size] (9 more since the last report)'
    kv = dict(faults.key_values())
    assert kv['bad_input.image_size'] == '12' and kv['bad_input.image_size.last'] == 'camera top: frame is 320x241'
    assert faults.counts() == {'image_size': 12, 'image_row_padding': 1}
