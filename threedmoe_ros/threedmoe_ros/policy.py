"""The policy: the model that learns, one ROS-free object that training builds and the planner serves.

    policy = Policy.from_pretrained("runs/pose_dit/checkpoint")
    loss, info = policy(batch)                      # training
    planner = Planner(policy)                       # inference: see planner.py

A Policy is condition encoder → Pose-DiT head → pose codec, with the scheduler that trains the head,
in the style of lerobot's DiffusionModel: `forward(batch) -> (loss, info)` for training, `condition`
for what the head is conditioned on, and `save_pretrained` / `from_pretrained` on a directory holding
config.json + model.safetensors, whatever the encoder (an LM's own weights are never saved: it is
rebuilt from its preset, and only what the policy fitted or trained of it travels). The pose statistics
are buffers of the codec, so they travel in model.safetensors with the weights. Sizes the parts decide
are derived, never configured: the head's condition width is the encoder's `cond_dim`, its metric scale
the codec's box. Everything about serving it (sampling with a frozen or half-precision head, validation,
devices, seeds, cutting, refinement, timing) is the Planner's (planner.py, serving.py).

The encoder is chosen by name (`encoder`) from ENCODERS, the one registry that training
(train/pose_dit.py) and loading use: "light" is the development encoder, "lm" the 3D-MoE beside it
(models/lm_condition.py: the LM frozen, or its top layers upcycled to experts and LoRA-tuned).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

# CheckpointError is re-exported: nodes, evaluation and tests catch it from here.
from threedmoe_ros.models.checkpoint import CheckpointError, load_module, read_json, save_tensors, write_json
from threedmoe_ros.models.condition import Condition, ConditionEncoder
from threedmoe_ros.models.pose_codec import PoseCodec, PoseCodecConfig
from threedmoe_ros.models.pose_dit import PoseDiT, PoseDiTConfig
from threedmoe_ros.models.schedulers import SCHEDULERS, make_scheduler
from threedmoe_ros.types import Cloud
from threedmoe_ros.validation import MAX_INSTRUCTION_CHARS

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CONFIG_VERSION = 1
# Sizes that config.json files once carried and the Policy now derives (see Policy.__init__): loading ignores them.
DERIVED_HEAD_FIELDS = ("cond_dim", "unit_m")

# name → (module, its config dataclass, its ConditionEncoder), imported on first use, so a policy with
# the light encoder never imports transformers. Training's --encoder choices are these names.
ENCODERS: dict[str, tuple[str, str, str]] = {
    "light": ("threedmoe_ros.models.light_encoder", "LightEncoderConfig", "LightConditionEncoder"),
    "lm": ("threedmoe_ros.models.lm_condition", "LMConditionConfig", "LMConditionEncoder"),
}


def encoder_entry(name: str) -> tuple[type, type[ConditionEncoder]]:
    """(config class, encoder class) registered as `name`; ValueError naming the known ones."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; registered: {sorted(ENCODERS)}")
    module, config_class, encoder_class = ENCODERS[name]
    m = importlib.import_module(module)
    return getattr(m, config_class), getattr(m, encoder_class)


