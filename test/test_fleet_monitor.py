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

"""The fleet's diagnostics figures and device handling, from given values (no DDS, no GPU needed).

Throughput is computed from two batcher snapshots and the time between them; the robots' figures
from real deadline monitors fed known cycles; the GPU status from NVML when this machine has it,
else it must say why and carry no figures.
"""

import os

import pytest

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.node.batcher import BatchStats
from pi0_trt_ros.node.chunk_monitor import ChunkMonitor
from pi0_trt_ros.node.deadline import DeadlineMonitor
from pi0_trt_ros.node.fleet_monitor import batcher_status, GpuMonitor, robot_key_values, Throughput
from pi0_trt_ros.node.fleet_params import device_options, effective_device, physical_gpu
from pi0_trt_ros.testing.dds import domain_id

DOMAIN_ID = domain_id(55)  # no DDS traffic here, but the module keeps a domain of its own
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
MS = 1_000_000  # ns


def test_throughput_over_the_last_period_and_since_start() -> None:
    meter = Throughput(start_ns=0)
    first = dict(meter.update(2_000 * MS, BatchStats({1: 4, 2: 3}, {1: 40 * MS, 2: 60 * MS}, 10, 100 * MS, 0)))
    assert first['observations'] == '10' and first['observations_per_s'] == '5.00'
    assert first['runner_busy_fraction'] == '0.050' and first['batches'] == '7'
    assert first['batch_size.1'] == '4' and first['batch_size.1.mean_ms'] == '10.000'
    assert first['batch_size.2'] == '3' and first['batch_size.2.mean_ms'] == '20.000'
    second = dict(meter.update(3_000 * MS, BatchStats({1: 4, 2: 8}, {1: 40 * MS, 2: 160 * MS}, 20, 600 * MS, 1)))
    assert second['observations_per_s'] == '10.00'  # 10 more in the last second
    assert second['observations_per_s_since_start'] == '6.67'  # 20 in 3 s
    assert second['runner_busy_fraction'] == '0.500' and second['failed_batches'] == '1'


def test_robot_figures_come_from_its_deadline_monitor() -> None:
    every_set = DeadlineMonitor(20.0, window=10)
    for compute_ms in (10, 10, 30):
        every_set.record(compute_ms * MS, 5 * MS, compute_ms * MS)
    figures = dict(robot_key_values('arm_a', every_set))
    assert figures['robot.arm_a.cycles'] == '3' and figures['robot.arm_a.deadline_misses'] == '1'
    assert figures['robot.arm_a.compute_ms_p50'] == '10.000' and float(figures['robot.arm_a.compute_ms_p99']) > 29
    chunk = ChunkMonitor(20.0, window=10)
    chunk.record_chunk(40 * MS, -1.0 * MS, 30 * MS, 10 * MS)  # late by 1 ms
    chunk.record_missed_ticks(2)
    figures = dict(robot_key_values('arm_b', chunk))
    assert figures['robot.arm_b.chunks'] == '1' and figures['robot.arm_b.chunks_late'] == '1'
    assert figures['robot.arm_b.ticks_missed'] == '2' and figures['robot.arm_b.chunk_latency_ms_p50'] == '40.000'


def test_batcher_status_warns_while_batches_fail() -> None:
    meter = Throughput(start_ns=0)
    ok = batcher_status('/pi0_fleet', 'hw', ['/a', '/b'], (1, 2), 5.0,
                        meter.update(1_000 * MS, BatchStats({2: 1}, {2: 10 * MS}, 2, 10 * MS, 0)),
                        [DeadlineMonitor(20.0), DeadlineMonitor(20.0)])
    assert ok.level == b'\x00' and ok.name == '/pi0_fleet: batcher' and ok.message == '2 robots, 2.00 observations/s'
    keys = [kv.key for kv in ok.values]
    assert keys[:3] == ['robots', 'batch_sizes', 'max_wait_ms']
    assert 'robot.a.cycles' in keys and 'robot.b.cycles' in keys
    failing = batcher_status('/pi0_fleet', 'hw', ['/a'], (1,), 0.0,
                             meter.update(2_000 * MS, BatchStats({2: 1}, {2: 10 * MS}, 2, 10 * MS, 3)),
                             [DeadlineMonitor(20.0)])
    assert failing.level == b'\x01' and '3 batches failed' in failing.message


def test_gpu_status_says_why_there_are_no_figures() -> None:
    cpu = GpuMonitor('cpu', None)
    status = cpu.status('/pi0_fleet', 'hw')
    assert status.message == 'runner on cpu: no GPU to report' and status.level == b'\x00'
    assert {kv.key for kv in status.values} == {'device', 'nvml'}
    gpu = GpuMonitor('cuda:0', 0)
    try:
        status = gpu.status('/pi0_fleet', 'hw')
    finally:
        gpu.close()
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert status.message == 'NVML not available: pynvml is not installed (pip install nvidia-ml-py)'
        assert 'utilization_percent' not in {kv.key for kv in status.values}
    else:  # NVML present: figures, or (no driver, no GPU 0) the reason
        values = {kv.key: kv.value for kv in status.values}
        assert 'utilization_percent' in values or status.message.startswith('NVML not available for cuda:0')


def test_device_becomes_each_backends_own_option(monkeypatch: pytest.MonkeyPatch) -> None:
    assert device_options('torch', 'cuda:1', {'dtype': 'bf16', 'device': 'cuda'}) == {'dtype': 'bf16',
                                                                                      'device': 'cuda:1'}
    assert device_options('tensorrt', 'cuda:3', {}) == {'device': 3}
    assert device_options('onnxruntime', 'cpu', {'device': 'cuda'}) == {'device': 'cpu'}
    assert device_options('onnxruntime', 'cuda:0', {}) == {'device': 'cuda'}
    assert device_options('tensorrt', '', {'device': 2}) == {'device': 2}
    with pytest.raises(Pi0Error, match='CUDA_VISIBLE_DEVICES=1 and device:=cuda:0'):
        device_options('onnxruntime', 'cuda:1', {})
    with pytest.raises(Pi0Error, match='runs on a GPU'):
        device_options('tensorrt_rtx', 'cpu', {})
    assert effective_device('torch', {'device': 'cuda'}) == 'cuda:0'
    assert effective_device('tensorrt', {'device': 2}) == 'cuda:2'
    assert effective_device('onnxruntime', {}) == 'cpu'
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    assert physical_gpu('cuda:1') == 1 and physical_gpu('cpu') is None
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3,5')
    assert physical_gpu('cuda:1') == 5 and physical_gpu('cuda:2') is None
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', 'GPU-8d1b2c3e')
    assert physical_gpu('cuda') == 'GPU-8d1b2c3e'
