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

"""Train the demo's tiny Pi0 with flow matching on the synthetic robot (`pi0-trt train-tiny`), on CPU.

Data: observations of random robots from `bag.synth` (the functions that write the synthetic
bags): three 640x480 camera views, JPEG-encoded and decoded like the bag and the node do, then
resized with pad by the policy's own preprocessing; the joint positions as state; as actions,
the joint positions ``(k + 1) * ACTION_PERIOD_S`` after the observation, k = 0..chunk-1. The
camera views show where two joints each will be ``TARGET_LEAD_S`` later and a distractor, so
the policy must read the right camera, the red (not the blue) block and the state in joint order.

Loss: LeRobot's `PI0Pytorch.forward`: t ~ Beta(1.5, 1) * 0.999 + 0.001, x_t = t * noise +
(1 - t) * actions, u_t = noise - actions, MSE(v_t, u_t) over the real action dimensions, on
normalized state and actions (MEAN_STD stats of the training set). Seeded and single-threaded:
the same settings give the same weights. The result is written in LeRobot's checkpoint layout
with `training.json` (settings, time, machine, losses, held-out tracking error).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
import platform
import time
from typing import Any, Callable

import numpy as np

from pi0_trt_ros.model.config import GemmaSpec, Pi0Config, SiglipSpec

# Small enough for a 20 ms cycle on one CPU core under ONNX Runtime (three 640x480 cameras):
# 28-pixel patches give 64 tokens per camera, 16 language tokens (the bags' instruction takes 13),
# so the prefix is 3 x 64 + 16 tokens; 5 Euler steps.
DEMO_CONFIG = Pi0Config(
    vlm=GemmaSpec(width=64, depth=2, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=16),
    expert=GemmaSpec(width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=16),
    vision=SiglipSpec(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=28, image_size=224),
    vocab_size=1024, num_inference_steps=5)
DEMO_POLICY_DIR = Path(__file__).resolve().parent / 'demo_policy'  # the committed result
ACTION_PERIOD_S = 0.02  # action k of a chunk is the joint position (k + 1) * 20 ms ahead (50 Hz control)
CAMERA_HW = (480, 640)
TOKEN_LEN = 16
STATE_JITTER_S = 0.006  # the node pairs a camera set with the joint sample nearest its stamp (100 Hz)
TRACKING_HORIZON = 25  # actions scored by the tracking tests: the first 0.5 s of each chunk
# Mean abs tracking error (rad) the demo policy must stay under, for the first action and for the
# first TRACKING_HORIZON actions (the tests hold the live node to both). Derivation, from the
# shipped policy: held-out error 0.025 / 0.062 (200 random robots, training.json), 0.021 / 0.053
# on the unit test's bag. Input mistakes on that bag: camera mapping rotated 0.042 / 0.153,
# frames in BGR 0.063 / 0.243, joint states 0.5 s stale 0.132 / 0.114, another joint's
# normalization stats 0.207 / 0.151, joints reversed 1.10 / 1.21, untrained policy 1.27 / 1.30.
# 0.08 for the horizon sits halfway (geometrically) between the trained error and the smallest
# mistake (0.114), so robot-to-robot spread (+-20 %) cannot cross it either way; 0.05 for the
# first action is twice the trained error and catches stale joint states and wrong statistics
# at a glance, while camera and colour mix-ups show only over the horizon.
TRACKING_THRESHOLD_RAD = {'first': 0.05, 'horizon': 0.08}


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    out_dir: Path
    seed: int = 0
    samples: int = 2000  # distinct observations (each of a new random robot at a random time)
    steps: int = 700
    batch: int = 32  # observations per step
    draws: int = 4  # noise/time draws per observation (see flow_matching_loss)
    lr: float = 3e-3  # AdamW peak; linear warm-up, cosine decay to 0
    warmup: int = 100
    weight_decay: float = 1e-4
    threads: int = 1
    jpeg_quality: int = 90  # as the synthetic bags
    eval_samples: int = 200


@dataclasses.dataclass
class Dataset:
    images: np.ndarray  # uint8 [N, C, S, S, 3]: frames after resize-with-pad, round(255 * x), x in [0, 1]
    states: np.ndarray  # float32 [N, J], rad
    actions: np.ndarray  # float32 [N, T, J], rad


def instruction_tokens(max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize the synthetic bags' instruction with the demo tokenizer: (ids int64 [L], mask bool [L])."""
    import tempfile

    from pi0_trt_ros.bag.synth import DEFAULT_INSTRUCTION
    from pi0_trt_ros.testing.tiny_tokenizer import build_tiny_tokenizer_json
    from pi0_trt_ros.tokenizer import Pi0Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_tokenizer_json(Path(tmp) / 'tokenizer.json')
        ids, mask = Pi0Tokenizer.from_path(path, max_length).encode(DEFAULT_INSTRUCTION)
    return np.asarray(ids, np.int64), np.asarray(mask, bool)


