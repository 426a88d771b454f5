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

"""ament_python package definition; also installs with plain pip (see README)."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'pi0_trt_ros'

# Heavy or ROS-provided parts are extras, so that a ROS 2 machine (rclpy from /opt/ros) or a
# TensorRT-only robot computer (no torch) takes only what it needs. Exact pins: constraints.txt.
extras = {
    # ROS 2 Jazzy core from PyPI, for machines without /opt/ros/jazzy.
    'ros': [
        'ros-jazzy-rclpy[fastrtps]',
        'ros-jazzy-std-msgs',
        'ros-jazzy-sensor-msgs',
        'ros-jazzy-trajectory-msgs',
        'ros-jazzy-diagnostic-msgs',
        'ros-jazzy-builtin-interfaces',
        'ros-jazzy-ament-index-python',
    ],
    # PyTorch model, checkpoint loading and ONNX export; Triton for the torch backend's fast path.
    'torch': ['torch>=2.9', 'safetensors', 'onnx', 'onnxscript', 'triton>=3.6'],
    'onnxruntime': ['onnxruntime'],
    # TensorRT for datacenter/Jetson GPUs comes from NVIDIA's index or JetPack; see README.
    'tensorrt': ['cuda-python'],
    'tensorrt_rtx': ['tensorrt-rtx-cu13-libs', 'tensorrt-rtx-cu13-bindings', 'cuda-python'],
    'tokenizer': ['tokenizers', 'sentencepiece'],
    'replay': ['rosbags', 'matplotlib'],
    'test': ['pytest', 'hypothesis'],
}
extras['dev'] = sorted({req for name, reqs in extras.items() if name != 'tensorrt' for req in reqs})

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={package_name: ['demo_policy/*.json', 'demo_policy/*.safetensors']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
    ],
    python_requires='>=3.10',
    install_requires=['setuptools', 'numpy', 'opencv-python-headless', 'pyyaml'],
    extras_require=extras,
    zip_safe=False,
    maintainer='pi0_trt_ros maintainers',
    maintainer_email='maintainers@pi0-trt-ros.dev',
    description='Pi0 VLA policy as a real-time ROS 2 controller through TensorRT',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'control_node = pi0_trt_ros.node.control_node:main',
            'fleet_node = pi0_trt_ros.node.fleet_node:main',
            'pi0-trt = pi0_trt_ros.cli:main',
        ],
    },
)
