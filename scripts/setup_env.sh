#!/usr/bin/env bash
# Build (or refresh) the environment the demo and the tests run in, on a machine without ROS
# or a GPU: a Python 3.11 venv with the ROS 2 Jazzy core from PyPI wheels and a real `ros2`
# command line (the shared ros2cli toolbox beside this repo), PyTorch (CPU), ONNX Runtime,
# TensorRT-RTX, rosbags, ...; then installs this package the way colcon would.
#
# Usage: source scripts/setup_env.sh      (or: bash scripts/setup_env.sh)
#   PI0_TRT_ROS_ENV   where the environment lives (default ~/.cache/pi0_trt_ros/env; outside
#                     the repo, because installing the package copies the source tree)
#   PI0_SHARED        the shared folder (default: ../shared beside the repo)
# Idempotent: a stamp of the requirement files skips pip when nothing changed (~10 s then).
_pi0_setup() {
  set -euo pipefail
  local root shared env_dir toolbox stamp want
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  shared=${PI0_SHARED:-$root/../shared}
  env_dir=${PI0_TRT_ROS_ENV:-$HOME/.cache/pi0_trt_ros/env}
  toolbox=$shared/tools/ros2cli/setup.sh
  if [ ! -f "$toolbox" ]; then
    echo "setup_env: $toolbox not found; set PI0_SHARED to the folder holding tools/ros2cli" >&2
    return 1
  fi
  ROS2TOOLS=$env_dir bash "$toolbox"
  # shellcheck disable=SC1091
  source "$env_dir/env.sh"
  local pip=(python -m pip --disable-pip-version-check)
  stamp=$env_dir/venv/.pi0-stamp
  want=$(cat "$root/requirements-dev.txt" "$root/constraints.txt" "$toolbox" | sha256sum | cut -c1-16)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[pi0_trt_ros] installing torch (CPU) and requirements-dev.txt (pinned by constraints.txt)"
    "${pip[@]}" install -q torch==2.13.0 -c "$root/constraints.txt"
    "${pip[@]}" install -q -r "$root/requirements-dev.txt" -c "$root/constraints.txt" \
      -c "$shared/tools/ros2cli/constraints.txt"
    echo "$want" > "$stamp"
  fi
  ament-pip-install "$root" >/dev/null
  echo "[pi0_trt_ros] environment ready: $env_dir (source $env_dir/env.sh)"
}
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  _pi0_setup
else
  # sourced: keep the caller's shell options
  _pi0_opts=$(set +o); _pi0_setup; _pi0_rc=$?; eval "$_pi0_opts"; unset _pi0_opts
  [ $_pi0_rc = 0 ] || return $_pi0_rc
  source "${PI0_TRT_ROS_ENV:-$HOME/.cache/pi0_trt_ros/env}/env.sh"
fi
