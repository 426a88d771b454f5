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

"""The node's ``~/status`` message: one std_msgs/Float64MultiArray per cycle, ``STATUS_FIELDS`` in order.

The values are written into reused serialized bytes (``Float64ArrayMessage``): nothing is
allocated per cycle. ``bag/offline.py``'s ``cycles_from_status`` and ``bag/report.py`` read the
same layout back.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from pi0_trt_ros.node.actions import Float64ArrayMessage
from pi0_trt_ros.node.control_loop import SetSlot
from pi0_trt_ros.node.deadline import STATUS_FIELDS


class StatusWriter:
    """Fills and publishes one ``~/status`` row per cycle (the control loop's ``publish_status``).

    ``cycles``/``superseded``: the loop's cycle counter and the mailbox's superseded sets, read at
    each row.
    """

    def __init__(self, publish: Callable[[bytes], object], cycles: Callable[[], int],
                 superseded: Callable[[], int]) -> None:
        self._publish = publish
        self._cycles = cycles
        self._superseded = superseded
        self._message = Float64ArrayMessage(len(STATUS_FIELDS), label=','.join(STATUS_FIELDS))
        self.values = np.zeros(len(STATUS_FIELDS), np.float64)  # [len(STATUS_FIELDS)] the last row

    def write(self, missed: bool, compute_ns: int, obs_age_ns: int, inference_ns: int, slot: SetSlot,
              chunk_slack_ns: float, switch_index: int, ticks_missed: float) -> None:
        """Publish one cycle's row; ``chunk_slack_ns``/``ticks_missed`` are NaN in ``every_set`` mode."""
        values = self.values  # in STATUS_FIELDS order
        values[0], values[1], values[2] = self._cycles(), compute_ns * 1e-6, obs_age_ns * 1e-6
        values[3], values[4] = float(missed), inference_ns * 1e-6
        values[5], values[6] = divmod(slot.newest_stamp_ns, 1_000_000_000)
        values[7] = (slot.joint_stamp_ns - slot.newest_stamp_ns) * 1e-6
        values[8] = self._superseded()
        values[9], values[10], values[11] = chunk_slack_ns * 1e-6, switch_index, ticks_missed
        self._publish(self._message.fill(values))
