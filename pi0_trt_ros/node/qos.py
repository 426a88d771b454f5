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

"""The QoS profiles of the node's topics, and why each is what it is.

* Sensors (cameras, joint states): volatile, ``sensor_qos_reliability`` (best effort by default:
  it matches any publisher, and a frame lost on the way is better than one delivered late),
  ``sensor_qos_depth`` frames per camera; joint states keep at least 10 samples, since they come
  ~3x as often as frames and the synchronizer looks up the one nearest each set.
* Everything else (instruction, commands, trajectory, status, diagnostics): reliable and volatile,
  depth 10. ``ros2 topic pub`` (default profile: reliable, volatile) waits for one matching
  subscription before it publishes with ``--once``, so a reliable volatile reader gets its message;
  ros2_control's command subscriptions are reliable too.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

JOINT_STATE_MIN_DEPTH = 10  # joint samples queued at least, whatever sensor_qos_depth says

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.RELIABLE)


def camera_qos(reliability: str, depth: int) -> QoSProfile:
    """Return the cameras' profile: ``reliability`` ('reliable' or 'best_effort'), ``depth`` frames."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                      else ReliabilityPolicy.BEST_EFFORT)


def joint_state_qos(reliability: str, depth: int) -> QoSProfile:
    """Return the joint states' profile: as the cameras', at least ``JOINT_STATE_MIN_DEPTH`` deep."""
    return camera_qos(reliability, max(JOINT_STATE_MIN_DEPTH, depth))
