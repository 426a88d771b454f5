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

"""Tracking error: how far a policy's action chunks are from where the joints actually went.

Action k of a chunk for a synchronized set stamped s is compared with the recorded joint
positions at s + (k + 1) * period (linear interpolation between joint samples, by header
stamp), joint by joint by name. Chunks whose horizon runs past the recording are left out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from pi0_trt_ros.bag.bag_io import read_bag
from pi0_trt_ros.errors import Pi0Error


@dataclasses.dataclass(frozen=True)
class JointTruth:
    stamps_ns: np.ndarray  # int64 [n], header stamps
    positions: np.ndarray  # float64 [n, J], in the order asked for


def read_joint_truth(bag: str | Path, joint_names: Sequence[str], topic: str = '/joint_states') -> JointTruth:
    """Read the joint positions of ``bag``'s ``topic`` (sensor_msgs/JointState), columns in ``joint_names`` order."""
    stamps, rows = [], []
    for m in read_bag(bag, [topic]):
        names = list(m.msg.name)
        try:
            rows.append([m.msg.position[names.index(n)] for n in joint_names])
        except ValueError:
            raise Pi0Error(f'{bag}: {topic} lacks one of {list(joint_names)} (has {names})') from None
        stamps.append(m.msg.header.stamp.sec * 1_000_000_000 + m.msg.header.stamp.nanosec)
    if not stamps:
        raise Pi0Error(f'{bag}: no messages on {topic}')
    order = np.argsort(stamps, kind='stable')
    return JointTruth(np.asarray(stamps, np.int64)[order], np.asarray(rows, np.float64)[order])


def future_positions(truth: JointTruth, set_stamps_ns: np.ndarray, steps: int, period_s: float) -> np.ndarray:
    """Joint positions at set stamp + (k + 1) * period, k < steps: float64 [n, steps, J] (NaN outside the record)."""
    t = (np.asarray(set_stamps_ns, np.int64)[:, None] - truth.stamps_ns[0]) / 1e9 \
        + period_s * np.arange(1, steps + 1)[None, :]  # [n, steps] s since the first joint sample
    ts = (truth.stamps_ns - truth.stamps_ns[0]) / 1e9
    out = np.stack([np.interp(t, ts, truth.positions[:, j], left=np.nan, right=np.nan)
                    for j in range(truth.positions.shape[1])], axis=-1)
    return out


def tracking_error(chunks: np.ndarray, set_stamps_ns: np.ndarray, truth: JointTruth, period_s: float,
                   horizon: int) -> dict[str, float]:
    """Mean abs error (rad) of chunks [n, T, J] against the joints' future positions.

    ``first``: action 0 (what `every_set` mode commands) against the joints one period later;
    ``horizon``: actions 0..horizon-1; ``sets``: how many chunks were scored.
    """
    actual = future_positions(truth, set_stamps_ns, horizon, period_s)  # [n, horizon, J]
    scored = np.isfinite(actual).all(axis=(1, 2))
    if not scored.any():
        raise Pi0Error('no chunk lies within the recorded joint states')
    err = np.abs(chunks[scored, :horizon] - actual[scored])
    return {'first': float(err[:, 0].mean()), 'horizon': float(err.mean()), 'sets': int(scored.sum())}
