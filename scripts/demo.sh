#!/usr/bin/env bash
# The main job: set up the environment, then run `pi0-trt demo` (the trained tiny Pi0 exported to ONNX,
# served by the real control node under `ros2 launch`, fed a synthetic 3-camera bag over DDS on
# loopback, ending with a report). Extra arguments go to `pi0-trt demo` (e.g. --duration 10).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
source "$root/scripts/setup_env.sh"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
exec pi0-trt demo --out "$root/.runs/demo" "$@"
