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

"""The self-contained demo (`pi0-trt demo`): trained tiny Pi0 -> ONNX -> real node -> bag replay -> report.

Steps, each a real part: take the tiny Pi0 trained on the synthetic robot (shipped in the package,
`pi0_trt_ros/demo_policy`, made by `pi0-trt train-tiny`) and its tokenizer (or a real checkpoint
and tokenizer, `--checkpoint` / `--tokenizer`), export it to ONNX (and build a TensorRT plan for
`--backend tensorrt|tensorrt_rtx`), write a synthetic three-camera bag, start the control node
with `ros2 launch` (ONNX Runtime on CPU, one thread, by default), replay the bag into it over DDS
(loopback only) while recording its commands, status, diagnostics and the joint states, stop the
node, and write the latency/actions report, headed by what ran on what. The node runs ``every_set``
by default (one inference per set, each command comparable with ``pi0-trt infer``);
``--inference-mode chunk`` runs its chunk mode (one command per control tick, the next chunk
inferred while the running one is published), whose steady command interval the report shows.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import time
from typing import Any

import numpy as np
import yaml

from pi0_trt_ros.errors import Pi0Error
from pi0_trt_ros.testing import dds


HARNESS_NICENESS = 5  # added to this process's niceness once the node runs
DOMAIN_BASE = 37  # the demo's base DDS domain id, shifted by this run's domain slot (pi0_trt_ros.testing.dds)


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    out_dir: Path
    duration_s: float = 6.0  # bag length (s)
    compressed: bool = True  # JPEG cameras (raw 640x480 frames are 0.9 MB each)
    rate: float = 1.0  # replay speed
    backend: str = 'onnxruntime'
    backend_options: str = '{"threads": 1}'  # ONNX Runtime: one intra-op thread leaves a core to DDS
    domain_id: int | None = None  # None: DOMAIN_BASE in this run's domain slot, apart from concurrent runs
    checkpoint: Path | None = None  # a real LeRobot pi0 checkpoint instead of the trained tiny one
    tokenizer: Path | None = None  # its PaliGemma tokenizer (required with checkpoint)
    precision: str = 'fp32'  # export precision (fp16 for TensorRT)
    inference_mode: str = 'every_set'  # the node's mode: every_set, or chunk (one action per control tick)
    n_action_steps: int = 0  # chunk mode: actions per chunk (0: the exported value)


def demo_params(engine_dir: Path, tokenizer: Path, compressed: bool, backend_options: str,
                backend: str = 'onnxruntime', inference_mode: str = 'every_set',
                n_action_steps: int = 0) -> dict[str, Any]:
    """control.yaml with the demo's policy and backend, lossless replay QoS and (by default) one inference per set."""
    from pi0_trt_ros.node.params import default_params_file

    doc = yaml.safe_load(default_params_file().read_text())
    params = doc['/**']['ros__parameters']
    params.update(backend=backend, backend_options=backend_options, engine_dir=str(engine_dir),
                  tokenizer=str(tokenizer), sensor_qos_reliability='reliable', inference_mode=inference_mode,
                  n_action_steps=n_action_steps)
    for cam in params['cameras']:
        params['camera'][cam]['type'] = 'compressed' if compressed else 'raw'
    return doc


