#!/usr/bin/env bash
# Download the ROS 2 Jazzy wheels (rclpy with Fast DDS and the message packages the node uses),
# rosbags and OpenCV for a GPU machine with Python 3.12 and no ROS install (manylinux x86_64)
# into DIR (default .whl, ignored by git), for benchmarks/node_gpu.py and benchmarks/fleet_gpu.py.
# The versions are the toolbox's pins (../shared/tools/ros2cli/constraints.txt) and this repo's
# (constraints.txt); a name neither pins, its newest wheel. On the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --prefix /tmp/ros DIR/*.whl
#   python3 benchmarks/node_gpu.py --ros-prefix /tmp/ros ...
# (a Debian-built Python puts the files under /tmp/ros/local/: --ros-prefix finds them there too)
# WITH_OPENCV=1 adds OpenCV (61 MB) for a machine without cv2; the H200 machines here have it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${PI0_SHARED:-$root/../shared}
dir=${1:-$root/.whl}
mkdir -p "$dir"
pin() {  # the pinned requirement of each name given, from the constraint files
  local name
  for name in "$@"; do
    grep -hi "^${name}==" "$shared/tools/ros2cli/constraints.txt" "$root/constraints.txt" | head -1 \
      | grep . || echo "$name"
  done
}
# What rclpy loads at run time and the messages the node, the recorder and the player import.
ros=$(grep -hoE '^ros-[a-z0-9-]+==[^ ]+' "$shared/tools/ros2cli/constraints.txt" \
  | grep -vE '^ros-(jazzy-)?ament-(cmake-|flake8|pep257|lint)|^ros-ament-(cppcheck|cpplint|uncrustify|xmllint|copyright)')
extra=(rosbags apsw backports.zstd lz4 ruamel.yaml typing-extensions)  # rosbags and what it imports
[ "${WITH_OPENCV:-0}" = 0 ] || extra+=(opencv-python-headless)
# shellcheck disable=SC2046
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$dir" $ros $(pin "${extra[@]}")
# rosidl_runtime_py (the bag player's and recorder's message lookup) is not on PyPI: the toolbox
# vendors its pure-Python source; a wheel of it, built from a scratch copy (setup.py builds in-tree).
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$shared/tools/ros2cli/src/rosidl_runtime_py" "$stage/"
python3 -m pip wheel -q --no-deps -w "$dir" "$stage/rosidl_runtime_py"
du -sh "$dir"
