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

"""DDS domain slots: separate processes claim separate slots, children inherit, freed slots are reused.

Each claim runs in a process of its own (flock is per process here, as between two suites), on a
lock directory of the test's own, so the suite's own slot (held by this pytest process) is untouched.
"""

import os
from pathlib import Path
import subprocess
import sys

import pytest

from pi0_trt_ros.testing import dds

REPO = Path(__file__).resolve().parents[1]
FAST_DDS_MAX_DOMAIN = 232  # Linux: UDP ports 7400 + 250 x domain must stay below 65536

# Claims a slot (or, with the slot variable set, inherits it), prints it and the domain of base 40,
# then holds it until its stdin closes.
HOLDER = """
import sys
from pathlib import Path
from pi0_trt_ros.testing import dds
slot = dds.process_tree_slot(Path(sys.argv[1]))
print(slot, dds.domain_id(40), flush=True)
sys.stdin.readline()
"""
# Claims a slot, then starts HOLDER as its child, which must inherit that slot.
PARENT = """
import subprocess, sys
from pathlib import Path
from pi0_trt_ros.testing import dds
print(dds.process_tree_slot(Path(sys.argv[1])), flush=True)
subprocess.run([sys.executable, '-c', sys.argv[2], sys.argv[1]], check=True)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != dds.SLOT_ENV}  # not this suite's own slot
    return {**env, **extra}


class Holder:
    """A process that claims (or inherits) a slot and holds it until ``release``."""

    def __init__(self, lock_dir: Path, script: str = HOLDER, args: tuple[str, ...] = (), **env: str) -> None:
        self.proc = subprocess.Popen([sys.executable, '-c', script, str(lock_dir), *args], cwd=REPO, env=_env(**env),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def line(self) -> list[int]:
        text = self.proc.stdout.readline()
        assert text, self.proc.stderr.read()
        return [int(word) for word in text.split()]

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait() == 0, self.proc.stderr.read()


def test_separate_processes_claim_different_slots_and_a_full_house_refuses_to_share(tmp_path: Path) -> None:
    holders = [Holder(tmp_path) for _ in range(dds.SLOT_COUNT)]
    try:
        lines = [h.line() for h in holders]
        assert sorted(slot for slot, _ in lines) == list(range(dds.SLOT_COUNT))
        assert all(domain == 40 + slot * dds.SLOT_STRIDE for slot, domain in lines)
        extra = subprocess.run([sys.executable, '-c', 'import sys; from pathlib import Path; '
                                'from pi0_trt_ros.testing import dds; dds.claim_slot(Path(sys.argv[1]), wait=False)',
                                str(tmp_path)], cwd=REPO, env=_env(), capture_output=True, text=True)
        assert extra.returncode != 0
        assert f'all {dds.SLOT_COUNT} DDS domain slots are held by other runs' in extra.stderr
    finally:
        for h in holders:
            h.release()


def test_a_child_process_inherits_its_parents_slot_instead_of_claiming_one(tmp_path: Path) -> None:
    first = Holder(tmp_path)
    assert first.line() == [0, 40]
    parent = Holder(tmp_path, PARENT, (HOLDER,))
    try:
        assert parent.line() == [1]
        assert parent.line() == [1, 40 + dds.SLOT_STRIDE]  # the child, still running, shares slot 1
        third = Holder(tmp_path)
        assert third.line() == [2, 40 + 2 * dds.SLOT_STRIDE]  # slot 2 was free: the child claimed nothing
        third.release()
    finally:
        first.release()
        parent.release()


def test_a_slot_is_freed_when_its_holder_dies_and_is_claimed_again(tmp_path: Path) -> None:
    first = Holder(tmp_path)
    assert first.line() == [0, 40]  # claimed before the second one starts
    second = Holder(tmp_path)
    try:
        assert second.line() == [1, 40 + dds.SLOT_STRIDE]
        first.proc.kill()  # no clean exit: the kernel drops the flock with the process
        first.proc.wait()
        again = Holder(tmp_path)
        assert again.line() == [0, 40]
        again.release()
    finally:
        second.release()


def test_every_slot_maps_the_base_ids_to_valid_disjoint_domains() -> None:
    ranges = [range(dds.BASE_IDS.start + k * dds.SLOT_STRIDE, dds.BASE_IDS.stop + k * dds.SLOT_STRIDE)
              for k in range(dds.SLOT_COUNT)]
    assert ranges[-1].stop - 1 <= FAST_DDS_MAX_DOMAIN
    assert all(a.stop <= b.start for a, b in zip(ranges, ranges[1:]))


def test_bad_base_ids_and_slot_values_are_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    for base in (dds.BASE_IDS.start - 1, dds.BASE_IDS.stop):
        with pytest.raises(ValueError, match='pick a free one in that range'):
            dds.domain_id(base)
    monkeypatch.setenv(dds.SLOT_ENV, str(dds.SLOT_COUNT))
    with pytest.raises(ValueError, match='is not a DDS domain slot'):
        dds.domain_id(40)


def test_nodes_left_on_a_domain_are_found_and_an_empty_domain_has_none() -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    domain = dds.domain_id(56)  # this test's own DDS domain
    assert dds.nodes_on_domain(domain, wait_s=1.0) == []
    context = Context()
    rclpy.init(context=context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
    try:
        left = rclpy.create_node('pi0_control', namespace='robot_3', context=context)  # a node a killed run left
        assert dds.nodes_on_domain(domain, wait_s=30.0) == ['/robot_3/pi0_control']
        left.destroy_node()
    finally:
        context.try_shutdown()