@dataclass
class PolicyConfig:
    """Everything needed to rebuild a Policy; saved as config.json next to the weights."""

    # Pose encoding: workspace box and rotation encoding (see models/pose_codec.py).
    codec: PoseCodecConfig = field(default_factory=PoseCodecConfig)
    # Pose-DiT shape. pose_dim must equal codec.dim; the condition width and the metric scale are derived
    # (see Policy). The project's head points at the scene's objects (output="pointer"; "direct" is the
    # paper's plain head).
    head: PoseDiTConfig = field(default_factory=lambda: PoseDiTConfig(output="pointer"))
    # Condition encoder, by registered name (ENCODERS), and the fields of its config dataclass.
    encoder: str = "light"
    encoder_config: dict = field(default_factory=dict)
    # "rectified_flow" (the paper's) or "ddpm"; scheduler_config holds its dataclass fields.
    scheduler: str = "rectified_flow"
    scheduler_config: dict = field(default_factory=dict)
    # Longest instruction accepted, in characters: longer text is a client bug, not a task. The
    # default is the one limit of threedmoe_ros.validation, which every node uses too.
    max_instruction_chars: int = MAX_INSTRUCTION_CHARS
    # Seed of a planner's own generator (used when Planner.plan gets no seed; Planner.reset rewinds it).
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.codec, dict):
            self.codec = PoseCodecConfig(**self.codec)
        if isinstance(self.head, dict):
            self.head = PoseDiTConfig(**self.head)
        if self.head.pose_dim != self.codec.dim:
            raise ValueError(
                f"PolicyConfig: head.pose_dim={self.head.pose_dim} but the {self.codec.rotation!r} pose encoding has "
                f"d={self.codec.dim}; set head.pose_dim={self.codec.dim}"
            )
        try:
            encoder_entry(self.encoder)
        except ValueError as e:
            raise ValueError(f"PolicyConfig: {e}") from None
        self.encoder_config_object()  # validates the fields
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"PolicyConfig: unknown scheduler {self.scheduler!r}; choose one of {sorted(SCHEDULERS)}")
        make_scheduler(self.scheduler, **self.scheduler_config)  # validates the fields
        if not isinstance(self.max_instruction_chars, int) or self.max_instruction_chars < 1:
            raise ValueError(f"PolicyConfig.max_instruction_chars must be a positive int, got {self.max_instruction_chars!r}")

    def encoder_config_object(self):
        config_class = encoder_entry(self.encoder)[0]
        try:
            return config_class(**self.encoder_config)
        except TypeError as e:
            raise ValueError(f"PolicyConfig.encoder_config does not fit {config_class.__name__}: {e}") from None

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "PolicyConfig":
        d = dict(d)
        version = d.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ValueError(f"PolicyConfig version {version} is not supported (this code reads version {CONFIG_VERSION})")
        if isinstance(d.get("head"), dict):
            # The encoder's width (the weights' shapes check it) and half the codec's box (which those
            # files always held, derived from their codec).
            d["head"] = {k: v for k, v in d["head"].items() if k not in DERIVED_HEAD_FIELDS}
        return cls(**d)


