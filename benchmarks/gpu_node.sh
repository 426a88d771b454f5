#!/usr/bin/env bash
# The control node and the fleet end to end on a CUDA machine with PyTorch and Triton (e.g. an H200),
# with ROS 2 from the PyPI wheels where no ROS install is there:
#   bash benchmarks/fetch_ros_wheels.sh                # where PyPI is reachable: the cp312 wheels into .whl/
#   bash benchmarks/gpu_node.sh [OUT_DIR [PART...]]    # on the GPU machine, .whl/ copied along
# PARTs, run in the order given (default: node fleet):
#   node   benchmarks/node_gpu.py: the synthetic bag at 30 Hz into one control node (every_set, 20 ms
#          budget), once per expert GEMM path in EXPERT_GEMMS (default "skinny mixed"); the first path
#          also cold (empty Triton cache, COLD_S s of replay, default 12), each warm for NODE_S s (60);
#   fleet  benchmarks/fleet_gpu.py: R in ROBOTS (default 1,2,4,8) robots served by one fleet process
#          (max wait MAX_WAIT_MS, default 5) and by R independent nodes (FLEET_MODES), FLEET_S s each (60).
# With .whl/ present the wheels are installed into ROS_PREFIX (default /tmp/ros) and both benchmarks
# run with --ros-prefix; without it rclpy must import as it is (a ROS install, or this repo's
# environment). BACKEND_OPTIONS is the torch runner's JSON (default: cuda, bf16, the fast path); the
# node part adds each expert_gemm to it. The work directory WORK (default /tmp/gpu_node: checkpoint,
# bag, Triton cache) is kept for the next call; each part's output and JSON go to OUT_DIR, and for
# the node the warm run's log (node_<gemm>.log) and report (plots, summary: node_<gemm>_report/).
# A CPU check of this script (tiny model, seconds instead of minutes):
#   EXTRA='--tiny --device cpu' BACKEND_OPTIONS='{"device": "cpu", "dtype": "fp32", "mode": "eager"}' \
#   EXPERT_GEMMS=- NODE_S=4 COLD_S=0 ROBOTS=1,2 FLEET_S=6 bash benchmarks/gpu_node.sh /tmp/gpu_node_out
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-${OUT:-$root/benchmarks/out}}
shift $(($# > 0 ? 1 : 0))
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(node fleet)
work=${WORK:-/tmp/gpu_node}
options=${BACKEND_OPTIONS:-'{"device": "cuda", "dtype": "bf16", "fast": true}'}
mkdir -p "$out" "$work"
out=$(cd "$out" && pwd)
cd "$root" || exit 1
export PYTHONUNBUFFERED=1
ros=()
if compgen -G "$root/.whl/*.whl" > /dev/null; then
  prefix=${ROS_PREFIX:-/tmp/ros}
  python3 -m pip install -q --no-index --no-deps --prefix "$prefix" "$root"/.whl/*.whl || exit 1
  ros=(--ros-prefix "$prefix")
fi
read -ra extra <<< "${EXTRA:-}"
with_gemm() {  # BACKEND_OPTIONS with expert_gemm set to $1 ('-': as it is)
  python3 - "$options" "$1" <<'PY'
import json, sys
options = json.loads(sys.argv[1])
if sys.argv[2] != '-':
    options['expert_gemm'] = sys.argv[2]
print(json.dumps(options))
PY
}
status=0
for part in "${parts[@]}"; do
  case $part in
    node)
      cold=${COLD_S:-12}
      for gemm in ${EXPERT_GEMMS:-skinny mixed}; do
        python3 benchmarks/node_gpu.py --out "$work/node" --seconds "${NODE_S:-60}" --cold-seconds "$cold" \
          --backend-options "$(with_gemm "$gemm")" "${ros[@]}" "${extra[@]}" 2>&1 | tee "$out/node_$gemm.txt"
        rc=${PIPESTATUS[0]}
        status=$((status | rc))
        cp "$work/node/node_warm.log" "$out/node_$gemm.log" 2>/dev/null
        if [ "$rc" = 0 ]; then  # a failed run leaves the last good run's files in the work directory
          cp "$work/node/node_gpu.json" "$out/node_$gemm.json"
          rm -rf "$out/node_${gemm}_report" && cp -r "$work/node/report" "$out/node_${gemm}_report"
        fi
        cold=0  # the Triton cache is filled now
      done ;;
    fleet)
      python3 benchmarks/fleet_gpu.py --out "$work/fleet" --robots "${ROBOTS:-1,2,4,8}" --seconds "${FLEET_S:-60}" \
        --max-wait-ms "${MAX_WAIT_MS:-5}" --modes "${FLEET_MODES:-fleet,independent}" --backend-options "$options" \
        "${ros[@]}" "${extra[@]}" 2>&1 | tee "$out/fleet.txt"
      status=$((status | PIPESTATUS[0]))
      cp "$work/fleet/fleet_gpu.json" "$out/fleet_gpu.json" 2>/dev/null ;;
    *)
      echo "gpu_node.sh: unknown part '$part' (node, fleet)" >&2
      exit 2 ;;
  esac
done
exit "$status"
