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

"""CUDA helpers over cuda-python: pinned/device round trips, graph capture, PyTorch interop.

Tests marked ``gpu`` skip cleanly where cuda-python sees no CUDA device; the rest run anywhere
cuda-python is installed.
"""

import re

import numpy as np
import pytest

pytest.importorskip('cuda.bindings')

from pi0_trt_ros import cuda  # noqa: E402
from pi0_trt_ros.errors import RunnerError  # noqa: E402

gpu = pytest.mark.skipif(cuda.device_count() == 0, reason='no CUDA device visible to cuda-python')
DTYPES = [np.uint8, np.bool_, np.int64, np.float32, np.float16]


def random_array(shape: tuple[int, ...], dtype: type, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 200, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def test_cuda_call_names_the_failing_call() -> None:
    bad = cuda.device_count()  # one past the last device (or device 0 where there is none)
    with pytest.raises(RunnerError, match=rf'cudaSetDevice\({bad}\) failed: cudaError\w+ \(.+\)'):
        cuda.set_device(bad)


@pytest.mark.skipif(cuda.device_count() > 0, reason='a CUDA device is visible')
def test_without_a_device_there_is_no_gpu_identity() -> None:
    assert cuda.current_gpu() is None


@gpu
def test_current_gpu_identity_names_the_device() -> None:
    ident = cuda.current_gpu()
    assert ident is not None
    assert ident.name and '\x00' not in ident.name
    assert ident.compute_capability >= (5, 0)
    assert re.fullmatch(r'\d+\.\d', ident.cc)
    assert re.fullmatch(r'GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', ident.uuid)
    assert ident.total_memory > 1 << 30


@gpu
def test_pinned_buffer_is_zeroed_page_locked_and_viewed_without_copy() -> None:
    rt = cuda.cudart()
    with cuda.PinnedBuffer((1, 4, 5), np.float32) as buf:
        assert buf.view.shape == (1, 4, 5) and buf.view.dtype == np.float32 and buf.nbytes == 80
        assert not buf.view.any()
        assert buf.view.ctypes.data == buf.ptr
        attrs = cuda.cuda_call(rt.cudaPointerGetAttributes(buf.ptr), 'cudaPointerGetAttributes')
        assert attrs.type == rt.cudaMemoryType.cudaMemoryTypeHost
        buf.view[0, 1] = 7.0
        assert np.frombuffer((np.ctypeslib.ctypes.c_float * 20).from_address(buf.ptr), np.float32)[5] == 7.0
    assert buf.ptr == 0
    with pytest.raises(RunnerError, match='pinned buffer used after free'):
        buf.view


@gpu
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
def test_host_device_host_round_trip_keeps_every_byte(dtype: type) -> None:
    shape = (1, 3, 7, 5)
    with cuda.Stream() as stream, cuda.PinnedBuffer(shape, dtype) as src, \
            cuda.PinnedBuffer(shape, dtype) as dst, cuda.DeviceBuffer(src.nbytes) as dev:
        src.view[...] = random_array(shape, dtype, seed=1)
        dev.upload(src, stream)
        dev.download(dst, stream)
        stream.synchronize()
        np.testing.assert_array_equal(dst.view, src.view)


@gpu
def test_copies_refuse_buffers_of_another_size() -> None:
    with cuda.Stream() as stream, cuda.PinnedBuffer((4,), np.float32) as host, cuda.DeviceBuffer(8) as dev:
        with pytest.raises(RunnerError, match='upload: host buffer has 16 bytes, device buffer 8'):
            dev.upload(host, stream)


@gpu
def test_a_captured_graph_replays_the_copies_with_the_host_data_of_each_launch() -> None:
    shape = (2, 64)
    with cuda.Stream() as stream, cuda.PinnedBuffer(shape, np.float32) as src, \
            cuda.PinnedBuffer(shape, np.float32) as dst, cuda.DeviceBuffer(src.nbytes) as dev:

        def cycle() -> None:
            dev.upload(src, stream)
            dev.download(dst, stream)

        graph = cuda.CudaGraph.capture(stream, cycle)
        try:
            assert not dst.view.any()  # capture records, it does not run
            for seed in (2, 3):
                src.view[...] = random_array(shape, np.float32, seed)
                graph.launch(stream)
                stream.synchronize()
                np.testing.assert_array_equal(dst.view, src.view)
        finally:
            graph.destroy()
        with pytest.raises(RunnerError, match='launched after destroy'):
            graph.launch(stream)


@gpu
def test_a_failing_capture_is_discarded_and_the_stream_stays_usable() -> None:
    rt = cuda.cudart()
    with cuda.Stream() as stream, cuda.PinnedBuffer((8,), np.int64) as src, \
            cuda.PinnedBuffer((8,), np.int64) as dst, cuda.DeviceBuffer(64) as dev:

        def broken() -> None:
            dev.upload(src, stream)
            raise ValueError('enqueue failed')

        with pytest.raises(ValueError, match='enqueue failed'):
            cuda.CudaGraph.capture(stream, broken)
        status = cuda.cuda_call(rt.cudaStreamIsCapturing(stream.handle), 'cudaStreamIsCapturing')
        assert status == rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone
        src.view[:] = np.arange(8)
        dev.upload(src, stream)
        dev.download(dst, stream)
        stream.synchronize()
        np.testing.assert_array_equal(dst.view, np.arange(8))


@gpu
def test_pytorch_shares_the_primary_context_and_the_stream() -> None:
    torch = pytest.importorskip('torch')
    if not torch.cuda.is_available():
        pytest.skip('torch has no CUDA')

    class DeviceArray:
        def __init__(self, buf: cuda.DeviceBuffer, n: int) -> None:
            self.__cuda_array_interface__ = {'shape': (n,), 'typestr': '<f4', 'data': (buf.ptr, False),
                                             'version': 3, 'strides': None}

    n = 256
    with cuda.Stream() as stream, cuda.PinnedBuffer((n,), np.float32) as host, cuda.DeviceBuffer(4 * n) as dev:
        host.view[:] = np.arange(n, dtype=np.float32)
        dev.upload(host, stream)
        tensor = torch.as_tensor(DeviceArray(dev, n), device='cuda')  # no copy: our device memory
        with torch.cuda.stream(torch.cuda.ExternalStream(stream.ptr)):
            tensor.mul_(2.0)
        dev.download(host, stream)
        stream.synchronize()
        np.testing.assert_array_equal(host.view, 2 * np.arange(n, dtype=np.float32))
