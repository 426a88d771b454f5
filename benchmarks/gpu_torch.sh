#!/usr/bin/env bash
# GPU checks and the full-size torch benchmark, for a CUDA machine with PyTorch (e.g. an H100):
#   bash benchmarks/gpu_torch.sh [OUT_DIR]
# Runs the GPU tests (cuda-python buffers, torch CUDA-graph parity and allocation checks), then
# `pi0-trt bench --random-full-size` in bf16/fp16, CUDA graph (torch.compile'd and not) and eager. Figures land in OUT_DIR.
set -uo pipefail
out=${1:-${OUT:-benchmarks/out}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' | tee -a "$out/gpu.txt"
python3 -m pytest -q -s -p no:cacheprovider test/test_cuda_buffers.py test/test_torch_cuda.py 2>&1 | tee "$out/gpu_tests.txt"
for case in "bf16 cuda_graph --compile" "fp16 cuda_graph --compile" "bf16 cuda_graph" "bf16 eager"; do
  set -- $case
  python3 -m pi0_trt_ros.cli bench --random-full-size --backend torch --dtype "$1" --mode "$2" ${3:-} \
    --iters "${ITERS:-100}" --warmup 10 --json "$out/bench_$1_$2${3:+_compiled}.json" 2>&1 \
    | grep -v ' INFO \|^  triton\|AUTOTUNE' | tee -a "$out/bench.txt"
done
