"""Train the Pose-DiT policy (condition encoder + Pose-DiT head) on pick-and-place demonstrations.

    threedmoe-train-pose-dit --data DIR --out runs/pose_dit
    threedmoe-train-pose-dit --data DIR --out runs/pose_dit --resume   # continue
    threedmoe-train-pose-dit --synthetic 2000 --out /tmp/run            # no data needed
    threedmoe-train-pose-dit --data DIR --out runs/lm --encoder lm --init-from LIGHT_CHECKPOINT   # the LM policy
    threedmoe-train-pose-dit --data DIR --out runs/x --export-inputs inputs.pt   # compact file for a GPU host
    accelerate launch --num_processes 4 -m threedmoe_ros.train.pose_dit --data DIR --out runs/pose_dit

The training set is any torch Dataset whose items are (cloud: Cloud, instruction: str,
plan: ndarray (T_i, 2, 7)); `collate_plans` pads the plans to the horizon T and returns the
validity mask the head learns to predict. `--data DIR` opens the simulator's recorded episodes
through the factory named by `--dataset-factory` (module:callable taking the directory; default
data.dataset.EpisodeDataset, whose samples carry .cloud/.instruction/.plan).

What a run leaves in --out:
  checkpoint/    the policy (config.json + model.safetensors; EMA weights when EMA is on), what
                 Policy.from_pretrained and the policy node load
  train_state/   optimiser, step, trainable weights, EMA and RNG state: what --resume continues from
  train.json     the training settings; metrics.csv, tb/ (TensorBoard) and curves.png the curves
  encoder_inputs.pt   the lm encoder's objects and LM states of every sample (--encoder lm; or --encoder-inputs)
The loop, its options and multi-process training are train/loop.py's.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from threedmoe_ros.models.checkpoint import CheckpointError, atomic, read_json
from threedmoe_ros.models.light_encoder import LightEncoderConfig
from threedmoe_ros.models.pose_codec import PoseCodecConfig
from threedmoe_ros.models.pose_dit import PoseDiTConfig
from threedmoe_ros.models.schedulers import SCHEDULERS
from threedmoe_ros.policy import ENCODERS, Policy, PolicyConfig
from threedmoe_ros.data.synthetic import SyntheticPickPlace
from threedmoe_ros.train.loop import LoopConfig, add_config_arguments, config_from_arguments, fit
from threedmoe_ros.types import Cloud, as_plan

DEFAULT_DATASET_FACTORY = "threedmoe_ros.data.dataset:EpisodeDataset"
LM_READ = {"both": (True, True), "objects": (True, False), "instruction": (False, True), "none": (False, False)}
IDENTITY_POSE = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])


@dataclass
class TrainConfig(LoopConfig):
    """Settings of one Pose-DiT run (saved as train.json); the optimisation fields are the loop's."""

    data: str | None = None
    # Directories of recovery episodes (threedmoe-collect --policy: the policy acted, the oracle labelled
    # every state it reached). Read whether or not the episode succeeded: the labels are the oracle's.
    recovery_data: tuple[str, ...] = ()
    # Use a generated SyntheticPickPlace set of this many samples instead of --data (smoke tests).
    synthetic: int = 0
    dataset_factory: str = DEFAULT_DATASET_FACTORY
    # Decode every episode once and keep samples in memory with clouds thinned to this many points
    # (object points always kept); 0 reads bags on demand (slow: samples are drawn in random order).
    cache_points: int = 4096
    # Condition encoder, one of policy.ENCODERS: light (trained with the head) or lm (the 3D-MoE: the LM's states
    # beside the light encoder's features, models/lm_condition.py).
    encoder: str = "light"
    # lm only: the LM preset, the decoder layer whose states the head reads, the prompt order, which states it reads
    # (objects, instruction or both), and how many simulator scenes fit the object-token alignment.
    lm_llm: str = "smollm2-135m"
    lm_layer: int = 15
    lm_order: str = "instruction_first"
    lm_read: str = "both"
    align_scenes: int = 300
    # lm only: the 3D-MoE's trained top (models/lm_condition.py): how many of the read layer's layers train, with
    # which experts (a MOE_PRESETS name, or none for dense) and LoRA preset; 0 keeps the LM frozen. The layers
    # below are cached once per sample; the top trains with the head on the policy's loss (plus the balance loss).
    lm_tune_layers: int = 0
    lm_moe: str | None = None
    lm_lora: str = "none"
    # lm only: a Stage II checkpoint (threedmoe-train-stage2 OUT/checkpoint) whose trained top the policy starts from.
    lm_init_top: str | None = None
    # lm only: where the precomputed LM states are kept (default OUT/encoder_inputs.pt); runs that share
    # data and LM settings can share the file, since the LM runs once per sample.
    encoder_inputs: str | None = None
    # Start from this policy checkpoint's weights and config (fine-tuning on new data); ignored with
    # --resume. --top-color may widen its light encoder: the new inputs start at zero weight, so the
    # widened policy plans exactly as the checkpoint did before the first step.
    init_from: str | None = None
    # Light encoder: add each object's top-face colour in CIELAB to its features (models/light_encoder.py).
    top_color: bool = False
    # The objects training sees (models/light_encoder.py, also the lm encoder's light side): how the cloud
    # is grouped (auto: labels when present; segment: as a camera's cloud is, errors and all), whether
    # colours are white-balanced, and a pretrained object encoder's features in place of the colour ones
    # (empty: explicit). None keeps what the --init-from checkpoint (or the encoder's default) has.
    grouping: str | None = None
    white_balance: bool | None = None
    object_encoder: str | None = None
    max_steps: int = 20_000
    warmup_steps: int = 500
    # Exponential moving average of the weights, what the checkpoint holds (0 = off). Diffusion
    # heads sample visibly better from EMA weights (DiT, diffusion_policy).
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data is None and self.synthetic <= 0:
            raise ValueError("give --data DIR (recorded episodes) or --synthetic N")
        if self.data is not None and self.synthetic > 0:
            raise ValueError("give either --data or --synthetic, not both")
        if self.encoder not in ENCODERS:
            raise ValueError(f"--encoder must be one of {', '.join(sorted(ENCODERS))}, got {self.encoder!r}")
        if self.lm_read not in LM_READ:
            raise ValueError(f"--lm-read must be one of {sorted(LM_READ)}, got {self.lm_read!r}")


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
    if Path(cfg.data).is_file():  # a compact file of objects, not clouds (--export-inputs)
        return InputsFile(cfg.data)
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


