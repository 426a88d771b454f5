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

"""The ament linters every ROS 2 Python package runs: flake8, pep257 and copyright headers."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = [str(ROOT / p) for p in ('pi0_trt_ros', 'launch', 'test', 'benchmarks', 'setup.py') if (ROOT / p).exists()]


@pytest.mark.linter
def test_flake8():
    main_with_errors = pytest.importorskip('ament_flake8.main').main_with_errors
    rc, errors = main_with_errors(argv=['--config', str(ROOT / 'setup.cfg'), *PATHS])
    assert rc == 0, f'{len(errors)} flake8 errors:\n' + '\n'.join(errors)


@pytest.mark.linter
def test_pep257():
    main = pytest.importorskip('ament_pep257.main').main
    # D213: summaries start on the docstring's first line (PEP 257 allows either; we chose one).
    assert main(argv=['--add-ignore', 'D213', *PATHS]) == 0, 'pep257 errors: see the output above'


@pytest.mark.copyright
def test_copyright():
    main = pytest.importorskip('ament_copyright.main').main
    assert main(argv=[*PATHS]) == 0, 'copyright/license header errors: see the output above'
