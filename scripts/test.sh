#!/usr/bin/env bash
# The test suite: sets up the environment (scripts/setup_env.sh), then runs pytest.
# DDS stays on loopback; each test module uses its own ROS domain, shifted by this run's domain slot
# (test/conftest.py, pi0_trt_ros/testing/dds.py), so two suites running at once on one machine stay apart.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
source "$root/scripts/setup_env.sh"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export PYTHONDONTWRITEBYTECODE=1
cd "$root"
# Triton's nanobind bindings report "leaked" objects when the interpreter exits, after pytest's
# summary line; that report says nothing about this project, so it is filtered out.
python -m pytest -q -p no:cacheprovider test "$@" 2>&1 | grep -v -e '^nanobind: ' -e '^ - leaked ' -e '^See https://nanobind' -e '^ - \.\.\. skipped remainder'
