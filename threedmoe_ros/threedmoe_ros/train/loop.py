"""The one training loop: Pose-DiT, Stage II and the object encoder all train through `fit`, on Hugging Face accelerate.

    threedmoe-train-pose-dit --data DIR --out runs/pose_dit                      # one process, CPU or GPU
    accelerate launch --num_processes 4 -m threedmoe_ros.train.pose_dit --data DIR --out runs/pose_dit
    accelerate launch --multi_gpu --num_processes 2 -m threedmoe_ros.train.stage2 --device cpu ...  # 2 CPU processes (gloo)

A stage hands `fit` a module whose `forward(batch)` returns (loss, info: dict of floats), a dataset,
a collate function and an `export` that writes the stage's own checkpoint (Policy.save_pretrained,
Stage II's encoder config and weights). The loop owns the rest, once for every stage:
  - AdamW on the parameters that require grad; linear warm-up then cosine decay to min_lr_ratio;
    gradient clipping; gradient accumulation; accelerate's mixed precision (bf16, fp16 on CUDA).
  - Data order: every epoch is a permutation seeded by (seed, epoch), cut into global batches of
    batch_size × processes, each process taking its own slice; a resumed run skips exactly the
    micro-batches already seen, so it sees the batches an uninterrupted run would.
  - EMA of the trainable weights (what the checkpoint holds when ema_decay > 0).
  - Logs on the main process: a progress bar, metrics.csv, TensorBoard (tb/).
  - Every save_every steps and at the end: OUT/checkpoint (export) and OUT/train_state/ (trainable
    weights and persistent buffers, optimiser, scheduler, EMA, step, and each process's RNG), both
    written under temporary names and renamed, so a crash never leaves a torn checkpoint. `resume`
    continues from train_state/ to the same loss curve an uninterrupted run draws.
Frozen weights are never in train_state/: they are rebuilt from the stage's config (the base LM
from its preset), which is why the state of a run that tunes the 3D-MoE's top is megabytes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import inspect
import json
import math
import pickle
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from threedmoe_ros.models.checkpoint import CheckpointError, move_into_place

STATE_DIR = "train_state"
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class LoopConfig:
    """Optimisation and bookkeeping of a run; every stage's config extends it (saved as train.json)."""

    out: str
    # Optimiser steps of the run; 0 derives them from --epochs and the dataset's size.
    max_steps: int = 0
    # Passes over the training set when --max-steps is 0.
    epochs: int = 1
    # Samples per micro-batch on each process: one optimiser step sees batch_size × processes × grad_accum.
    batch_size: int = 32
    # Micro-batches whose gradients are summed before each optimiser step.
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.01
    # Linear warm-up from 0, then cosine decay to min_lr_ratio × lr at the last step.
    warmup_steps: int = 500
    # Learning rate at the last step, as a fraction of --lr (the cosine ends there).
    min_lr_ratio: float = 0.1
    # Largest gradient norm (0 = no clipping).
    grad_clip: float = 1.0
    # Exponential moving average of the trainable weights, what the checkpoint holds (0 = off).
    ema_decay: float = 0.0
    # accelerate's mixed precision: no | bf16 | fp16 (fp16 on CUDA only).
    mixed_precision: str = "no"
    log_every: int = 50
    save_every: int = 1000
    seed: int = 0
    # "auto": what accelerate finds (a process's GPU, else the CPU); "cpu" forces the CPU.
    device: str = "auto"
    # CPU threads for torch per process (0 = torch's default). One on a small shared machine: two
    # threads on two busy cores spin against each other (measured 7 s/step vs 0.2).
    threads: int = 1
    # DataLoader worker processes (0 = load in the training process).
    num_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "log_every", "save_every"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be an int >= 1, got {getattr(self, name)!r}")
        if self.max_steps < 0 or self.warmup_steps < 0 or self.threads < 0 or self.num_workers < 0:
            raise ValueError("--max-steps, --warmup-steps, --threads and --num-workers must be >= 0")
        if not self.lr > 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("--lr must be > 0 and --weight-decay, --grad-clip >= 0")
        if not 0 <= self.min_lr_ratio <= 1 or not 0 <= self.ema_decay < 1:
            raise ValueError(f"--min-lr-ratio must be in [0, 1] and --ema-decay in [0, 1), got "
                             f"{self.min_lr_ratio}, {self.ema_decay}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"--mixed-precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """The one schedule: linear warm-up to 1, then cosine to min_ratio at `total` (the adaLN-Zero gates
    and fresh LoRA matrices open gently)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class EpochBatches(Sampler):
    """This process's micro-batches of every epoch from `start` (micro-batches already seen) on.

    Epoch e is a permutation seeded by (seed, e), cut into global batches of batch_size × world
    (the last, short one dropped when the set holds at least one whole global batch); process `rank`
    takes slice rank of each. The order is a function of (seed, epoch, position) alone, so every
    process agrees on it and a resumed run continues it exactly."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        if n < 1:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed, self.rank, self.world, self.start = n, batch_size, seed, rank, world, start
        global_batch = batch_size * world
        self.per_epoch = n // global_batch if n >= global_batch else 1

    def batches(self, epoch: int) -> list[list[int]]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)).tolist()
        if self.n < self.batch_size * self.world:  # a tiny set: one global batch, split as evenly as it goes
            order = (order * self.world)[: max(self.n, self.world)]
            return [order[self.rank::self.world]]
        g = self.batch_size * self.world
        return [order[i * g + self.rank * self.batch_size: i * g + (self.rank + 1) * self.batch_size]
                for i in range(self.per_epoch)]

    def __iter__(self) -> Iterator[list[int]]:
        epoch, offset = divmod(self.start, self.per_epoch)
        while True:  # steps, not epochs: the loop decides when to stop
            yield from self.batches(epoch)[offset:]
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:
        return self.per_epoch


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EMA:
    """Exponential moving average of the trainable weights: what the checkpoint holds when ema_decay > 0.

    The average is warmed up (decay 1 − 1/(step+10) early on) so early checkpoints are not the init.
    Shadows are float32 and follow their weights to the device they are on (a GPU after prepare)."""

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], decay: float):
        self.decay, self.params = decay, dict(named_params)
        self.shadow = {n: p.detach().float().clone() for n, p in named_params}

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, 1 - 1 / (step + 10))
        for n, p in self.params.items():
            if self.shadow[n].device != p.device:
                self.shadow[n] = self.shadow[n].to(p.device)
            self.shadow[n].lerp_(p.detach().float(), 1 - decay)

    @torch.no_grad()
    def swap_in(self) -> dict[str, torch.Tensor]:
        """Put the averaged weights into the model; returns the raw ones for `swap_back`."""
        raw = {n: p.detach().clone() for n, p in self.params.items()}
        for n, p in self.params.items():
            p.copy_(self.shadow[n])
        return raw

    @torch.no_grad()
    def swap_back(self, raw: dict[str, torch.Tensor]) -> None:
        for n, p in self.params.items():
            p.copy_(raw[n])


