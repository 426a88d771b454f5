#!/usr/bin/env bash
# GPU checks and the full-size torch benchmarks, for a CUDA machine with PyTorch and Triton (e.g. an H200):
#   bash benchmarks/gpu_torch.sh [OUT_DIR]
# 1. the GPU tests (cuda-python buffers; torch CUDA-graph parity, fast path included; allocation checks);
# 2. benchmarks/fast_path.py: numerics of the fast path (with and without the e4m3 prefix) and of the
#    plain bf16 model against the fp32 model, and the per-stage device-time breakdown (vision, prefix,
#    one denoise step) of both;
# 3. benchmarks/gemm_floor.py: the GEMM-only floor of the same shapes (bf16, and e4m3 for vision/prefix);
# 4. `pi0-trt bench --random-full-size` end to end (staged host input -> host actions) for the fast path
#    (its expert GEMMs 'skinny', the default, also without its L2 prefetch, and 'mixed') and the
#    previous paths, each row labelled with the GPU it ran on, and the fast path at batch 1, 2, 4, 8;
# 5. with LEROBOT_SITE set (a folder holding LeRobot, see benchmarks/fetch_lerobot_wheels.sh), LeRobot's own
#    PI0Policy in bf16 and fp32 (benchmarks/lerobot_baseline.py), in the same run.
# CASES overrides the bench rows ("dtype mode [flag...]" separated by ';'), ITERS the timed calls per row,
# SWEEP=1 adds the attention tile sweep. Figures land in OUT_DIR.
set -uo pipefail
out=${1:-${OUT:-benchmarks/out}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton",
            triton.__version__, torch.cuda.get_device_name())' | tee -a "$out/gpu.txt"
python3 -m pytest -q -s -p no:cacheprovider test/test_cuda_buffers.py test/test_torch_cuda.py 2>&1 \
  | grep -v 'Warning:\|_warn_once' | tee "$out/gpu_tests.txt"
[ "${SWEEP:-0}" = 1 ] && python3 benchmarks/attention_sweep.py 2>&1 | tee "$out/attention_sweep.txt"
python3 benchmarks/fast_path.py --iters 200 --fp8 --json "$out/fast_path.json" 2>&1 | grep '|' | tee "$out/fast_path.txt"
python3 benchmarks/gemm_floor.py --fp8 2>&1 | grep '|' | tee "$out/gemm_floor.txt"
bench() {  # one bench row: dtype mode [flag...]
  local dtype=$1 mode=$2 name; shift 2
  name=bench_${dtype}_${mode}; for flag in "$@"; do name+=_${flag#--}; done
  python3 -m pi0_trt_ros.cli bench --random-full-size --backend torch --dtype "$dtype" --mode "$mode" "$@" \
    --iters "${ITERS:-1000}" --warmup 50 --json "$out/$name.json" 2>&1 \
    | grep -v ' INFO \|^  triton\|AUTOTUNE\|Warning:\|_warn_once' | tee -a "$out/bench.txt"
}
IFS=';' read -ra cases <<< "${CASES:-bf16 cuda_graph --fast;bf16 cuda_graph --fast --expert-gemm mixed;bf16 cuda_graph --fast --prefix-fp8;fp16 cuda_graph --fast;bf16 cuda_graph --compile;bf16 cuda_graph}"
for case in "${cases[@]}"; do
  # shellcheck disable=SC2086
  bench $case
done
if [ -z "${CASES:-}" ]; then  # what the skinny GEMMs' L2 prefetch is worth: the same row without it
  echo '| the next row: PI0_TRT_ROS_PREFETCH=0 |' | tee -a "$out/bench.txt"
  PI0_TRT_ROS_PREFETCH=0 bench bf16 cuda_graph --fast --expert-gemm skinny
  ITERS=100 bench bf16 cuda_graph --fast --batch 1,2,4,8  # batched serving: latency and observations/s per size
fi
if [ -n "${LEROBOT_SITE:-}" ]; then
  PYTHONPATH=$LEROBOT_SITE:$PYTHONPATH python3 benchmarks/lerobot_baseline.py --json "$out/lerobot.json" 2>&1 \
    | grep '^| LeRobot' | tee "$out/lerobot.txt"
fi
echo; echo "end to end, staged host input -> host actions (LeRobot: predict_action_chunk, same inputs):"
cat "$out/bench.txt" "$out/lerobot.txt" 2>/dev/null | grep '^| pi0\|^| LeRobot\|^| the next row'
