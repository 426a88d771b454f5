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

"""FrameStager: frames into staging on arrival while the images are free, else at staging; each written once."""

import array
import threading
from typing import Any

import cv2
import numpy as np
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image

from pi0_trt_ros.node.cdr import parse_compressed_image, parse_image
from pi0_trt_ros.node.frame_stager import FrameStager
from pi0_trt_ros.node.images import ImageDecoder

H, W = 6, 8


def bgr(value: int) -> np.ndarray:
    """Return a bgr8 frame whose channels differ, so that a missing BGR -> RGB conversion shows."""
    return np.stack([np.full((H, W), value + c, np.uint8) for c in range(3)], axis=-1)


def raw_frame(decoder: ImageDecoder, value: int) -> Any:
    """Return a serialized bgr8 sensor_msgs/Image read as the node reads it, prepared by ``decoder``."""
    msg = Image(height=H, width=W, encoding='bgr8', step=W * 3)
    msg.data = array.array('B', bgr(value).tobytes())
    frame, failed = decoder.prepare(parse_image(serialize_message(msg)))
    assert failed is None
    return frame


def compressed_frame(decoder: ImageDecoder, value: int) -> Any:
    """Return a serialized sensor_msgs/CompressedImage (PNG: lossless, exact pixels) decoded by ``decoder``."""
    msg = CompressedImage(format='bgr8; png compressed bgr8')
    msg.data = array.array('B', cv2.imencode('.png', bgr(value))[1].tobytes())
    frame, failed = decoder.prepare(parse_compressed_image(serialize_message(msg)))
    assert failed is None
    return frame


def rgb(value: int) -> np.ndarray:
    return bgr(value)[..., ::-1]


def make(transports: tuple[str, ...] = ('raw', 'raw')) -> tuple[FrameStager, list[np.ndarray]]:
    images = [np.zeros((H, W, 3), np.uint8) for _ in transports]  # the policy's staging images
    return FrameStager([ImageDecoder(image, t) for image, t in zip(images, transports)]), images


def test_a_frame_offered_while_the_images_are_free_is_written_at_once() -> None:
    stager, images = make(('raw', 'compressed'))
    stager.offer(0, raw_frame(stager.decoders[0], 10))
    stager.offer(1, compressed_frame(stager.decoders[1], 20))
    np.testing.assert_array_equal(images[0], rgb(10))
    np.testing.assert_array_equal(images[1], rgb(20))
    assert stager.written_on_arrival == 2


def test_a_frame_offered_while_the_images_are_claimed_is_written_at_staging() -> None:
    stager, images = make()
    a, b = raw_frame(stager.decoders[0], 10), raw_frame(stager.decoders[1], 20)
    with stager.claim():
        offering = threading.Thread(target=stager.offer, args=(0, a))  # the sensor thread, while the policy reads
        offering.start()
        offering.join()
        assert not images[0].any() and stager.written_on_arrival == 0
        stager.stage((a, b))
    np.testing.assert_array_equal(images[0], rgb(10))
    np.testing.assert_array_equal(images[1], rgb(20))


def test_staging_writes_only_the_frames_that_are_not_already_there() -> None:
    stager, images = make()
    a, b = raw_frame(stager.decoders[0], 10), raw_frame(stager.decoders[1], 20)
    stager.offer(0, a)
    images[0][0, 0] = 99  # a mark that a second write of ``a`` would erase
    with stager.claim():
        stager.stage((a, b))
    assert images[0][0, 0, 0] == 99
    np.testing.assert_array_equal(images[1], rgb(20))
    newer = raw_frame(stager.decoders[0], 30)  # camera 0's next frame arrives before the set is staged again
    stager.offer(0, newer)
    np.testing.assert_array_equal(images[0], rgb(30))
    with stager.claim():
        stager.stage((a, b))  # the set holds the older frame: written back
    np.testing.assert_array_equal(images[0], rgb(10))


def test_after_a_hand_over_frames_are_left_for_staging_until_the_images_are_claimed() -> None:
    stager, images = make()
    a, b = raw_frame(stager.decoders[0], 10), raw_frame(stager.decoders[1], 20)
    stager.offer(0, a)
    stager.offer(1, b)
    stager.handed_over()  # the set (a, b) waits for the control thread
    later = raw_frame(stager.decoders[0], 30)
    stager.offer(0, later)  # belongs to a later set: writing it now would overwrite ``a``
    np.testing.assert_array_equal(images[0], rgb(10))
    with stager.claim():
        stager.stage((a, b))
    assert stager.written_on_arrival == 2
    stager.offer(0, later)  # the images are free again and no set waits
    np.testing.assert_array_equal(images[0], rgb(30))
