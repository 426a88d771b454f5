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

"""`pi0-trt`: export, build, infer, bench, make-bag, replay and demo from the command line."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
import sys
from typing import Any, Sequence

import numpy as np

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.runners.registry import (BACKENDS, DEFAULT_EXPERT_GEMM, describe_backends, EXPORT_BACKENDS,
                                          TORCH_EXPERT_GEMMS)

LOG = logging.getLogger('pi0-trt')


# -- infer ---------------------------------------------------------------------------------------
def load_observation(obs_path: Path, io: Any, instruction: str | None, tokenizer: str | None,
                     ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Read OBS.npz: image.0..N-1 uint8 HxWx3 RGB, state float32, tokens+token_mask or an instruction."""
    from pi0_trt_ros.errors import RunnerError

    obs = np.load(obs_path)
    missing = [f'image.{i}' for i in range(io.num_cameras) if f'image.{i}' not in obs]
    if missing or 'state' not in obs:
        raise RunnerError(f'{obs_path}: missing {missing + ([] if "state" in obs else ["state"])}; '
                          f'the checkpoint has {io.num_cameras} cameras ({", ".join(io.camera_keys)})')
    images = [np.ascontiguousarray(obs[f'image.{i}']) for i in range(io.num_cameras)]
    state = np.asarray(obs['state'], dtype=np.float32).reshape(-1)
    if instruction is not None:
        if tokenizer is None:
            raise RunnerError('--instruction needs --tokenizer PATH (tokenizer.json / tokenizer.model)')
        from pi0_trt_ros.tokenizer import Pi0Tokenizer

        tokens, mask = Pi0Tokenizer.from_path(tokenizer, io.token_len).encode(instruction)
    elif 'tokens' in obs and 'token_mask' in obs:
        tokens = np.asarray(obs['tokens'], dtype=np.int64).reshape(-1)
        mask = np.asarray(obs['token_mask'], dtype=bool).reshape(-1)
    else:
        raise RunnerError(f'{obs_path} has no tokens/token_mask: pass --instruction TEXT --tokenizer PATH')
    return images, state, tokens, mask


def runner_from_args(args: argparse.Namespace) -> Any:
    from pi0_trt_ros.runners import make_runner

    batch_sizes = getattr(args, 'batch', None) or (1,)
    if args.backend == 'torch':
        options = {'device': args.device or _default_torch_device(), 'dtype': args.dtype or 'fp32',
                   'mode': getattr(args, 'mode', 'cuda_graph'), 'compiled': getattr(args, 'compile', False),
                   'fast': getattr(args, 'fast', False),
                   'expert_gemm': getattr(args, 'expert_gemm', DEFAULT_EXPERT_GEMM),
                   'prefix_fp8': getattr(args, 'prefix_fp8', False)}
        return make_runner('torch', checkpoint=args.checkpoint, arch=args.arch, batch_sizes=batch_sizes, **options)
    if args.engine_dir is None:
        raise Pi0Error(f'--backend {args.backend} needs --engine-dir (create it with `pi0-trt export`)')
    options = {'device': args.device} if args.backend == 'onnxruntime' and args.device else {}
    return make_runner(args.backend, engine_dir=args.engine_dir, batch_sizes=batch_sizes, **options)


def _default_torch_device() -> str:
    import torch

    return 'cuda' if torch.cuda.is_available() else 'cpu'


def cmd_infer(args: argparse.Namespace) -> int:
    runner = runner_from_args(args)
    images, state, tokens, mask = load_observation(args.obs, runner.io, args.instruction, args.tokenizer)
    if args.noise is not None:
        noise = np.asarray(np.load(args.noise)['noise'], dtype=np.float32)
    else:
        noise = np.random.default_rng(args.seed).standard_normal(
            (runner.io.chunk_size, runner.io.max_action_dim), dtype=np.float32)
    noise = noise.reshape(runner.io.chunk_size, runner.io.max_action_dim)
    with runner:
        runner.stage(images, state, tokens, mask, noise)
        actions = runner.infer().copy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, actions=actions)
    print(f'wrote {args.out}: actions {actions.shape} ({runner.name}); first action {np.round(actions[0], 4).tolist()}')
    return 0


