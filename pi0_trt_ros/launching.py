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

"""What the package's launch files share: the launch ends with its node, and fails when the node failed.

``ros2 launch`` (launch 3.x, Jazzy) returns non-zero only when an exception reaches its event
loop, so the exit handler raises one naming the node's exit code; the launch service logs it as
the shutdown reason, and scripts and supervisors see the failure in the exit status.
"""

from __future__ import annotations

from launch import LaunchContext
from launch.actions import Shutdown
from launch.events.process import ProcessExited


class NodeFailed(RuntimeError):
    """A node exited with a non-zero code: raised to make ``ros2 launch`` exit non-zero."""


def on_node_exit(event: ProcessExited, context: LaunchContext) -> list:
    """Shut the launch down with the node; fail it when the node failed."""
    if event.returncode != 0:
        raise NodeFailed(f'{event.process_name} exited with code {event.returncode} (see its log above); '
                         'shutting down the launch with an error')
    return [] if context.is_shutdown else [Shutdown(reason=f'{event.process_name} exited')]
