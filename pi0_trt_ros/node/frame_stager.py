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

"""Camera frames into the policy's staging images as they arrive, while the policy is not reading them.

Staging a set used to write its three frames (a raw frame's colour conversion, a decoded JPEG's
copy: ~0.1 ms each for 640x480, on cold memory) after the set was complete, in the control thread,
on the path from the set's last frame to the commands; each of those calls also gives the GIL away
and waits for it again, behind whichever thread took it. But the control thread is idle most of
the time a set takes to arrive, so each frame can be written where the policy reads it as soon as
it is prepared (``ImageDecoder.prepare``), by the thread that received it, and staging the set
then writes only the frames that are not already there.

The staging images belong to one thread at a time. The control thread (chunk mode: its inference
thread) ``claim``s them from staging until its ``infer()`` returned; the sensor thread ``offer``s a
frame only when it gets them at once, and otherwise leaves the frame to be written at staging (if
it is in the set). From a set's hand-over until the control thread claims the images, frames are
left for staging too: they belong to a later set, and written now they would overwrite the frames
of the set that waits (frames that come in bursts, chunk mode's sets waiting for the next chunk).
The stager remembers which prepared frame each staging image holds, so a frame written on arrival
is not written twice, and a frame that arrived but is not in the set (a newer one, or one the
synchronizer passed over) is overwritten at staging. Every write into the staging images goes
through here; the frames written are the ones ``ImageDecoder.write`` would write at staging, so
the pixels the policy sees do not change.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Sequence

from pi0_trt_ros.node.images import ImageDecoder


class FrameStager:
    """Writes each camera's prepared frames into its staging image, on arrival or at staging (module docstring).

    ``decoders``: one per camera, in the configured order, each bound to its staging image.
    """

    def __init__(self, decoders: Sequence[ImageDecoder]) -> None:
        self.decoders = tuple(decoders)
        self._owner = threading.Lock()  # held by whoever writes or reads the staging images
        self._held: list[Any] = [None] * len(self.decoders)  # per camera: the prepared frame its image holds
        self._set_waiting = False  # a set was handed over and the control thread has not claimed the images yet
        self.written_on_arrival = 0  # frames written by offer (counted for tests and benchmarks)

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Make the staging images the caller's for the ``with`` block: staging and inference."""
        with self._owner:
            self._set_waiting = False  # the set that waited is being staged; a later hand-over notes its own
            yield

    def handed_over(self) -> None:
        """Note that a set waits for the control thread: later frames are left for staging until it claims."""
        self._set_waiting = True

    def offer(self, index: int, frame: Any) -> None:
        """Write camera ``index``'s prepared frame into its staging image now, if the images are free."""
        if self._set_waiting or not self._owner.acquire(blocking=False):
            return  # a set waits, or is being staged or read: written at staging if it is in the set
        try:
            self._write(index, frame)
            self.written_on_arrival += 1
        finally:
            self._owner.release()

    def stage(self, frames: Sequence[Any]) -> None:
        """Write a set's prepared frames (configured camera order), skipping those already there; claimed."""
        for index, frame in enumerate(frames):
            if self._held[index] is not frame:
                self._write(index, frame)

    def _write(self, index: int, frame: Any) -> None:
        self._held[index] = None  # an interrupted write leaves the image unknown, not stale
        self.decoders[index].write(frame)
        self._held[index] = frame  # kept alive, so that no other frame can be this object