# -- export / build ------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from pi0_trt_ros.export.onnx import export_policy

    out = export_policy(args.checkpoint, args.out, arch=args.arch, precision=args.precision,
                        batch_sizes=args.batch_sizes)
    sizes = ','.join(map(str, args.batch_sizes))
    batched = f', batched graph for batch sizes {sizes}' if args.batch_sizes != (1,) else ''
    print(f'exported {args.checkpoint} -> {out} ({args.precision}{batched})')
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from pi0_trt_ros.checkpoint import load_checkpoint, parse_camera, save_checkpoint

    cameras = dict(parse_camera(c) for c in args.camera) if args.camera else None
    ckpt = load_checkpoint(args.checkpoint, args.arch, stats=args.stats, cameras=cameras)
    out = save_checkpoint(args.out, ckpt.config, ckpt.io, ckpt.weights, ckpt.stats)
    print(f'converted {args.checkpoint} ({ckpt.layout}) -> {out} (lerobot>=0.4 layout)')
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from pi0_trt_ros.export.engine import build_engines

    plan = build_engines(args.engine_dir, runtime=args.runtime, workspace_gib=args.workspace_gib,
                         compute_capabilities=args.compute_capability, batched=args.batched)
    print(f'built {plan}')
    return 0


# -- bench -------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from pi0_trt_ros.bench import (format_batch_table, random_full_size_policy, report, run_batch_benchmark,
                                   run_benchmark)
    from pi0_trt_ros.manifest import PolicyIO

    batch_sizes = args.batch or (1,)
    if args.random_full_size:
        from pi0_trt_ros.runners.torch import TorchRunner
        from pi0_trt_ros.testing.tiny import CAMERA_KEYS

        if args.backend != 'torch':
            raise Pi0Error('--random-full-size builds the model in PyTorch: use --backend torch '
                           '(engine backends benchmark an export directory)')
        h, w = args.camera_hw
        io = PolicyIO(camera_keys=CAMERA_KEYS, camera_hw=((h, w),) * 3, state_dim=6, action_dim=6, chunk_size=50,
                      max_action_dim=32, token_len=48, n_action_steps=50)
        device = args.device or 'cuda'
        runner = TorchRunner(policy=random_full_size_policy(io, device=device), io=io, device=device,
                             dtype=args.dtype or 'bf16', mode=args.mode, compiled=args.compile, fast=args.fast,
                             expert_gemm=args.expert_gemm, prefix_fp8=args.prefix_fp8, batch_sizes=batch_sizes)
        fp8 = ', e4m3 prefix' if args.prefix_fp8 else ''
        variant = ' compiled' if args.compile else f' fast ({args.expert_gemm} expert GEMMs{fp8})' if args.fast else ''
        if args.fast and runner.batched and args.expert_gemm != 'cublas':
            variant += ' at batch 1, cuBLAS expert GEMMs at larger batches'
        label = f'pi0 full-size random, torch {args.dtype or "bf16"} {runner.mode}{variant}, 3x{h}x{w}'
    else:
        runner = runner_from_args(args)
        label = f'{args.checkpoint or args.engine_dir}, {runner.name}'
    if args.batch:
        results = run_batch_benchmark(runner, iters=args.iters, warmup=args.warmup)
        text = format_batch_table(results, label) + '\n' + json.dumps({'case': label, **results})
    else:
        results = run_benchmark(runner, iters=args.iters, warmup=args.warmup)
        text = report(results, label)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({'case': label, **results}, indent=1))
    return 0


# -- bags, replay, demo --------------------------------------------------------------------------
def cmd_make_bag(args: argparse.Namespace) -> int:
    from pi0_trt_ros.bag.synth import make_bag

    summary = make_bag(args.out_bag, duration_s=args.duration, compressed=not args.raw, width=args.width,
                       height=args.height, dropout=tuple(args.dropout) if args.dropout else None,
                       clock_jump=tuple(args.clock_jump) if args.clock_jump else None, repeat_every=args.repeat_every,
                       seed=args.seed, storage=args.storage, instruction=args.instruction)
    print(summary)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    if args.offline:
        from pi0_trt_ros.bag.offline import cmd_replay_offline

        return cmd_replay_offline(args)
    from pi0_trt_ros.bag.session import replay_and_record

    result = replay_and_record(args.bag, record_bag=args.record, rate=args.rate, loop=args.loop,
                               topics=args.topics, clock_hz=100.0 if args.clock else 0.0,
                               restamp=not args.no_restamp, wait_for_subscribers_s=args.wait)
    if args.stats:
        args.stats.write_text(json.dumps(result.stats.to_json(), indent=1))
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from pi0_trt_ros.bag.recorder import record
    from pi0_trt_ros.bag.session import DEFAULT_RECORD_TOPICS

    record(args.out_bag, args.topics or DEFAULT_RECORD_TOPICS, storage=args.storage, duration_s=args.duration)
    return 0


