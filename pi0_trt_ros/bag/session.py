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

"""Replay a bag into a running control node over DDS and record what the node publishes.

One rclpy context holds a `BagRecorder` (spinning on its own thread) and a `BagPlayer` (on the
calling thread): the recorder subscribes first, the player waits for the node's subscriptions,
plays with the recorded timing, and the recorder keeps listening ``linger_s`` after the last
message so the node's final commands and diagnostics are in the output bag.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pi0_trt_ros.bag.bag_io import stop_on_signals
from pi0_trt_ros.bag.player import BagPlayer, ReplayStats
from pi0_trt_ros.bag.recorder import BagRecorder

# What a control node with the default config publishes (node name pi0_control, no namespace).
DEFAULT_RECORD_TOPICS: dict[str, str] = {
    '/forward_position_controller/commands': 'std_msgs/msg/Float64MultiArray',
    '/joint_trajectory_controller/joint_trajectory': 'trajectory_msgs/msg/JointTrajectory',
    '/pi0_control/status': 'std_msgs/msg/Float64MultiArray',
    '/diagnostics': 'diagnostic_msgs/msg/DiagnosticArray',
}


@dataclasses.dataclass
class SessionResult:
    """Timing of the replay and messages recorded per topic."""

    stats: ReplayStats
    recorded: dict[str, int]
    unmatched_topics: list[str]


def replay_and_record(bag: str | Path, *, record_bag: str | Path | None = None,
                      record_topics: Mapping[str, str] | Sequence[str] | None = None, rate: float = 1.0,
                      loop: bool = False, duration_s: float | None = None, topics: Sequence[str] | None = None,
                      clock_hz: float = 0.0, restamp: bool = True, wait_for_subscribers_s: float = 30.0,
                      linger_s: float = 1.0, domain_id: int | None = None, log: Any = print,
                      give_up: Callable[[], bool] | None = None) -> SessionResult:
    """Play ``bag`` into the node (recording its outputs into ``record_bag`` when given).

    ``give_up`` (checked while waiting for subscribers) returning True skips the replay: the node
    it was waiting for is gone.

    ``restamp`` moves header stamps to the replay's wall clock so the node's observation-age
    check sees fresh data (turn it off with ``clock_hz`` and a node on ``use_sim_time``).
    SIGINT/SIGTERM stop the replay early; the output bag is finished in every case.
    """
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    recorder = player = None
    try:
        if record_bag is not None:
            recorder = BagRecorder(record_bag, record_topics or DEFAULT_RECORD_TOPICS, context=context).start()
        player = BagPlayer(bag, rate=rate, loop=loop, topics=topics, clock_hz=clock_hz, restamp=restamp,
                           context=context)
        lonely = (player.wait_for_subscribers(wait_for_subscribers_s, give_up=give_up)
                  if wait_for_subscribers_s > 0 else [])
        if lonely and give_up is not None and give_up():
            log(f'replay: gave up waiting for subscribers on {lonely}; nothing played')
            stats = ReplayStats(0, {}, 0, 0.0, 0, np.zeros(0))
        else:
            if lonely:
                log(f'replay: no subscriber after {wait_for_subscribers_s:g} s on {lonely}; playing anyway')
            with stop_on_signals(player.stop):
                stats = player.play(duration_s=duration_s)
        log(f'replay: {stats.summary()}')
        recorded: dict[str, int] = {}
        if recorder is not None:
            time.sleep(linger_s)
            recorded = dict(recorder.close())
            log(f'recorded {sum(recorded.values())} messages into {record_bag}: {recorded}')
        return SessionResult(stats=stats, recorded=recorded, unmatched_topics=lonely)
    finally:
        for node in (player, recorder):
            if node is not None:
                node.destroy_node()
        context.try_shutdown()