def make_dataset(n: int, seed: int, config: Pi0Config, num_joints: int = 6, num_cameras: int = 3,
                 jpeg_quality: int = 90) -> Dataset:
    """Render ``n`` observations of random synthetic robots (see the module docstring)."""
    import cv2
    import torch

    from pi0_trt_ros.bag.synth import SyntheticRobot, SyntheticScene, target_xy
    from pi0_trt_ros.model.preprocess import preprocess_frame

    rng = np.random.default_rng(seed)
    h, w = CAMERA_HW
    size = config.vision.image_size
    scene = SyntheticScene(w, h, num_cameras, np.zeros((num_cameras, 2)))
    images = np.empty((n, num_cameras, size, size, 3), np.uint8)
    states = np.empty((n, num_joints), np.float32)
    actions = np.empty((n, config.chunk_size, num_joints), np.float32)
    ahead = ACTION_PERIOD_S * np.arange(1, config.chunk_size + 1)  # [T] s
    frames = np.empty((num_cameras, h, w, 3), np.uint8)
    for i in range(n):
        robot = SyntheticRobot.random(rng, num_joints)
        t = float(rng.uniform(0.0, 60.0))
        frame_no = int(rng.integers(0, 10_000))
        for cam in range(num_cameras):
            rgb = scene.render(cam, frame_no, target_xy(robot, cam, t), rng.uniform(0.0, 1.0, 2))
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            ok, jpeg = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            if not ok:
                raise RuntimeError('OpenCV failed to encode a JPEG frame')
            frames[cam] = cv2.imdecode(jpeg, cv2.IMREAD_COLOR_RGB)
        with torch.no_grad():
            x = preprocess_frame(torch.from_numpy(frames), size)  # [C, 3, S, S] in [-1, 1]
        images[i] = torch.round((x + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        states[i] = robot.positions(t + rng.uniform(-STATE_JITTER_S, STATE_JITTER_S))
        actions[i] = robot.positions(t + ahead)
    return Dataset(images=images, states=states, actions=actions)


def _pixels(images_u8: np.ndarray) -> list[Any]:
    """uint8 [B, C, S, S, 3] -> C x float32 [B, 3, S, S] in [-1, 1] (what `preprocess_frame` returns)."""
    import torch

    x = torch.from_numpy(images_u8).float() * (2.0 / 255.0) - 1.0
    return [x[:, c].permute(0, 3, 1, 2).contiguous() for c in range(images_u8.shape[1])]


def flow_matching_loss(model: Any, images: list[Any], tokens: Any, token_mask: Any, state: Any, actions: Any,
                       noise: Any, t: Any, action_dim: int) -> Any:
    """Compute LeRobot's Pi0 training loss for a batch: mean over [B*K, T, action_dim] of (v_t - u_t)^2.

    images C x [B, 3, S, S], tokens/token_mask [B, L]; state float32 [B, max_state_dim] and
    actions float32 [B, T, max_action_dim] normalized and zero-padded; noise float32
    [B*K, T, max_action_dim] and t float32 [B*K] in (0, 1]: K noise/time draws per observation
    (sample-major) share its prefix, which costs nearly all of the compute, so each step sees K
    times more of the flow at little extra cost.
    """
    import torch
    import torch.nn.functional as F

    from pi0_trt_ros.model.layers import sinusoidal_time_embedding

    cfg = model.config
    draws = t.shape[0] // state.shape[0]
    state, actions = state.repeat_interleave(draws, 0), actions.repeat_interleave(draws, 0)
    t_b = t[:, None, None]
    x_t = t_b * noise + (1.0 - t_b) * actions
    u_t = noise - actions
    time_emb = torch.from_numpy(sinusoidal_time_embedding(t.detach().numpy(), cfg.expert.width, cfg.min_period,
                                                          cfg.max_period))  # [B*K, W]
    k_cache, v_cache, pad = model.fill_cache(images, tokens, token_mask)  # caches [layers, B, N, P, D]
    k_cache, v_cache = k_cache.repeat_interleave(draws, 1), v_cache.repeat_interleave(draws, 1)
    mask, cos, sin = model.suffix_attention(pad.repeat_interleave(draws, 0))
    v_t = model.denoise_step(state, x_t, time_emb, k_cache, v_cache, mask, cos, sin)
    return F.mse_loss(v_t[..., :action_dim], u_t[..., :action_dim])


def tracking_errors(predicted: np.ndarray, actual: np.ndarray, horizon: int) -> dict[str, float]:
    """Mean abs error (rad) of chunks [n, T, J] against the true future positions [n, T, J].

    ``first``: action 0 only (what `every_set` mode commands); ``horizon``: actions 0..horizon-1.
    """
    err = np.abs(predicted - actual)
    return {'first': float(err[:, 0].mean()), 'horizon': float(err[:, :horizon].mean())}


def evaluate(policy: Any, data: Dataset, tokens: np.ndarray, token_mask: np.ndarray, seed: int,
             horizon: int) -> dict[str, float]:
    """Sample chunks (the inference path, in torch) for ``data`` and compare with its actions."""
    import torch

    model = policy.model
    gen = torch.Generator().manual_seed(seed)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(data.states), 50):
            sl = slice(start, start + 50)
            b = len(data.states[sl])
            noise = torch.randn((b, model.config.chunk_size, model.config.max_action_dim), generator=gen)
            state = policy.normalize_state(torch.from_numpy(data.states[sl]))
            norm = model.sample_actions(_pixels(data.images[sl]), torch.from_numpy(tokens).expand(b, -1),
                                        torch.from_numpy(token_mask).expand(b, -1), state, noise)
            chunks.append(policy.unnormalize_actions(norm).numpy())
    return tracking_errors(np.concatenate(chunks), data.actions, horizon)


def train(settings: TrainSettings, log: Callable[[str], None] = print) -> Path:
    """Train the demo policy and write its checkpoint to ``settings.out_dir``; returns that path."""
    import torch

    from pi0_trt_ros.checkpoint import NormStats, save_checkpoint
    from pi0_trt_ros.model.pi0 import Pi0Model, Pi0Policy
    from pi0_trt_ros.testing.tiny import tiny_io

    t_start, cpu_start = time.monotonic(), time.process_time()
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    config = DEMO_CONFIG
    io = dataclasses.replace(tiny_io(camera_hw=CAMERA_HW), token_len=TOKEN_LEN)
    dof = io.action_dim
    log(f'rendering {settings.samples} training + {settings.eval_samples} held-out observations')
    data = make_dataset(settings.samples, settings.seed, config, jpeg_quality=settings.jpeg_quality)
    held_out = make_dataset(settings.eval_samples, settings.seed + 1_000_003, config,
                            jpeg_quality=settings.jpeg_quality)
    t_data = time.monotonic() - t_start
    stats = NormStats(state_mean=data.states.mean(0), state_std=data.states.std(0),
                      action_mean=data.actions.reshape(-1, dof).mean(0),
                      action_std=data.actions.reshape(-1, dof).std(0))
    tokens, token_mask = instruction_tokens(io.token_len)

    model = Pi0Model(config)
    stat_tensors = [torch.from_numpy(v) for v in (stats.state_mean, stats.state_std, stats.action_mean,
                                                  stats.action_std)]
    policy = Pi0Policy(model, *stat_tensors)
    params = sum(p.numel() for p in model.parameters())
    log(f'model: {params:,} parameters, {config.num_inference_steps} Euler steps; data {t_data:.1f} s')
    norm_states = torch.from_numpy(((data.states - stats.state_mean) / (stats.state_std + 1e-8)).astype(np.float32))
    norm_actions = torch.from_numpy(((data.actions - stats.action_mean) / (stats.action_std + 1e-8))
                                    .astype(np.float32))
    b = settings.batch
    batch_tokens = torch.from_numpy(tokens).expand(b, -1)
    batch_mask = torch.from_numpy(token_mask).expand(b, -1)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    def lr_at(step: int) -> float:
        if step < settings.warmup:
            return settings.lr * (step + 1) / settings.warmup
        frac = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
        return settings.lr * 0.5 * (1.0 + math.cos(math.pi * frac))

    beta = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0))
    gen = np.random.default_rng(settings.seed + 7)
    losses = []
    model.train()
    for step in range(settings.steps):
        idx = gen.integers(0, len(data.states), b)
        state = torch.nn.functional.pad(norm_states[idx], (0, config.max_state_dim - dof))
        actions = torch.nn.functional.pad(norm_actions[idx], (0, config.max_action_dim - dof))
        noise = torch.randn((b * settings.draws, *actions.shape[1:]))
        t = beta.sample((b * settings.draws,)) * 0.999 + 0.001
        loss = flow_matching_loss(model, _pixels(data.images[idx]), batch_tokens, batch_mask, state, actions,
                                  noise, t, dof)
        for group in opt.param_groups:
            group['lr'] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == settings.steps - 1:
            log(f'step {step:5d}  loss {np.mean(losses[-100:]):.4f}  ({time.monotonic() - t_start:.0f} s)')
    model.eval()
    t_train = time.monotonic() - t_start
    horizon = TRACKING_HORIZON
    errors = evaluate(policy, held_out, tokens, token_mask, settings.seed, horizon)
    log(f'held-out tracking error: first action {errors["first"]:.4f} rad, first {horizon} actions '
        f'{errors["horizon"]:.4f} rad')

    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = save_checkpoint(settings.out_dir, config, io, weights, stats)
    report = {
        'settings': {k: v.name if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()},
        'parameters': params, 'num_inference_steps': config.num_inference_steps,
        'action_period_s': ACTION_PERIOD_S,
        'seconds': {'data': round(t_data, 1), 'train': round(t_train - t_data, 1),
                    'total': round(time.monotonic() - t_start, 1), 'cpu': round(time.process_time() - cpu_start, 1)},
        'machine': {'cpu': cpu_name(), 'torch': torch.__version__, 'threads': settings.threads},
        'loss': {'first_100': float(np.mean(losses[:100])), 'last_100': float(np.mean(losses[-100:]))},
        'held_out_tracking_error_rad': {'first_action': errors['first'], f'first_{horizon}_actions':
                                        errors['horizon']},
    }
    (out / 'training.json').write_text(json.dumps(report, indent=1) + '\n')
    log(f'wrote {out} in {report["seconds"]["total"]:.0f} s ({report["seconds"]["cpu"]:.0f} s of CPU)')
    return out


def cpu_name() -> str:
    """Return the CPU model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = TrainSettings(out_dir=DEMO_POLICY_DIR)
    p.add_argument('--out', type=Path, default=DEMO_POLICY_DIR,
                   help='checkpoint directory to write (default: the demo policy shipped in the package)')
    for name in ('seed', 'samples', 'steps', 'batch', 'draws', 'threads'):
        p.add_argument(f'--{name}', type=int, default=getattr(defaults, name))
    p.add_argument('--lr', type=float, default=defaults.lr)


def main(args: argparse.Namespace) -> int:
    train(TrainSettings(out_dir=args.out, seed=args.seed, samples=args.samples, steps=args.steps, batch=args.batch,
                        draws=args.draws, threads=args.threads, lr=args.lr))
    return 0
