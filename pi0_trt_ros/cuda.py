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

"""Checked CUDA runtime calls over cuda-python: pinned/device buffers, streams, graphs, GPU identity.

Everything goes through ``cuda.bindings.runtime``, which works in the device's primary context,
the one PyTorch uses too: pointers (``ptr``) and stream handles (``Stream.ptr``) made here can be
given to TensorRT (``set_tensor_address``, ``execute_async_v3``) or to PyTorch
(``torch.cuda.ExternalStream(stream.ptr)``). Nothing here imports torch.

Buffers are freed explicitly (``free()``/``destroy()`` or a with-block), never by the garbage
collector, so that no CUDA call runs at interpreter shutdown.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np

from pi0_trt_ros.errors import BackendUnavailableError, Pi0Error, RunnerError

_CUDART: ModuleType | None = None


def cudart() -> ModuleType:
    """Return ``cuda.bindings.runtime``, imported on first use."""
    global _CUDART
    if _CUDART is None:
        try:
            from cuda.bindings import runtime
        except ImportError:
            raise BackendUnavailableError('CUDA buffers need cuda-python: pip install cuda-python') from None
        _CUDART = runtime
    return _CUDART


def cuda_call(result: tuple[Any, ...], call: str, error: type[Pi0Error] = RunnerError) -> Any:
    """Unpack a cuda-python ``(cudaError_t, *values)`` result; raise ``error`` naming ``call`` on failure.

    Returns None, the single value, or a tuple of the values.
    """
    err, *values = result
    if int(err) != 0:
        rt = cudart()
        _, name = rt.cudaGetErrorName(err)
        _, text = rt.cudaGetErrorString(err)
        raise error(f'{call} failed: {_text(name)} ({_text(text)})')
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _text(value: Any) -> str:
    return value.decode(errors='replace') if isinstance(value, bytes) else str(value)


# -- devices -----------------------------------------------------------------------------------
def device_count() -> int:
    """Count the visible CUDA devices; 0 when there is no driver or no device (never raises)."""
    try:
        err, count = cudart().cudaGetDeviceCount()
    except BackendUnavailableError:
        return 0
    return int(count) if int(err) == 0 else 0


def set_device(index: int) -> None:
    """Make device ``index`` current for this thread (its primary context)."""
    cuda_call(cudart().cudaSetDevice(index), f'cudaSetDevice({index})')


@dataclasses.dataclass(frozen=True)
class GpuIdentity:
    """What an engine plan depends on: the GPU model and its compute capability."""

    index: int
    name: str  # e.g. 'NVIDIA H100 80GB HBM3'
    compute_capability: tuple[int, int]  # (major, minor)
    uuid: str  # 'GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'
    total_memory: int  # bytes

    @property
    def cc(self) -> str:
        """Compute capability as 'major.minor'."""
        return f'{self.compute_capability[0]}.{self.compute_capability[1]}'


def current_gpu() -> GpuIdentity | None:
    """Identity of the current device, or None when no CUDA device is usable here."""
    if device_count() == 0:
        return None
    rt = cudart()
    index = cuda_call(rt.cudaGetDevice(), 'cudaGetDevice')
    prop = cuda_call(rt.cudaGetDeviceProperties(index), f'cudaGetDeviceProperties({index})')
    hexs = bytes(prop.uuid.bytes).hex()  # 16 bytes
    uuid = f'GPU-{hexs[:8]}-{hexs[8:12]}-{hexs[12:16]}-{hexs[16:20]}-{hexs[20:32]}'
    return GpuIdentity(index=int(index), name=_text(prop.name).rstrip('\x00'),
                       compute_capability=(int(prop.major), int(prop.minor)), uuid=uuid,
                       total_memory=int(prop.totalGlobalMem))


# -- memory ------------------------------------------------------------------------------------
class PinnedBuffer:
    """Page-locked host memory (``cudaHostAlloc``, portable) with a zero-copy numpy view ``array``.

    The memory starts zeroed. ``array`` is invalid after ``free()``: do not keep views past it.
    """

    def __init__(self, shape: Sequence[int], dtype: Any) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize
        rt = cudart()
        self.ptr = int(cuda_call(rt.cudaHostAlloc(max(self.nbytes, 1), rt.cudaHostAllocPortable),
                                 f'cudaHostAlloc({self.nbytes} bytes)'))
        ctypes.memset(self.ptr, 0, self.nbytes)
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array: np.ndarray | None = np.frombuffer(raw, dtype=self.dtype).reshape(self.shape)

    @property
    def view(self) -> np.ndarray:
        """Return the numpy view of the pinned memory (raises once freed)."""
        if self.array is None:
            raise RunnerError('pinned buffer used after free()')
        return self.array

    def free(self) -> None:
        if self.ptr:
            self.array = None
            ptr, self.ptr = self.ptr, 0
            cuda_call(cudart().cudaFreeHost(ptr), 'cudaFreeHost')

    def __enter__(self) -> 'PinnedBuffer':
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


class DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``) at integer address ``ptr``."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(cuda_call(cudart().cudaMalloc(max(self.nbytes, 1)), f'cudaMalloc({self.nbytes} bytes)'))

    def upload(self, src: PinnedBuffer, stream: 'Stream', nbytes: int | None = None) -> None:
        """Enqueue a host-to-device copy of all of ``src`` (or its first ``nbytes``) on ``stream``."""
        _same_size('upload', src.nbytes, self.nbytes)
        memcpy_htod_async(self.ptr, src.ptr, _prefix('upload', nbytes, self.nbytes), stream)

    def download(self, dst: PinnedBuffer, stream: 'Stream', nbytes: int | None = None) -> None:
        """Enqueue a device-to-host copy into all of ``dst`` (or its first ``nbytes``) on ``stream``."""
        _same_size('download', dst.nbytes, self.nbytes)
        memcpy_dtoh_async(dst.ptr, self.ptr, _prefix('download', nbytes, self.nbytes), stream)

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            cuda_call(cudart().cudaFree(ptr), 'cudaFree')

    def __enter__(self) -> 'DeviceBuffer':
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


def _same_size(what: str, host: int, device: int) -> None:
    if host != device:
        raise RunnerError(f'{what}: host buffer has {host} bytes, device buffer {device}')


def _prefix(what: str, nbytes: int | None, size: int) -> int:
    """Bytes to copy: all ``size`` by default, else the first ``nbytes`` (the leading rows of a batch)."""
    if nbytes is None:
        return size
    if not 0 < nbytes <= size:
        raise RunnerError(f'{what}: {nbytes} bytes asked of a {size}-byte buffer')
    return nbytes


# -- streams and copies ------------------------------------------------------------------------
class Stream:
    """A non-blocking CUDA stream; ``ptr`` is its handle as an int (for TensorRT and torch)."""

    def __init__(self) -> None:
        rt = cudart()
        self.handle: Any = cuda_call(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking),
                                     'cudaStreamCreateWithFlags(cudaStreamNonBlocking)')
        self.ptr = int(self.handle)

    def synchronize(self) -> None:
        cuda_call(cudart().cudaStreamSynchronize(self.handle), 'cudaStreamSynchronize')

    def destroy(self) -> None:
        if self.handle is not None:
            handle, self.handle, self.ptr = self.handle, None, 0
            cuda_call(cudart().cudaStreamDestroy(handle), 'cudaStreamDestroy')

    def __enter__(self) -> 'Stream':
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def memcpy_htod_async(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    """Enqueue ``nbytes`` from host address ``src`` (pinned) to device address ``dst``."""
    rt = cudart()
    cuda_call(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle),
              'cudaMemcpyAsync(host to device)')


def memcpy_dtoh_async(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    """Enqueue ``nbytes`` from device address ``src`` to host address ``dst`` (pinned)."""
    rt = cudart()
    cuda_call(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle),
              'cudaMemcpyAsync(device to host)')


# -- graphs ------------------------------------------------------------------------------------
class CudaGraph:
    """An executable CUDA graph captured from the work ``record`` enqueues on a stream.

    Capture uses thread-local mode, so other threads (ROS executors) may keep calling CUDA.
    ``launch`` replays the whole recorded sequence as one submission.
    """

    def __init__(self, graph: Any, graph_exec: Any) -> None:
        self._graph = graph
        self._exec = graph_exec

    @classmethod
    def capture(cls, stream: Stream, record: Callable[[], None]) -> 'CudaGraph':
        """Run ``record()`` under stream capture on ``stream`` and instantiate the result.

        If ``record`` raises, the capture is ended and discarded and the exception propagates.
        """
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_call(rt.cudaStreamBeginCapture(stream.handle, mode), 'cudaStreamBeginCapture')
        try:
            record()
        except BaseException:
            err, graph = rt.cudaStreamEndCapture(stream.handle)
            if int(err) == 0 and graph is not None:
                rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()  # leave no capture error behind for the next caller to trip on
            raise
        try:
            graph = cuda_call(rt.cudaStreamEndCapture(stream.handle), 'cudaStreamEndCapture')
        except Pi0Error:
            rt.cudaGetLastError()
            raise
        try:
            graph_exec = cuda_call(rt.cudaGraphInstantiate(graph, 0), 'cudaGraphInstantiate')
        except Pi0Error:
            rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()
            raise
        return cls(graph, graph_exec)

    def launch(self, stream: Stream) -> None:
        if self._exec is None:
            raise RunnerError('CUDA graph launched after destroy()')
        cuda_call(cudart().cudaGraphLaunch(self._exec, stream.handle), 'cudaGraphLaunch')

    def destroy(self) -> None:
        rt = cudart()
        if self._exec is not None:
            graph_exec, self._exec = self._exec, None
            cuda_call(rt.cudaGraphExecDestroy(graph_exec), 'cudaGraphExecDestroy')
        if self._graph is not None:
            graph, self._graph = self._graph, None
            cuda_call(rt.cudaGraphDestroy(graph), 'cudaGraphDestroy')