def start_node(config: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    ros2 = shutil.which('ros2')
    if ros2 is None:
        raise Pi0Error('`ros2` is not on PATH: source scripts/setup_env.sh (or a ROS 2 install) first')
    log = log_path.open('w')
    return subprocess.Popen([ros2, 'launch', 'pi0_trt_ros', 'control.launch.py', f'config:={config}'],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_node(proc: subprocess.Popen, timeout_s: float = 20.0) -> int:
    """SIGINT the launch process group (launch forwards it to the node), escalate if needed."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def run_description(checkpoint: Path, settings: DemoSettings) -> dict[str, str]:
    """Describe what ran on what, for the report: model (parameters, steps, cameras), backend, CPU."""
    from pi0_trt_ros.checkpoint import load_checkpoint
    from pi0_trt_ros.train_tiny import cpu_name

    ckpt = load_checkpoint(checkpoint)
    params = sum(int(np.prod(w.shape)) for w in ckpt.weights.values())
    cams = ', '.join(f'{w}x{h}' for h, w in ckpt.io.camera_hw)
    cfg = ckpt.config
    options = settings.backend_options if settings.backend == 'onnxruntime' else ''
    mode = settings.inference_mode
    if mode == 'chunk':
        mode += f', {settings.n_action_steps or ckpt.io.n_action_steps} actions per chunk'
    trained = ''
    if (checkpoint / 'training.json').is_file():
        info = json.loads((checkpoint / 'training.json').read_text())
        trained = f', trained {info["settings"]["steps"]} steps (training.json)'
    return {
        'model': f'{checkpoint.name}: Pi0, {params / 1e6:.2f} M parameters, {cfg.num_inference_steps} Euler steps, '
                 f'chunk {cfg.chunk_size}, cameras {cams} -> {cfg.vision.image_size} px, patch '
                 f'{cfg.vision.patch_size}{trained}',
        'backend': f'{settings.backend} {settings.precision} {options}'.rstrip(),
        'machine': f'{cpu_name()}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f} at the end',
        'cameras': f'{"JPEG" if settings.compressed else "raw"} at 30 Hz, joint states at 100 Hz, '
                   f'{settings.duration_s:g} s bag at rate {settings.rate:g}',
        'mode': mode,
    }


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """Run every step; returns the report summary plus where things are."""
    from pi0_trt_ros.bag.report import JOINT_STATE_TYPE, make_report
    from pi0_trt_ros.bag.session import DEFAULT_RECORD_TOPICS, replay_and_record
    from pi0_trt_ros.bag.synth import DEFAULT_JOINT_TOPIC, make_bag
    from pi0_trt_ros.export.engine import build_engines
    from pi0_trt_ros.export.onnx import export_policy
    from pi0_trt_ros.testing.tiny_tokenizer import build_tiny_tokenizer_json
    from pi0_trt_ros.train_tiny import DEMO_POLICY_DIR

    out = settings.out_dir.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    domain_id = settings.domain_id if settings.domain_id is not None else dds.domain_id(DOMAIN_BASE)
    os.environ['ROS_DOMAIN_ID'] = str(domain_id)
    t0 = time.monotonic()

    def step(text: str) -> None:
        print(f'[demo {time.monotonic() - t0:6.1f} s] {text}', flush=True)

    checkpoint = settings.checkpoint
    if checkpoint is None:
        checkpoint = DEMO_POLICY_DIR
        if not (checkpoint / 'model.safetensors').is_file():
            raise Pi0Error(f'the demo policy is missing from {checkpoint}: reinstall the package, or train it '
                           f'with `pi0-trt train-tiny` (a few minutes on one CPU core)')
        step(f'1/5 the tiny Pi0 trained on the synthetic robot ({checkpoint}), exported to ONNX ({settings.precision})')
        tokenizer = build_tiny_tokenizer_json(out / 'model' / 'tokenizer.json')
    else:
        if settings.tokenizer is None:
            raise Pi0Error('--checkpoint needs --tokenizer (the PaliGemma tokenizer.json / tokenizer.model)')
        step(f'1/5 exporting {checkpoint} to ONNX ({settings.precision})')
        tokenizer = settings.tokenizer
    engine_dir = export_policy(checkpoint, out / 'engine', precision=settings.precision)
    if settings.backend in ('tensorrt', 'tensorrt_rtx'):
        step(f'    building the {settings.backend} engine')
        build_engines(engine_dir, runtime=settings.backend)
    step(f'2/5 synthetic bag: 3 cameras 640x480 @ 30 Hz ({"jpeg" if settings.compressed else "raw"}), '
         f'joint states @ 100 Hz, {settings.duration_s:g} s')
    input_bag = out / 'input_bag'
    make_bag(input_bag, duration_s=settings.duration_s, compressed=settings.compressed)
    config = out / 'control.yaml'
    options = settings.backend_options if settings.backend == 'onnxruntime' else '{}'
    config.write_text(yaml.safe_dump(demo_params(engine_dir, tokenizer, settings.compressed, options,
                                                 settings.backend, settings.inference_mode,
                                                 settings.n_action_steps), sort_keys=False))
    step(f'3/5 starting the node: ros2 launch pi0_trt_ros control.launch.py config:={config}')
    node = start_node(config, dict(os.environ), out / 'node.log')
    # The node is the system under test: the player and recorder in this process yield the CPU to it
    # (on a robot the controller would run at a higher priority than any logging).
    os.nice(HARNESS_NICENESS)
    try:
        step('4/5 replaying the bag into the node over DDS, recording its outputs')
        recorded_bag = out / 'recorded_bag'
        record_topics = {**DEFAULT_RECORD_TOPICS, DEFAULT_JOINT_TOPIC: JOINT_STATE_TYPE}
        session = replay_and_record(input_bag, record_bag=recorded_bag, record_topics=record_topics,
                                    rate=settings.rate, wait_for_subscribers_s=60.0, linger_s=1.5,
                                    domain_id=domain_id, log=step,
                                    give_up=lambda: node.poll() is not None)  # start-up failed: say so at once
        if node.poll() is not None:
            raise Pi0Error(f'the node exited early (code {node.returncode}); see {out / "node.log"}')
    finally:
        rc = stop_node(node)
    step(f'node stopped (exit code {rc}); log: {out / "node.log"}')
    step('5/5 report')
    about = run_description(checkpoint, settings)
    summary = make_report(recorded_bag, out / 'report', budget_ms=20.0, input_bag=input_bag, about=about)
    summary = {**summary, 'replay': session.stats.to_json(), 'recorded': session.recorded,
               'report_dir': str(out / 'report'), 'node_exit_code': rc}
    (out / 'demo.json').write_text(json.dumps(summary, indent=1, default=str))
    return summary


def main(args: Any) -> int:
    settings = DemoSettings(out_dir=args.out, duration_s=args.duration, compressed=not args.raw, rate=args.rate,
                            backend=args.backend, checkpoint=args.checkpoint, tokenizer=args.tokenizer,
                            precision=args.precision or ('fp16' if args.backend.startswith('tensorrt') else 'fp32'),
                            inference_mode=args.inference_mode, n_action_steps=args.n_action_steps)
    summary = run_demo(settings)
    report_dir = Path(summary['report_dir'])
    print((report_dir / 'summary.txt').read_text())
    print(f'report: {report_dir} ({", ".join(sorted(p.name for p in report_dir.iterdir()))})')
    return 0 if summary['node_exit_code'] == 0 else 1