class Policy(nn.Module):
    """Condition encoder + Pose-DiT + pose codec + scheduler: trained by `forward`, served by a Planner."""

    def __init__(self, config: PolicyConfig | None = None, encoder: ConditionEncoder | None = None):
        super().__init__()
        self.config = config = config or PolicyConfig()
        if encoder is None:
            encoder = encoder_entry(config.encoder)[1](config.encoder_config_object())
        self.encoder = encoder
        # The head reads the encoder's tokens, and the pointer's tolerances are metric while the head works
        # in the codec's normalised space: both sizes come from the parts, never from the config.
        self.head = PoseDiT(config.head, cond_dim=encoder.cond_dim, unit_m=config.codec.unit_m)
        self.codec = PoseCodec(config.codec)
        self.scheduler = make_scheduler(config.scheduler, **config.scheduler_config)
        # Optional question answerer: a callable (cloud, question) -> str that Planner.answer calls. The lm
        # encoder (the 3D-MoE) answers questions itself; the light encoder has no language model.
        self.answerer: Callable[[Cloud, str], str] | None = getattr(encoder, "answer", None)
        # What plans are stamped with (PickPlacePlan.model_id): the checkpoint directory once loaded.
        self.model_id = "untrained"

    @property
    def device(self) -> torch.device:
        return self.head.null_token.device

    # ----- training -----------------------------------------------------------------------------
    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: clouds list[Cloud], instructions list[str], plan (B, T, 2, 7), valid (B, T) bool → (loss, info).
        A batch may carry `encoder_inputs` instead of clouds: what an encoder with a frozen part returned from
        `precompute` for each sample."""
        if "encoder_inputs" in batch:  # the encoder's frozen part, precomputed once per sample
            cond = self.normalize_condition(Condition.of(self.encoder.encode(batch["encoder_inputs"], batch["instructions"])))
        else:
            cond = self.condition(batch["clouds"], batch["instructions"])
        plan = batch["plan"].to(self.device, torch.float32)
        valid = batch["valid"].to(self.device)
        x = self.codec.encode(plan)  # (B, T, 2, d)
        # Padded steps are zeros in the normalised space (see models/pose_dit.py for why).
        x = torch.where(valid[..., None, None], x, torch.zeros_like(x))
        loss, info = self.scheduler.loss(self.head, x, cond, None, valid)
        aux = self.encoder.aux_loss() if hasattr(self.encoder, "aux_loss") else None
        if aux is not None:  # the experts' Switch balance loss (a 3D-MoE with a trained top)
            info["aux_loss"] = aux.item()
            loss = loss + aux
        return loss, info

    def condition(self, clouds: list[Cloud], instructions: list[str]) -> Condition:
        """The encoder's condition with its anchors mapped into the codec's normalised space."""
        return self.normalize_condition(Condition.of(self.encoder(clouds, instructions)))

    def normalize_condition(self, cond: Condition) -> Condition:
        """An encoder's condition (anchors in metres, world frame) with its anchors in the codec's normalised space."""
        if cond.anchors is None:
            return cond
        box = torch.cat([self.codec.normalize_xyz(cond.boxes[..., :2]), self.codec.normalize_xyz(cond.boxes[..., 2:])], -1)
        anchor_mask = cond.anchor_mask if cond.anchor_mask is not None else torch.ones_like(cond.mask)
        return cond._replace(anchors=self.codec.normalize_xyz(cond.anchors), boxes=box, anchor_mask=anchor_mask)

    # ----- checkpoints --------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write config.json and model.safetensors (head, codec statistics and the encoder's weights: for the
        lm encoder its alignment, projections and a trained top's LoRA and routers, never the LM's own, which
        is rebuilt from its preset) into directory `path`. Each piece is written atomically (models/checkpoint.py)."""
        path = Path(path)
        save_tensors(self, path / WEIGHTS_NAME)  # the whole module: tensors it shares stored once
        write_json(self.config.to_dict(), path / CONFIG_NAME)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "Policy":
        """Load a directory written by save_pretrained. Raises CheckpointError naming what is wrong."""
        path = Path(path)
        hint = "train one with `threedmoe-train-pose-dit --data DIR --out DIR` or pass the directory that holds it"
        if not path.is_dir():
            raise CheckpointError(f"policy checkpoint {path} is not a directory; {hint}")
        config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        for f in (config_file, weights_file):
            if not f.is_file():
                raise CheckpointError(f"policy checkpoint {path} has no {f.name}; {hint}")
        raw = read_json(config_file, "policy config")
        try:
            _check_types(raw, _reference_config(raw), "")
            config = PolicyConfig.from_dict(raw)
            if isinstance(config.seed, bool) or not isinstance(config.seed, int):
                raise TypeError(f"seed must be an int, got {config.seed!r}")
            encoder_entry(config.encoder)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RuntimeError) as e:
            raise CheckpointError(
                f"{config_file} is not a valid policy config ({type(e).__name__}: {e}); fix that field, "
                "re-save the checkpoint or retrain"
            ) from None
        try:
            # Building the modules checks every size and type the dataclasses do not.
            policy = cls(config)
        except (OSError, TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RuntimeError) as e:
            raise CheckpointError(
                f"{config_file} is not a valid policy config ({type(e).__name__}: {e}); fix that field, "
                "re-save the checkpoint or retrain"
            ) from None
        load_module(policy, weights_file)  # every weight, by name and shape (CheckpointError otherwise)
        policy.model_id = path.resolve().name
        return policy.to(map_location).eval()

    def num_parameters(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"encoder": count(self.encoder), "head": count(self.head)}


def _reference_config(raw: dict) -> dict:
    """The default config, with the defaults of the encoder and scheduler `raw` names: what `_check_types` compares to."""
    reference = PolicyConfig().to_dict()
    for name, default in (("encoder_config", lambda: encoder_entry(raw.get("encoder", "light"))[0]()),
                          ("scheduler_config", lambda: make_scheduler(raw.get("scheduler", "rectified_flow")))):
        try:
            reference[name] = dataclasses.asdict(default())
        except (TypeError, ValueError, KeyError, ImportError):
            pass  # an unknown name: PolicyConfig says so
    return reference


def _check_types(value, reference, where: str) -> None:
    """Every field has its default's JSON type (an int may stand for a float), nested ones too: the
    dataclasses accept e.g. "pool_condition": "x" or "horizon": true without a word."""
    kinds = ((bool, (bool,)), (int, (int,)), (float, (int, float)), (str, (str,)), (list, (list,)),
             (tuple, (list,)), (dict, (dict,)))
    for kind, accepted in kinds:
        if isinstance(reference, kind):
            if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
                raise TypeError(f"{where} must be a {kind.__name__}, got {value!r}")
            break
    if isinstance(reference, dict):
        for key in value.keys() & reference.keys():
            _check_types(value[key], reference[key], f"{where}.{key}" if where else key)
    elif isinstance(reference, (list, tuple)) and reference:
        for i, item in enumerate(value):
            _check_types(item, reference[0], f"{where}[{i}]")