# ----- what does not train, computed once per sample --------------------------------------------

class Items(Dataset):
    """Ready samples (inputs, instruction, plan) as a Dataset: `inputs` is what a frozen encoder (or its
    frozen part) made of the sample's cloud, so training never runs that part again."""

    def __init__(self, items: list[tuple]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        return self.items[i]


def precompute(dataset: Dataset, fn, batch_size: int, desc: str, progress: bool = True) -> list[tuple]:
    """[(fn's item for the sample, instruction, plan)] over `dataset` in batches, fn(clouds, instructions)
    returning one item per sample."""
    from tqdm import tqdm

    items: list[tuple] = []
    with torch.no_grad(), tqdm(total=len(dataset), desc=desc, unit="sample", disable=not progress,
                               dynamic_ncols=True) as bar:
        for lo in range(0, len(dataset), batch_size):
            samples = [_fields(dataset[i]) for i in range(lo, min(lo + batch_size, len(dataset)))]
            outputs = fn([s[0] for s in samples], [s[1] for s in samples])
            items += [(out, s[1], s[2]) for out, s in zip(outputs, samples)]
            bar.update(len(samples))
    return items


def cached_items(cfg: TrainConfig, path: Path, stamp: dict, compute) -> Items:
    """Items from `path` when it holds the ones `stamp` describes, else compute() and write them there
    (the main process computes; the others wait and read)."""
    from accelerate import PartialState

    state = PartialState(cpu=cfg.device == "cpu")
    items = None
    if state.is_main_process:
        cached = torch.load(path, weights_only=False) if path.is_file() else None
        if cached is not None and cached["stamp"] == stamp:
            items = cached["items"]
        else:
            items = compute()
            with atomic(path) as tmp:
                torch.save({"stamp": stamp, "items": items}, tmp)
    state.wait_for_everyone()
    return Items(items if items is not None else torch.load(path, weights_only=False)["items"])


# ----- training -----------------------------------------------------------------------------------

def build_policy(cfg: TrainConfig, policy_config: PolicyConfig) -> Policy:
    """The policy to train, its encoder the registered one cfg.encoder names (policy.ENCODERS), built from its
    config: the light encoder's, or the lm encoder's from the lm flags."""
    if cfg.encoder == "lm":
        return build_lm_policy(cfg, policy_config)
    return Policy(dataclasses.replace(policy_config, encoder_config={**policy_config.encoder_config, **object_settings(cfg)}))


def object_settings(cfg: TrainConfig) -> dict:
    """The light encoder's object fields the run sets (top_color, grouping, white_balance, object_encoder)."""
    settings = {"top_color": True} if cfg.top_color else {}
    return settings | {k: getattr(cfg, k) for k in ("grouping", "white_balance", "object_encoder") if getattr(cfg, k) is not None}


def build_lm_policy(cfg: TrainConfig, policy_config: PolicyConfig) -> Policy:
    """A policy on the LM condition. From a light policy config (a fresh run or --init-from) its light
    side keeps that encoder's fields; a resumed lm run keeps its own config."""
    from threedmoe_ros.models.lm_condition import LMConditionConfig

    settings = object_settings(cfg)
    if policy_config.encoder != "lm":
        light = dict(policy_config.encoder_config) if policy_config.encoder == "light" else {}
        read_objects, read_instruction = LM_READ[cfg.lm_read]
        encoder_config = LMConditionConfig(light={**light, **settings, "top_color": True}, llm=cfg.lm_llm,
                                           layer=cfg.lm_layer, order=cfg.lm_order,
                                           read_objects=read_objects, read_instruction=read_instruction)
        policy_config = dataclasses.replace(policy_config, encoder="lm", encoder_config=dataclasses.asdict(encoder_config))
    elif settings:  # fine-tuning an lm policy: its light side takes the run's object settings
        encoder_config = dict(policy_config.encoder_config)
        encoder_config["light"] = {**encoder_config.get("light", {}), **settings}
        policy_config = dataclasses.replace(policy_config, encoder_config=encoder_config)
    if cfg.lm_tune_layers:  # the 3D-MoE's top trains (a frozen-LM policy fine-tuned into one, or a fresh one)
        top = {"tune_layers": cfg.lm_tune_layers, "moe": cfg.lm_moe, "lora": cfg.lm_lora}
        policy_config = dataclasses.replace(policy_config, encoder_config={**policy_config.encoder_config, **top})
    policy = Policy(policy_config)
    if cfg.lm_init_top:
        from threedmoe_ros.models.lm_condition import LMConditionEncoder

        stage2 = LMConditionEncoder.from_pretrained(cfg.lm_init_top)
        if stage2.config.cut != policy.encoder.config.cut or stage2.config.moe != policy.encoder.config.moe:
            raise ValueError(f"--lm-init-top {cfg.lm_init_top} has another top (cut {stage2.config.cut}, "
                             f"{stage2.config.moe}) than this run (cut {policy.encoder.config.cut}, {policy.encoder.config.moe})")
        policy.encoder.tuned.load_state_dict(stage2.tuned.state_dict())
    return policy


def alignment_pairs(light_config, scenes: int, progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """Explicit features and words ("red block") of every object in `scenes` simulator scenes of the
    training look, from the validation seeds (never a training or test episode): what fit_alignment
    regresses the object tokens onto. Scenes cycle through the tasks, after a random number of the
    oracle's steps, so stacked and contained objects are seen too."""
    from tqdm import tqdm

    from threedmoe_ros.sim.seeds import seed_for
    from threedmoe_ros.models.light_encoder import object_inputs
    from threedmoe_ros.sim import EnvConfig, TabletopEnv
    from threedmoe_ros.sim.tasks import resolve_tasks

    features, names = [], []
    tasks = resolve_tasks(["training-tasks"])  # held-out tasks stay unseen, their phrasings too
    per_task = -(-scenes // len(tasks))
    with tqdm(total=per_task * len(tasks), desc="alignment scenes", unit="scene", disable=not progress) as bar:
        for t, task in enumerate(tasks):
            with TabletopEnv(EnvConfig(task=task, appearance="train", phrasing="train")) as env:
                for i in range(per_task):
                    seed = seed_for("val", t * per_task + i)
                    obs, info = env.reset(seed)
                    plan = env.oracle_plan()
                    steps = int(np.random.default_rng(seed).integers(0, len(plan) + 1))
                    if steps:
                        obs, _, _, _, info = env.step(plan[:steps])
                    words = {d["label"]: f"{d['color']} {d['kind']}" for d in info["objects"]}
                    scene = object_inputs(obs["cloud"], light_config)
                    for f, label in zip(scene.features, scene.ids):
                        if label in words:
                            features.append(f)
                            names.append(words[label])
                    bar.update()
    return np.asarray(features), names


class InputsFile(Items):
    """Samples of a file written by --export-inputs: (ObjectInputs, instruction, plan), a few kilobytes per
    sample instead of a cloud, plus the objects and words the alignment is fitted on. What a machine
    without the simulator (a GPU host) trains the lm encoder from."""

    def __init__(self, path: str | Path):
        try:
            data = torch.load(path, weights_only=False)
            super().__init__(data["samples"])
            self.alignment, self.light = data["alignment"], data["light"]
        except (OSError, KeyError, TypeError, RuntimeError, EOFError) as e:
            raise SystemExit(f"error: {path} is not a file written by --export-inputs ({type(e).__name__}: {e})") from None


def export_inputs(cfg: TrainConfig, dataset: Dataset, path: str | Path, progress: bool = True) -> Path:
    """Write every sample's ObjectInputs (the lm encoder's light config) with its instruction and plan, and
    the alignment's objects and words, to one file (torch.save, float16 features)."""
    from tqdm import tqdm

    from threedmoe_ros.models.light_encoder import object_inputs
    from threedmoe_ros.models.lm_condition import LMConditionConfig

    light = LMConditionConfig().light_config()  # the lm encoder's object features
    samples = []
    for i in tqdm(range(len(dataset)), desc="export inputs", unit="sample", disable=not progress):
        cloud, instruction, plan = _fields(dataset[i])
        samples.append((object_inputs(cloud, light), instruction, np.asarray(plan, np.float32)))
    path = Path(path)
    alignment = alignment_pairs(light, cfg.align_scenes, progress)
    with atomic(path) as tmp:
        torch.save({"samples": samples, "alignment": alignment, "light": dataclasses.asdict(light)}, tmp)
    return path


def half_states(x):
    """Float tensors of a precomputed sample in float16 (half the memory; the encoder computes in float32)."""
    return x._replace(**{k: v.half().cpu() for k, v in x._asdict().items() if torch.is_tensor(v) and v.is_floating_point()})


def collate_precomputed(samples: list[tuple], horizon: int) -> dict:
    """collate_plans for Items of the lm encoder: the batch carries `encoder_inputs`, not clouds."""
    batch = collate_plans([(None, instruction, plan) for _, instruction, plan in samples], horizon)
    batch["encoder_inputs"] = [s[0] for s in samples]
    return batch


def precomputed_objects(cfg: TrainConfig, policy: Policy, dataset: Dataset, progress: bool) -> Items:
    """The light encoder's ObjectInputs of every sample, kept in OUT/object_inputs.pt while the data and the
    encoder's object settings stay the same."""
    from threedmoe_ros.models.light_encoder import object_inputs

    light = policy.encoder.config
    stamp = {"data": cfg.data, "recovery_data": list(cfg.recovery_data), "synthetic": cfg.synthetic,
             "samples": len(dataset), "cache_points": cfg.cache_points, "seed": cfg.seed, "light": dataclasses.asdict(light)}
    fn = lambda clouds, texts: [object_inputs(c, light) for c in clouds]  # noqa: E731
    return cached_items(cfg, Path(cfg.out) / "object_inputs.pt", stamp,
                        lambda: precompute(dataset, fn, 64, "object inputs", progress))


def precomputed_inputs(cfg: TrainConfig, policy: Policy, dataset: Dataset, progress: bool) -> Items:
    """The lm encoder's frozen part of every sample (objects and LM states), kept in cfg.encoder_inputs
    (default OUT/encoder_inputs.pt) while the data and the LM settings stay the same."""
    from accelerate import PartialState

    device = PartialState(cpu=cfg.device == "cpu").device
    enc = policy.encoder.config
    stamp = {"data": cfg.data, "recovery_data": list(cfg.recovery_data), "synthetic": cfg.synthetic,
             "samples": len(dataset), "cache_points": cfg.cache_points, "seed": cfg.seed,
             "light": enc.light, "llm": enc.llm, "layer": enc.layer, "order": enc.order, "system": enc.system_prompt,
             "cut": enc.cut, "align": float(policy.encoder.align.double().sum())}

    def compute() -> list[tuple]:
        encoder = policy.encoder.to(device)
        if device.type == "cuda":  # the frozen LM in bfloat16 on a GPU; its states are stored in float16
            encoder.lm.to(torch.bfloat16)
        fn = lambda clouds, texts: [half_states(x) for x in encoder.precompute(clouds, texts)]  # noqa: E731
        return precompute(dataset, fn, 64 if device.type == "cuda" else 16, "encoder inputs", progress)

    return cached_items(cfg, Path(cfg.encoder_inputs or Path(cfg.out) / "encoder_inputs.pt"), stamp, compute)


def train(cfg: TrainConfig, policy_config: PolicyConfig, dataset: Dataset, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> Policy:
    """Train and checkpoint into cfg.out (train/loop.py); returns the policy with the weights the checkpoint holds.
    A resumed run takes the policy config its checkpoint records."""
    out = Path(cfg.out)
    resumed = resume and (out / "checkpoint" / "config.json").is_file()
    if resumed:
        policy_config = PolicyConfig.from_dict(read_json(out / "checkpoint" / "config.json", "policy config"))
    source = Policy.from_pretrained(cfg.init_from) if cfg.init_from and not resumed else None
    if source is not None:
        policy_config = source.config
    torch.manual_seed(cfg.seed)  # the same config initialises the same weights
    policy = build_policy(cfg, policy_config)
    if source is not None:
        load_widened(policy, source_state(policy, source))
    collate = functools.partial(collate_plans, horizon=policy.config.head.horizon)
    if isinstance(dataset, InputsFile):
        if cfg.encoder != "lm":
            raise ValueError(f"--data {cfg.data} holds objects, not clouds: it trains --encoder lm only")
        light = policy.encoder.light.config
        if LightEncoderConfig(**dataset.light).n_object_features != light.n_object_features or any(
                dataset.light[k] != getattr(light, k) for k in ("grouping", "max_objects")):
            raise ValueError(f"--data {cfg.data} was exported with object features {dataset.light}, "
                             f"which do not match the policy's {light}")
    if cfg.encoder == "lm":
        if not policy.encoder.align.any():  # fitted once: deterministic, so a resumed run fits the same map
            pairs = getattr(dataset, "alignment", None) or alignment_pairs(policy.encoder.light.config, cfg.align_scenes,
                                                                          progress)
            residual = policy.encoder.fit_alignment(*pairs)
            print(f"object-token alignment: relative residual {residual:.3f}")
        dataset = precomputed_inputs(cfg, policy, dataset, progress)
        collate = functools.partial(collate_precomputed, horizon=policy.config.head.horizon)
    if cfg.encoder == "light":  # the objects of every sample, grouped once (segmentation and a frozen encoder are slow)
        dataset = precomputed_objects(cfg, policy, dataset, progress)
        collate = functools.partial(collate_precomputed, horizon=policy.config.head.horizon)
    result = fit(cfg, policy, dataset, collate, lambda model, path: model.save_pretrained(path), resume=resume,
                 progress=progress, stop_after=stop_after, name="pose-dit")
    from accelerate import PartialState

    if PartialState().is_main_process and (out / "metrics.csv").is_file():  # one process draws the curves
        plot_curves(out)
    return result.model


def source_state(policy: Policy, source: Policy) -> dict[str, torch.Tensor]:
    """The --init-from checkpoint's weights under `policy`'s names: a light source's encoder becomes the
    light side of an lm policy (encoder.* → encoder.light.*)."""
    state = source.state_dict()
    if policy.config.encoder == "lm" and source.config.encoder == "light":
        state = {("encoder.light." + k[len("encoder."):] if k.startswith("encoder.") else k): v for k, v in state.items()}
    return state


def load_widened(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into `model`. A weight that gained input columns (the light encoder's first layer
    when --top-color adds features) takes the old columns and zeros for the new ones, so the model
    computes what the source did. An lm encoder's own parts (alignment, LM projections) may be new: they
    keep their initialisation, zero where it enters the condition. Any other difference is an error."""
    own = model.state_dict()
    lm_own = {k for k in own if k.startswith("encoder.") and not k.startswith("encoder.light.")} \
        if getattr(model, "config", None) is not None and model.config.encoder == "lm" else set()
    if set(own) - lm_own != set(state) - lm_own or not set(state) <= set(own):
        raise ValueError(f"--init-from: parameters differ: missing {sorted(set(own) - set(state))[:5]}, "
                         f"unexpected {sorted(set(state) - set(own))[:5]}")
    for name, value in state.items():
        target = own[name]
        if value.shape == target.shape:
            target.copy_(value)
        elif value.dim() == 2 and value.shape[0] == target.shape[0] and value.shape[1] < target.shape[1]:
            target.zero_()
            target[:, : value.shape[1]] = value
        else:
            raise ValueError(f"--init-from: {name} has shape {tuple(value.shape)}, the policy needs {tuple(target.shape)}")


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

def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, PolicyConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="threedmoe-train-pose-dit", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="run directory (checkpoint, logs)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state/")
    p.add_argument("--export-inputs", metavar="FILE", help="write the data's objects, instructions and plans (and the "
                   "alignment's objects) to FILE for --data FILE on a machine without the simulator, then exit")
    p.add_argument("--stop-after", type=int, help="end after this step with a checkpoint (a time-limited job); "
                                                  "--resume continues")
    add_config_arguments(p, TrainConfig)
    g = p.add_argument_group("policy (ignored with --resume: the run's own config is used)")
    g.add_argument("--scheduler", default="rectified_flow", choices=sorted(SCHEDULERS),
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
        cfg = config_from_arguments(TrainConfig, a)
        codec = PoseCodecConfig(rotation=a.rotation, yaw_symmetry=a.yaw_symmetry)
        base = PolicyConfig()
        head = dataclasses.replace(base.head, pose_dim=codec.dim, horizon=a.horizon, hidden_size=a.hidden_size, depth=a.depth,
                                   output=a.head_output)
        scheduler_config = {"timestep_sampling": a.timestep_sampling} if a.scheduler == "rectified_flow" else {}
        policy_config = PolicyConfig(codec=codec, head=head, scheduler=a.scheduler, scheduler_config=scheduler_config)
    except ValueError as e:
        p.error(str(e))
    return cfg, policy_config, a


def main(argv: list[str] | None = None) -> int:
    cfg, policy_config, args = parse_args(argv)
    dataset = open_dataset(cfg)
    if args.export_inputs:
        print(f"inputs: {export_inputs(cfg, dataset, args.export_inputs)}")
        return 0
    try:
        train(cfg, policy_config, dataset, resume=args.resume, stop_after=args.stop_after)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"checkpoint: {Path(cfg.out) / 'checkpoint'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