@dataclass
class TrainState:
    """What OUT/train_state/ holds, and how it is written and read: trainable weights and persistent
    buffers (frozen weights are rebuilt from the stage's config), optimiser, scheduler, EMA, step, and
    each process's RNG. Written under a temporary name and renamed, with the stage's own checkpoint
    exported (EMA weights swapped in) before the rename, so a crash never leaves a torn pair."""

    model: nn.Module  # unwrapped: the module whose state_dict names the weights
    names: list[str]  # trainable parameters
    buffer_names: list[str]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: EMA | None
    config: dict

    def load(self, state_dir: Path, process_index: int, processes: int, name: str, main: bool) -> int:
        """Restore everything from state_dir; returns the step it was saved at."""
        try:
            state = torch.load(state_dir / "state.pt", map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise CheckpointError(f"{state_dir / 'state.pt'} is corrupt ({type(exc).__name__}: {exc}); "
                                  "start without --resume") from None
        missing = set(self.names) - set(state["trainable"])
        if missing:
            raise ValueError(f"{state_dir} does not fit this model (no {sorted(missing)[:3]} …); was it another config?")
        self.model.load_state_dict({**state["trainable"], **state["buffers"]}, strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.shadow = state["ema"]
        if main and state.get("processes", 1) != processes:
            print(f"{name}: warning: the run was checkpointed with {state.get('processes', 1)} processes and continues "
                  f"with {processes}: the batches and the noise will not be the ones it would have drawn")
        rng_file = state_dir / f"rng_{process_index}.pt"
        if rng_file.is_file():
            _set_rng_state(torch.load(rng_file, weights_only=False))
        return state["step"]

    def save(self, accelerator, out: Path, step: int, export: Callable[[nn.Module, Path], Any]) -> None:
        """OUT/checkpoint (export, EMA weights in) and OUT/train_state/, from every process in step."""
        main, state_dir, tmp = accelerator.is_main_process, out / STATE_DIR, out / (STATE_DIR + ".tmp")
        accelerator.wait_for_everyone()
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            live = self.model.state_dict(keep_vars=False)
            torch.save({"step": step, "trainable": {n: live[n].detach().cpu() for n in self.names},
                        "buffers": {n: live[n].detach().cpu() for n in self.buffer_names},
                        "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "ema": None if self.ema is None else self.ema.shadow, "config": self.config,
                        "processes": accelerator.num_processes}, tmp / "state.pt")
        accelerator.wait_for_everyone()
        torch.save(_rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
        accelerator.wait_for_everyone()
        if main:
            raw = self.ema.swap_in() if self.ema is not None else None
            try:
                export(self.model, out / "checkpoint")
            finally:
                if raw is not None:
                    self.ema.swap_back(raw)
            move_into_place(tmp, state_dir)
        accelerator.wait_for_everyone()


@dataclass
class FitResult:
    """What `fit` returns: the trained module (EMA weights in it when EMA is on) and the run's figures."""

    model: nn.Module
    steps: int
    seconds: float
    samples: int
    # Sums over the run of every info value whose key starts with "n_" (counts, e.g. text tokens).
    totals: dict[str, float]
    trainable_params: int


def fit(cfg: LoopConfig, model: nn.Module, dataset: Dataset, collate: Callable[[list], Any],
        export: Callable[[nn.Module, Path], Any], resume: bool = False, progress: bool = True,
        stop_after: int | None = None, name: str = "train") -> FitResult:
    """Train `model` on `dataset` with the settings of `cfg`, checkpointing into cfg.out.

    `export(model, directory)` writes the stage's checkpoint (with the EMA weights swapped in).
    `stop_after` ends the run after that optimiser step with a checkpoint, as a job scheduler's time
    limit would; `resume=True` then continues it. Returns the trained module and the run's figures."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from tqdm import tqdm

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    accelerator = Accelerator(
        cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
        # A batch may leave some parameters out (a no-3D ablation's encoder, an unused MoE expert).
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    main = accelerator.is_main_process
    out = Path(cfg.out)
    if resume and not (out / STATE_DIR / "state.pt").is_file():
        raise FileNotFoundError(f"--resume but {out / STATE_DIR / 'state.pt'} does not exist; start without --resume")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str) + "\n")

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("nothing to train: no parameter of the model requires grad")
    params = [p for _, p in trainable]
    param_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    per_epoch = EpochBatches(len(dataset), cfg.batch_size, cfg.seed, world=accelerator.num_processes).per_epoch
    total = cfg.max_steps or math.ceil(cfg.epochs * per_epoch / cfg.grad_accum)
    if main and total <= cfg.warmup_steps:
        print(f"{name}: warning: {total} steps end inside the {cfg.warmup_steps}-step warm-up, so the learning rate "
              f"never reaches {cfg.lr:g}; lower --warmup-steps")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, cfg.warmup_steps, cfg.min_lr_ratio))
    ema = EMA(trainable, cfg.ema_decay) if cfg.ema_decay > 0 else None
    state = TrainState(model, [n for n, _ in trainable],
                       [k for k in model.state_dict() if k not in param_names],  # persistent buffers (statistics)
                       optimizer, scheduler, ema, dataclasses.asdict(cfg))

    step = 0
    if resume:
        step = state.load(out / STATE_DIR, accelerator.process_index, accelerator.num_processes, name, main)
    else:
        torch.manual_seed(cfg.seed + accelerator.process_index)  # noise and timesteps differ per process
    model, optimizer = accelerator.prepare(model, optimizer)
    state.model = accelerator.unwrap_model(model)

    sampler = EpochBatches(len(dataset), cfg.batch_size, cfg.seed, accelerator.process_index,
                           accelerator.num_processes, start=step * cfg.grad_accum)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.num_workers,
                        # its own generator, so making an iterator never draws from the global RNG
                        generator=torch.Generator().manual_seed(cfg.seed))
    batches = iter(loader)

    log = _MetricsLog(out, step, enabled=main)
    model.train()
    bar = tqdm(total=total, initial=step, desc=name, unit="step", disable=not (progress and main), dynamic_ncols=True)
    samples, t_start = 0, time.perf_counter()
    grad_norm = torch.zeros(())
    end = total if stop_after is None else min(total, stop_after)
    while step < end:
        for _ in range(cfg.grad_accum):
            batch = next(batches)
            with accelerator.accumulate(model):
                loss, info = model(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            n = len(batch[1] if isinstance(batch, (tuple, list)) else batch.get("instructions", next(iter(batch.values()))))
            samples += n
            log.add(n, float(loss.detach()), info)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        if ema is not None:
            ema.update(step)
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == end:
            loss_now = log.flush(accelerator, step=step, lr=lr, grad_norm=float(grad_norm))
            bar.set_postfix(loss=f"{loss_now:.4f}")
        if step % cfg.save_every == 0 or step == end:
            state.save(accelerator, out, step, export)
    bar.close()
    log.close()
    if ema is not None:
        ema.swap_in()  # the run is over: the module keeps the weights the checkpoint holds
    return FitResult(state.model.eval(), step, time.perf_counter() - t_start, samples * accelerator.num_processes,
                     log.totals, sum(p.numel() for p in params))


class _MetricsLog:
    """The run's metrics: a window of per-micro-batch values averaged over processes every log_every
    steps into metrics.csv and TensorBoard (main process), and totals of the "n_" counts. A resumed
    run drops the rows logged after its checkpoint (a crash between two checkpoints), so the file
    holds one continuous curve."""

    def __init__(self, out: Path, step: int, enabled: bool):
        self.enabled, self.rows, self.writer = enabled, [], None
        self.window: list[dict] = []
        self.totals: dict[str, float] = {}
        self.seen, self.tic = 0, time.perf_counter()
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.path = out / "metrics.csv"
        if step > 0 and self.path.is_file():
            with self.path.open() as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        elif self.path.is_file():
            self.path.unlink()
        self.writer = SummaryWriter(str(out / "tb"), purge_step=step if step > 0 else None)

    def add(self, samples: int, loss: float, info: dict) -> None:
        """One micro-batch of this process."""
        self.seen += samples
        self.window.append({"loss": loss, **info})
        for key, value in info.items():
            if key.startswith("n_"):
                self.totals[key] = self.totals.get(key, 0.0) + float(value)

    def flush(self, accelerator, **extra) -> float:
        """Average the window over processes (every process must call this), write a row; returns the loss."""
        keys = [k for k in self.window[-1] if not k.startswith("n_")]
        means = torch.tensor([float(np.mean([w[k] for w in self.window if k in w])) for k in keys], dtype=torch.float64)
        means = accelerator.reduce(means.to(accelerator.device), reduction="mean").cpu()
        row = dict(zip(keys, means.tolist()))
        row.update(extra, samples_per_s=self.seen * accelerator.num_processes / (time.perf_counter() - self.tic))
        self.write(row)
        self.window, self.seen, self.tic = [], 0, time.perf_counter()
        return row["loss"]

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        fields = ["step"] + [k for k in dict.fromkeys(k for r in self.rows for k in r) if k != "step"]
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(self.rows)
        tmp.replace(self.path)
        for key, value in row.items():
            if key != "step":
                self.writer.add_scalar(f"train/{key}", float(value), int(row["step"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ----- command lines generated from the config dataclasses ----------------------------------------

def _flag(name: str) -> str:
    return name.replace("_", "-")


def field_help(cls: type, name: str) -> str:
    """The comment above a dataclass field (in `cls` or a base class), as its --help text."""
    for klass in cls.__mro__:
        if not dataclasses.is_dataclass(klass):
            continue
        match = re.search(r"((?:\n    #[^\n]*)+)\n    " + name + r":", inspect.getsource(klass))
        if match:
            text = " ".join(line.strip().lstrip("#").strip() for line in match.group(1).strip().splitlines())
            return text.replace("%", "%%")  # argparse formats help strings with %
    return name.replace("_", " ")


def add_config_arguments(parser: argparse.ArgumentParser | Any, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One --flag per field of dataclass `cls` (defaults and help from the class), except `skip`."""
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name == "out":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = str(f.type)
        options: dict = {"default": default, "help": field_help(cls, f.name)}
        if "bool" in kind:
            options["action"] = argparse.BooleanOptionalAction
        elif "tuple" in kind or "list" in kind:
            options.update(nargs="*", type=str)
        else:
            options["type"] = int if kind.startswith("int") else float if kind.startswith("float") else str
        parser.add_argument("--" + _flag(f.name), **options)


def config_from_arguments(cls: type, args: argparse.Namespace, **overrides):
    """The dataclass `cls` from parsed arguments (fields missing from `args` keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    for f in dataclasses.fields(cls):
        if f.name in values and isinstance(values[f.name], list) and "tuple" in str(f.type):
            values[f.name] = tuple(values[f.name])
    return cls(**{**values, **overrides})