def cmd_train_tiny(args: argparse.Namespace) -> int:
    from pi0_trt_ros.train_tiny import main as train_main

    return train_main(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from pi0_trt_ros.demo import main as demo_main

    return demo_main(args)


# -- argument parsing ----------------------------------------------------------------------------
def _batch_sizes(text: str) -> tuple[int, ...]:
    """Argparse type of '1,2,4,8'."""
    from pi0_trt_ros.batch_sizes import parse_batch_sizes

    try:
        return parse_batch_sizes(text)
    except Pi0Error as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--backend', default='torch', choices=tuple(BACKENDS), help=describe_backends())
    p.add_argument('--checkpoint', type=Path, help='LeRobot pi0 checkpoint directory (torch backend)')
    p.add_argument('--arch', type=Path, help='hf_configs.json for non-standard sizes')
    p.add_argument('--engine-dir', type=Path, help='export directory from `pi0-trt export` (engine backends)')
    p.add_argument('--device', help='torch: cuda|cpu (default: cuda if available); onnxruntime: cpu|cuda')
    p.add_argument('--dtype', choices=('fp32', 'fp16', 'bf16'), help='torch backend compute dtype (default fp32)')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='pi0-trt', description=__doc__)
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('infer', help='run one observation through a backend')
    add_backend_args(p)
    p.add_argument('--obs', type=Path, required=True, help='OBS.npz: image.0.., state, tokens + token_mask')
    p.add_argument('--noise', type=Path, help='NOISE.npz with noise float32 [chunk, max_action_dim]')
    p.add_argument('--seed', type=int, default=0, help='noise seed when --noise is not given')
    p.add_argument('--instruction', help='instruction text (instead of tokens in OBS.npz)')
    p.add_argument('--tokenizer', help='tokenizer.json / tokenizer.model / HF cache entry for --instruction')
    p.add_argument('--out', type=Path, required=True, help='OUT.npz to write (actions float32 [chunk, action_dim])')
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser('export', help='export a checkpoint to ONNX (+ metadata)')
    p.add_argument('--checkpoint', type=Path, required=True)
    p.add_argument('--arch', type=Path)
    p.add_argument('--out', type=Path, required=True, help='ENGINE_DIR to write')
    p.add_argument('--precision', choices=('fp16', 'fp32'), default='fp16')
    p.add_argument('--batch-sizes', type=_batch_sizes, default=(1,), metavar='1,2,4,8',
                   help='batch sizes of batched serving: beyond 1, also write the dynamic-batch graph (default: 1)')
    p.set_defaults(func=cmd_export)

    p = sub.add_parser('convert', help='write any loadable checkpoint (LeRobot <= 0.3, base lerobot/pi0 + '
                       '--camera/--stats) in the LeRobot >= 0.4 layout the other commands read')
    p.add_argument('checkpoint', type=Path)
    p.add_argument('--out', type=Path, required=True, help='checkpoint directory to write')
    p.add_argument('--arch', type=Path, help='hf_configs.json for non-standard sizes')
    p.add_argument('--stats', type=Path, help="normalization statistics: the training dataset's meta/stats.json")
    p.add_argument('--camera', action='append', metavar='KEY=HxW',
                   help='camera key and frame size, in policy order (repeat), e.g. '
                   'observation.images.base_0_rgb=480x640; replaces the cameras of config.json')
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser('build', help='build TensorRT engine(s) for an export directory')
    p.add_argument('engine_dir', type=Path)
    p.add_argument('--runtime', choices=('tensorrt', 'tensorrt_rtx'), default='tensorrt')
    p.add_argument('--workspace-gib', type=float, default=8.0)
    p.add_argument('--compute-capability', action='append', metavar='CC',
                   help='TensorRT-RTX target GPU (e.g. 8.6, 12.0, current); repeatable; default: portable plan')
    p.add_argument('--batched', action='store_true',
                   help="build the export's dynamic-batch graph, one optimization profile per batch size")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser('bench', help='latency of one batch-1 policy call, or of batched calls (table + JSON)')
    add_backend_args(p)
    p.add_argument('--batch', type=_batch_sizes, metavar='1,2,4,8',
                   help='time batched calls at these batch sizes: p50/p99 latency and observations/s per size '
                   '(engine backends need an export made with --batch-sizes)')
    p.add_argument('--random-full-size', action='store_true', help='full-size Pi0 with random weights (GPU)')
    p.add_argument('--camera-hw', type=int, nargs=2, default=(480, 640), metavar=('H', 'W'))
    p.add_argument('--mode', choices=('eager', 'cuda_graph'), default='cuda_graph', help='torch backend mode')
    p.add_argument('--compile', action='store_true', help='torch backend: torch.compile the hot functions')
    p.add_argument('--fast', action='store_true', help='torch backend: the fused Triton-kernel fast path')
    p.add_argument('--expert-gemm', choices=TORCH_EXPERT_GEMMS, default=DEFAULT_EXPERT_GEMM,
                   help="with --fast: how the denoise steps' GEMMs run (see the torch backend's expert_gemm)")
    p.add_argument('--prefix-fp8', action='store_true',
                   help="with --fast --dtype bf16: the VLM prefix's GEMMs in FP8 e4m3 (the torch backend's prefix_fp8)")
    p.add_argument('--iters', type=int, default=200)
    p.add_argument('--warmup', type=int, default=20)
    p.add_argument('--json', type=Path, help='also write the figures to this JSON file')
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('make-bag', help='write a synthetic 3-camera bag (rosbag2, sqlite3 or mcap)')
    p.add_argument('out_bag', type=Path)
    p.add_argument('--duration', type=float, default=10.0, help='seconds')
    p.add_argument('--raw', action='store_true', help='sensor_msgs/Image rgb8 instead of jpeg CompressedImage')
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=480)
    p.add_argument('--dropout', type=float, nargs=3, metavar=('CAMERA', 'START_S', 'END_S'),
                   help='camera index that stops publishing between START_S and END_S')
    p.add_argument('--clock-jump', type=float, nargs=2, metavar=('AT_S', 'BACK_S'),
                   help='stamps of everything captured from AT_S on are BACK_S seconds earlier (a clock reset)')
    p.add_argument('--repeat-every', type=int, default=0, metavar='N',
                   help='log every N-th message of each sensor stream twice, same stamp (0: never)')
    p.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--instruction', default='pick up the red block and place it in the bin')
    p.set_defaults(func=cmd_make_bag)

    p = sub.add_parser('replay', help='replay a bag into the running node (or offline, without DDS)')
    p.add_argument('bag', type=Path)
    p.add_argument('--rate', type=float, default=1.0)
    p.add_argument('--loop', action='store_true')
    p.add_argument('--clock', action='store_true', help='publish /clock at 100 Hz (for use_sim_time)')
    p.add_argument('--no-restamp', action='store_true', help='keep recorded header stamps (with --clock)')
    p.add_argument('--topics', nargs='+', help='bag topics to replay (default all)')
    p.add_argument('--record', type=Path, help="record the node's commands/status/diagnostics into this bag")
    p.add_argument('--wait', type=float, default=30.0, help="seconds to wait for the node's subscriptions")
    p.add_argument('--stats', type=Path, help='write replay timing statistics (JSON) here')
    offline = p.add_argument_group("offline (no DDS): the node's observation pipeline and runner on the bag")
    offline.add_argument('--offline', action='store_true')
    add_backend_args(offline)
    offline.add_argument('--tokenizer', help="tokenizer for the bag's instruction")
    offline.add_argument('--config', type=Path, help='node parameter YAML (default: config/control.yaml)')
    offline.add_argument('--realtime', action='store_true', help='pace the bag at --rate instead of max speed')
    offline.add_argument('--out', type=Path, help='write commands (npz) here')
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser('record', help="record topics (default: the node's outputs) into a bag until Ctrl-C")
    p.add_argument('out_bag', type=Path)
    p.add_argument('--topics', nargs='+', help='topics to record (types are looked up once they appear)')
    p.add_argument('--duration', type=float, help='seconds (default: until SIGINT/SIGTERM)')
    p.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3')
    p.set_defaults(func=cmd_record)

    p = sub.add_parser('train-tiny', help="train the demo's tiny Pi0 on the synthetic robot (CPU, flow matching)")
    from pi0_trt_ros.train_tiny import add_arguments as add_train_arguments

    add_train_arguments(p)
    p.set_defaults(func=cmd_train_tiny)

    p = sub.add_parser('demo', help='trained tiny Pi0 + synthetic bag replayed into the real node, with a report')
    p.add_argument('--out', type=Path, default=Path('demo_output'))
    p.add_argument('--duration', type=float, default=6.0, help='bag length, seconds')
    p.add_argument('--rate', type=float, default=1.0)
    p.add_argument('--raw', action='store_true', help='raw Image cameras instead of jpeg')
    p.add_argument('--checkpoint', type=Path, help='a real LeRobot pi0 checkpoint instead of the trained tiny one')
    p.add_argument('--tokenizer', type=Path, help='its PaliGemma tokenizer (tokenizer.json / tokenizer.model)')
    p.add_argument('--backend', choices=EXPORT_BACKENDS, default='onnxruntime',
                   help='tensorrt / tensorrt_rtx also build the engine (on a GPU machine)')
    p.add_argument('--precision', choices=('fp16', 'fp32'), help='export precision (default: fp16 for TensorRT)')
    p.add_argument('--inference-mode', choices=('every_set', 'chunk'), default='every_set',
                   help="the node's mode: every_set (one inference per set), or chunk (one action per control "
                        'tick, the next chunk inferred while the running one is published)')
    p.add_argument('--n-action-steps', type=int, default=0, help='chunk mode: actions per chunk (0: exported)')
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        return int(args.func(args))
    except Pi0Error as e:
        print(f'pi0-trt {args.command}: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
