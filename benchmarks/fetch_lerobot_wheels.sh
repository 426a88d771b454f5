#!/usr/bin/env bash
# Download the wheels LeRobot's PI0Policy needs on a GPU machine that already has torch (Python 3.12,
# manylinux x86_64) into DIR (default .lerobot_whl, ignored by git; about 16 MB), for
# benchmarks/lerobot_baseline.py. On the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/lerobot_site DIR/*.whl
#   PYTHONPATH=/tmp/lerobot_site python3 benchmarks/lerobot_baseline.py
set -euo pipefail
dir=${1:-.lerobot_whl}
mkdir -p "$dir"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$dir" \
  lerobot==0.6.1 transformers==5.5.4 tokenizers==0.22.2 draccus==0.11.6 termcolor==3.3.0 gymnasium==1.4.0 \
  farama-notifications==0.0.6 mergedeep==1.3.4 pyyaml-include==1.4.1 toml==0.10.2
ls "$dir"
