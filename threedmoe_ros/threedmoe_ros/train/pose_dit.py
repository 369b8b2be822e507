"""Train the Pose-DiT policy (condition encoder + Pose-DiT head) on pick-and-place demonstrations.

    threedmoe-train-pose-dit --data DIR --out runs/pose_dit
    threedmoe-train-pose-dit --data DIR --out runs/pose_dit --resume   # continue
    threedmoe-train-pose-dit --synthetic 2000 --out /tmp/run            # no data needed

The training set is any torch Dataset whose items are (cloud: Cloud, instruction: str,
plan: ndarray (T_i, 2, 7)); `collate_plans` pads the plans to the horizon T and returns the
validity mask the head learns to predict. `--data DIR` opens the simulator's recorded episodes
through the factory named by `--dataset-factory` (module:callable taking the directory; default
data.dataset.EpisodeDataset, whose samples carry .cloud/.instruction/.plan).

What a run leaves in --out:
  checkpoint/    the policy (config.json + model.safetensors; EMA weights when EMA is on), what
                 Policy.from_pretrained and the policy node load
  train_state.pt optimiser, step, raw weights, EMA and RNG state: what --resume continues from
  train.json     the training settings; metrics.csv, tb/ (TensorBoard) and curves.png the curves
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import functools
import importlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from threedmoe_ros.models.pose_codec import PoseCodecConfig
from threedmoe_ros.models.pose_dit import PoseDiTConfig
from threedmoe_ros.policy import Policy, PolicyConfig
from threedmoe_ros.data.synthetic import SyntheticPickPlace
from threedmoe_ros.types import Cloud, as_plan

DEFAULT_DATASET_FACTORY = "threedmoe_ros.data.dataset:EpisodeDataset"
IDENTITY_POSE = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])


@dataclass
class TrainConfig:
    """Settings of one training run (saved as train.json; --resume checks them)."""

    out: str
    data: str | None = None
    # Directories of recovery episodes (data.collect --policy: the policy acted, the oracle labelled
    # every state it reached). Read whether or not the episode succeeded: the labels are the oracle's.
    recovery_data: tuple[str, ...] = ()
    # Use a generated SyntheticPickPlace set of this many samples instead of --data (smoke tests).
    synthetic: int = 0
    dataset_factory: str = DEFAULT_DATASET_FACTORY
    batch_size: int = 32
    max_steps: int = 20_000
    lr: float = 3e-4
    weight_decay: float = 0.01
    # Linear warm-up, then cosine decay to 10 %: the adaLN-Zero gates open gently.
    warmup_steps: int = 500
    grad_clip: float = 1.0
    # Exponential moving average of the weights, what the checkpoint holds (0 = off). Diffusion
    # heads sample visibly better from EMA weights (DiT, diffusion_policy).
    ema_decay: float = 0.999
    log_every: int = 50
    save_every: int = 1000
    seed: int = 0
    num_workers: int = 0
    device: str = "cpu"
    # Decode every episode once and keep samples in memory with clouds thinned to this many points
    # (object points always kept); 0 reads bags on demand (slow: samples are drawn in random order).
    cache_points: int = 4096
    # CPU threads for torch (0 = torch's default). One: the batches are small, and two threads
    # on a 2-core machine that runs anything else spin against each other (measured 7 s/step vs 0.2).
    threads: int = 1

    def __post_init__(self) -> None:
        if self.data is None and self.synthetic <= 0:
            raise ValueError("give --data DIR (recorded episodes) or --synthetic N")
        if self.data is not None and self.synthetic > 0:
            raise ValueError("give either --data or --synthetic, not both")
        for name in ("batch_size", "max_steps", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("--lr must be > 0 and --weight-decay, --warmup-steps, --grad-clip >= 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")


# ----- data ---------------------------------------------------------------------------------------

def _fields(sample) -> tuple[Cloud, str, np.ndarray]:
    """(cloud, instruction, plan) of a tuple or of an object with those attributes (data.dataset.Sample)."""
    if isinstance(sample, (tuple, list)):
        return sample[0], sample[1], sample[2]
    return sample.cloud, sample.instruction, sample.plan


def collate_plans(samples: list, horizon: int) -> dict:
    """Pad plans to `horizon`: {clouds, instructions, plan (B, T, 2, 7) float32, valid (B, T) bool}.

    A plan of 0 steps (the episode is done) is a valid sample: every step is padding, which
    teaches the validity logit when to stop."""
    samples = [_fields(s) for s in samples]
    B = len(samples)
    plan = np.tile(IDENTITY_POSE, (B, horizon, 2, 1))
    valid = np.zeros((B, horizon), dtype=bool)
    for b, (_, instruction, poses) in enumerate(samples):
        poses = np.zeros((0, 2, 7)) if np.size(poses) == 0 else as_plan(poses)
        if len(poses) > horizon:
            raise ValueError(
                f"a plan for {instruction!r} has {len(poses)} steps, more than the horizon {horizon}; raise --horizon"
            )
        plan[b, : len(poses)] = poses
        valid[b, : len(poses)] = True
    return {
        "clouds": [s[0] for s in samples],
        "instructions": [s[1] for s in samples],
        "plan": torch.from_numpy(plan).float(),
        "valid": torch.from_numpy(valid),
    }


def open_dataset(cfg: TrainConfig) -> Dataset:
    if cfg.synthetic > 0:
        return SyntheticPickPlace(cfg.synthetic, seed=cfg.seed)
    for path in (cfg.data, *cfg.recovery_data):
        if not Path(path).is_dir():
            raise SystemExit(f"error: {path} is not a directory; record episodes with the simulator first")
    module_name, _, attr = cfg.dataset_factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"error: cannot load the dataset factory {cfg.dataset_factory!r} ({e}); pass --dataset-factory module:callable") from None
    from threedmoe_ros.data.dataset import EpisodeDataset, InMemoryDataset

    parts = [factory(Path(cfg.data))] + [EpisodeDataset(path, only_success=False) for path in cfg.recovery_data]
    if len(parts[0]) == 0:
        raise SystemExit(f"error: --data {cfg.data} holds no training samples")
    if cfg.cache_points > 0:
        parts = [InMemoryDataset(part, max_points=cfg.cache_points, seed=cfg.seed) for part in parts]
    return parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)


# ----- training -----------------------------------------------------------------------------------

def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _loop(loader: DataLoader):
    while True:  # steps, not epochs: a small dataset is simply seen more often
        yield from loader


def train(cfg: TrainConfig, policy_config: PolicyConfig, dataset: Dataset, resume: bool = False, progress: bool = True) -> Policy:
    """Train and checkpoint into cfg.out; returns the policy with the weights the checkpoint holds."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "train_state.pt"
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)

    step = 0
    if resume:
        if not state_file.is_file():
            raise SystemExit(f"error: --resume but {state_file} does not exist; start without --resume")
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        policy_config = PolicyConfig.from_dict(state["policy_config"])
    policy = Policy(policy_config).to(device)
    optimizer = torch.optim.AdamW(
        [p for p in policy.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95)
    )
    ema = copy.deepcopy(policy).requires_grad_(False) if cfg.ema_decay > 0 else None
    if resume:
        policy.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
    (out / "train.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")

    horizon = policy_config.head.horizon
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=len(dataset) >= cfg.batch_size,
        num_workers=cfg.num_workers, collate_fn=functools.partial(collate_plans, horizon=horizon),
        generator=torch.Generator().manual_seed(cfg.seed + step),
    )
    batches = _loop(loader)
    writer = SummaryWriter(str(out / "tb"), purge_step=step)
    csv_file = (out / "metrics.csv").open("a", newline="")
    fields = ["step", "loss", "denoise", "validity", "pointer", "lr", "grad_norm", "samples_per_s"]
    log = csv.DictWriter(csv_file, fields, extrasaction="ignore")
    if csv_file.tell() == 0:
        log.writeheader()

    def checkpoint() -> None:
        (ema or policy).save_pretrained(out / "checkpoint")
        torch.save(
            {
                "step": step, "model": policy.state_dict(), "optimizer": optimizer.state_dict(),
                "ema": None if ema is None else ema.state_dict(), "torch_rng": torch.get_rng_state(),
                "policy_config": policy_config.to_dict(),
            },
            out / "train_state.pt.tmp",
        )
        (out / "train_state.pt.tmp").replace(state_file)

    policy.train()
    bar = tqdm(total=cfg.max_steps, initial=step, desc="pose-dit", unit="step", disable=not progress, dynamic_ncols=True)
    window, seen, tic = [], 0, time.perf_counter()
    while step < cfg.max_steps:
        batch = next(batches)
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, info = policy(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                # Warm the average up (1 − 1/(step+10) early on) so early checkpoints are not the init.
                decay = min(cfg.ema_decay, 1 - 1 / (step + 10))
                for e, p in zip(ema.parameters(), policy.parameters()):
                    e.lerp_(p, 1 - decay)
        step += 1
        seen += len(batch["instructions"])
        window.append(info)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            row = {k: float(np.mean([w[k] for w in window if k in w])) for k in window[-1]}
            row.update(step=step, lr=lr, grad_norm=float(grad_norm), samples_per_s=seen / (time.perf_counter() - tic))
            log.writerow(row)
            csv_file.flush()
            for k, v in row.items():
                if k != "step":
                    writer.add_scalar(f"train/{k}", v, step)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            window, seen, tic = [], 0, time.perf_counter()
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            checkpoint()
    bar.close()
    writer.close()
    csv_file.close()
    plot_curves(out)
    return (ema or policy).eval()


def plot_curves(out: str | Path) -> Path | None:
    """metrics.csv → curves.png (loss terms against step, log scale); None without matplotlib or data."""
    out = Path(out)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("loss", "denoise", "validity", "pointer"):
        values = [float(r[key]) if r.get(key) else float("nan") for r in rows]
        ax.plot(steps, values, label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(f"Pose-DiT training: {out.name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    return out / "curves.png"


# ----- command line -------------------------------------------------------------------------------

def _field_help(name: str) -> str:
    """The comment above a TrainConfig field, as its --help text."""
    import inspect
    import re

    source = inspect.getsource(TrainConfig)
    match = re.search(r"((?:\n    #[^\n]*)+)\n    " + name + r":", source)
    text = " ".join(line.strip().lstrip("#").strip() for line in match.group(1).strip().splitlines()) if match else name.replace("_", " ")
    return text.replace("%", "%%")  # argparse formats help strings with %


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, PolicyConfig, bool]:
    p = argparse.ArgumentParser(prog="threedmoe-train-pose-dit", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", help="directory of recorded episodes")
    p.add_argument("--out", required=True, help="run directory (checkpoint, logs)")
    p.add_argument("--synthetic", type=int, default=0, help="train on N generated samples instead of --data")
    p.add_argument("--dataset-factory", default=DEFAULT_DATASET_FACTORY, help="module:callable(dir) -> Dataset")
    p.add_argument("--recovery-data", nargs="*", default=[], metavar="DIR",
                   help="recovery episodes (threedmoe-collect --policy): every state, labelled by the oracle")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("out", "data", "synthetic", "dataset_factory", "recovery_data"):
            p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                           help=_field_help(f.name))
    g = p.add_argument_group("policy (ignored with --resume: the run's own config is used)")
    g.add_argument("--scheduler", default="rectified_flow", choices=["rectified_flow", "ddpm"],
                   help="training objective and sampler (rectified flow is the paper's)")
    g.add_argument("--head-output", default="pointer", choices=["pointer", "direct"],
                   help="pointer: poses relative to the scene's objects; direct: the paper's plain regression head")
    g.add_argument("--horizon", type=int, default=PoseDiTConfig.horizon, help="most plan steps")
    g.add_argument("--hidden-size", type=int, default=PoseDiTConfig.hidden_size)
    g.add_argument("--depth", type=int, default=PoseDiTConfig.depth)
    g.add_argument("--rotation", default="yaw", choices=["yaw", "euler"])
    g.add_argument("--yaw-symmetry", type=int, default=PoseCodecConfig.yaw_symmetry)
    g.add_argument("--timestep-sampling", default="logit_normal", choices=["uniform", "logit_normal"],
                   help="rectified flow only")
    a = p.parse_args(argv)
    try:
        a.recovery_data = tuple(a.recovery_data)
        cfg = TrainConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)})
        codec = PoseCodecConfig(rotation=a.rotation, yaw_symmetry=a.yaw_symmetry)
        base = PolicyConfig()
        head = dataclasses.replace(base.head, pose_dim=codec.dim, horizon=a.horizon, hidden_size=a.hidden_size, depth=a.depth,
                                   output=a.head_output)
        scheduler_config = {"timestep_sampling": a.timestep_sampling} if a.scheduler == "rectified_flow" else {}
        policy_config = PolicyConfig(codec=codec, head=head, scheduler=a.scheduler, scheduler_config=scheduler_config)
    except ValueError as e:
        p.error(str(e))
    return cfg, policy_config, a.resume


def main(argv: list[str] | None = None) -> int:
    cfg, policy_config, resume = parse_args(argv)
    dataset = open_dataset(cfg)
    try:
        train(cfg, policy_config, dataset, resume=resume)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"checkpoint: {Path(cfg.out) / 'checkpoint'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
