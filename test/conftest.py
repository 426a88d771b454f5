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

"""The suite's DDS domain slot, claimed once before any test module is imported; fixtures of ROS tests.

The pytest process holds the slot's lock for the whole run and exports it, so every module's
``domain_id(base)`` and every child process (``ros2 launch``, the node, benchmark subprocesses)
use this run's domains, apart from another suite running on the same machine. The fixtures that
touch DDS (an rclpy context, the ``ros2`` command line's environment) take the domain of the
module that asks for them (its ``DOMAIN_ID``).
"""

import os
from pathlib import Path
import shutil
import subprocess
from typing import Any, Iterator

import pytest

from pi0_trt_ros.testing.dds import domain_id, process_tree_slot, SLOT_STRIDE

SUITE_DOMAIN_BASE = 40  # the domain of anything in the suite that does not name its own
REPO = Path(__file__).resolve().parents[1]
# What ``ros2 launch`` takes from the installed package (the nodes' code comes from this tree).
INSTALLED_FILES = ('launch/control.launch.py', 'launch/fleet.launch.py', 'config/control.yaml', 'config/fleet.yaml')
INSTALLED_EXECUTABLES = ('control_node', 'fleet_node')


def pytest_configure(config: pytest.Config) -> None:
    process_tree_slot()
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_DOMAIN_ID'] = str(domain_id(SUITE_DOMAIN_BASE))


def pytest_report_header(config: pytest.Config) -> str:
    slot = process_tree_slot()
    return f'DDS domain slot {slot}: domain id = base id + {slot * SLOT_STRIDE} in every module'


@pytest.fixture(scope='module')
def context(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Return an rclpy context of the test module's own, in its DDS domain (its ``DOMAIN_ID``).

    No signal handlers: Ctrl-C stays pytest's. Shut down after the module's last test.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    ctx = Context()
    rclpy.init(context=ctx, domain_id=request.module.DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
    yield ctx
    rclpy.try_shutdown(context=ctx)


@pytest.fixture(scope='session')
def installed() -> None:
    """Make sure the installed launch and config files and executables are this tree's (re-install if not)."""
    from pi0_trt_ros.testing.ros_cli import stale_install

    if stale_install(REPO, INSTALLED_FILES, INSTALLED_EXECUTABLES):
        if shutil.which('ament-pip-install') is None:
            pytest.skip('pi0_trt_ros is not installed (or stale) and ament-pip-install is not available')
        subprocess.run(['ament-pip-install', str(REPO)], check=True, capture_output=True, timeout=300)


@pytest.fixture(scope='module')
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Return the environment of the module's ``ros2`` commands (its DDS domain, a ROS_HOME of its own)."""
    from pi0_trt_ros.testing.ros_cli import ros2, ros_env

    environment = ros_env(request.module.DOMAIN_ID, tmp_path_factory.mktemp('ros') / 'ros_home', REPO)
    yield environment
    ros2(environment, 'daemon', 'stop')
