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

"""Camera frame preprocessing inside the graph: uint8 HWC -> resize-with-pad -> [-1, 1] CHW.

Matches LeRobot's `_preprocess_images` + `resize_with_pad_torch` for frames given as
float [0, 1] (u8 / 255): bilinear resize (align_corners=False, no antialias) so the longer
side fits, clamp to [0, 1], zero padding centred (extra pixel bottom/right), then x*2-1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resized_size(height: int, width: int, target: int) -> tuple[int, int]:
    """Size (h, w) of the resized frame before padding, as LeRobot computes it."""
    ratio = max(width / target, height / target)
    return int(height / ratio), int(width / ratio)


def preprocess_frame(frame_u8: torch.Tensor, target: int) -> torch.Tensor:
    """frame_u8 uint8 [B, H, W, 3] RGB -> float32 [B, 3, target, target] in [-1, 1]."""
    _, h, w, _ = frame_u8.shape
    x = frame_u8.float() / 255.0  # the TensorRT parser needs the cast before any UINT8 transpose
    x = x.permute(0, 3, 1, 2)  # [B, 3, H, W]
    if (h, w) != (target, target):
        rh, rw = resized_size(h, w, target)
        x = F.interpolate(x, size=(rh, rw), mode='bilinear', align_corners=False).clamp(0.0, 1.0)
        pad_h0, pad_w0 = (target - rh) // 2, (target - rw) // 2
        x = F.pad(x, (pad_w0, target - rw - pad_w0, pad_h0, target - rh - pad_h0), value=0.0)
    return x * 2.0 - 1.0
