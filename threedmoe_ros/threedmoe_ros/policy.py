"""The policy: the model that learns, one ROS-free object that training builds and the planner serves.

    policy = Policy.from_pretrained("runs/pose_dit/checkpoint")
    loss, info = policy(batch)                      # training
    planner = Planner(policy)                       # inference: see planner.py

A Policy is condition encoder → Pose-DiT head → pose codec, sampled by a scheduler, in the style
of lerobot's DiffusionModel: `forward(batch) -> (loss, info)` for training, `condition` and
`sample` for inference, and `save_pretrained` / `from_pretrained` on a directory holding
config.json + model.safetensors (+ encoder/, the 3D-MoE LLM's own checkpoint: adapters, routers,
point encoder and projection, with the base LLM rebuilt from its preset). The pose statistics are buffers of the codec, so they travel in
model.safetensors with the weights. Everything about serving it (validation, devices, dtypes, the
frozen head, seeds, cutting, refinement, timing) is the Planner's (planner.py).

The encoder sits behind models.condition.ConditionEncoder and is chosen by name (`encoder`):
"light" is the development encoder; the 3D-MoE LLM registers itself with `register_encoder`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from threedmoe_ros.models.condition import Condition, ConditionEncoder
from threedmoe_ros.models.light_encoder import LightConditionEncoder, LightEncoderConfig
from threedmoe_ros.models.pose_codec import PoseCodec, PoseCodecConfig
from threedmoe_ros.models.pose_dit import FrozenPoseDiT, PoseDiT, PoseDiTConfig
from threedmoe_ros.models.schedulers import SCHEDULERS, make_scheduler
from threedmoe_ros.types import Cloud
from threedmoe_ros.validation import MAX_INSTRUCTION_CHARS

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ENCODER_DIR = "encoder"  # an encoder's own checkpoint (the 3D-MoE LLM's save_pretrained)
CONFIG_VERSION = 1

# name → (config dataclass, encoder class taking that config). The 3D-MoE LLM adds itself here.
ENCODERS: dict[str, tuple[type, Callable[[Any], ConditionEncoder]]] = {
    "light": (LightEncoderConfig, LightConditionEncoder),
}


# Encoders registered on first use, so a policy with the light encoder never imports transformers.
LAZY_ENCODERS = {
    "3dmoe": ("threedmoe_ros.models.mm_llm", "MMLLMConfig", "ThreeDMoELLM"),
    "lm": ("threedmoe_ros.models.lm_condition", "LMConditionConfig", "LMConditionEncoder"),
}


def encoder_entry(name: str) -> tuple[type, Callable[[Any], ConditionEncoder]]:
    """(config class, encoder class) registered as `name`; ValueError naming the known ones."""
    if name not in ENCODERS and name in LAZY_ENCODERS:
        import importlib

        module, config_class, encoder_class = LAZY_ENCODERS[name]
        m = importlib.import_module(module)
        register_encoder(name, getattr(m, config_class), getattr(m, encoder_class))
    if name not in ENCODERS:
        raise ValueError(f"PolicyConfig: unknown encoder {name!r}; registered: {sorted({*ENCODERS, *LAZY_ENCODERS})}")
    return ENCODERS[name]


def register_encoder(name: str, config_class: type, encoder_class: Callable[[Any], ConditionEncoder]) -> None:
    """Make `PolicyConfig(encoder=name, encoder_config={...})` build `encoder_class(config_class(**encoder_config))`."""
    ENCODERS[name] = (config_class, encoder_class)


def saves_itself(encoder_class: type) -> bool:
    """True for an encoder with a checkpoint format of its own (the 3D-MoE LLM): a policy keeps it in encoder/."""
    return hasattr(encoder_class, "save_pretrained") and hasattr(encoder_class, "from_pretrained")


class CheckpointError(RuntimeError):
    """A policy checkpoint directory is missing, incomplete or corrupt; the message says which file and what to do."""


@dataclass
class PolicyConfig:
    """Everything needed to rebuild a Policy; saved as config.json next to the weights."""

    # Pose encoding: workspace box and rotation encoding (see models/pose_codec.py).
    codec: PoseCodecConfig = field(default_factory=PoseCodecConfig)
    # Pose-DiT shape. pose_dim must equal codec.dim and cond_dim the encoder's output width; the
    # project's head points at the scene's objects (output="pointer"; "direct" is the paper's plain head).
    head: PoseDiTConfig = field(default_factory=lambda: PoseDiTConfig(cond_dim=LightEncoderConfig().dim, output="pointer"))
    # Condition encoder, by registered name, and the fields of its config dataclass.
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
        # The pointer's tolerances are metric; the head works in the codec's normalised space.
        self.head.unit_m = tuple((h - lo) / 2 for lo, h in zip(self.codec.low, self.codec.high))
        if self.head.pose_dim != self.codec.dim:
            raise ValueError(
                f"PolicyConfig: head.pose_dim={self.head.pose_dim} but the {self.codec.rotation!r} pose encoding has "
                f"d={self.codec.dim}; set head.pose_dim={self.codec.dim}"
            )
        encoder_entry(self.encoder)  # raises ValueError naming the known encoders
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
        return cls(**d)


class Policy(nn.Module):
    """Condition encoder + Pose-DiT + pose codec + scheduler: trained by `forward`, served by a Planner."""

    def __init__(self, config: PolicyConfig | None = None, encoder: ConditionEncoder | None = None):
        super().__init__()
        self.config = config = config or PolicyConfig()
        if encoder is None:
            encoder = encoder_entry(config.encoder)[1](config.encoder_config_object())
        if encoder.cond_dim != config.head.cond_dim:
            raise ValueError(
                f"the {config.encoder!r} encoder emits {encoder.cond_dim}-d tokens but head.cond_dim={config.head.cond_dim}; "
                f"set head.cond_dim={encoder.cond_dim}"
            )
        self.encoder = encoder
        self.head = PoseDiT(config.head)
        self.codec = PoseCodec(config.codec)
        self.scheduler = make_scheduler(config.scheduler, **config.scheduler_config)
        # Optional question answerer (the 3D-MoE LLM): a callable (cloud, question) -> str that
        # Planner.answer calls. The 3D-MoE LLM answers questions itself; the light encoder has no language model.
        self.answerer: Callable[[Cloud, str], str] | None = getattr(encoder, "answer", None)
        # What plans are stamped with (PickPlacePlan.model_id): the checkpoint directory once loaded.
        self.model_id = "untrained"

    @property
    def device(self) -> torch.device:
        return self.head.null_token.device

    # ----- training -----------------------------------------------------------------------------
    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: clouds list[Cloud], instructions list[str], plan (B, T, 2, 7), valid (B, T) bool → (loss, info).
        A batch may carry the encoder's output as `condition` instead (a frozen encoder's, computed once), or
        `encoder_inputs`, what an encoder with a frozen part returned from `precompute` for each sample."""
        if "condition" in batch:
            cond = self.normalize_condition(Condition(*(None if x is None else x.to(self.device) for x in batch["condition"])))
        elif "encoder_inputs" in batch:  # the encoder's frozen part, precomputed once per sample
            cond = self.normalize_condition(Condition.of(self.encoder.encode(batch["encoder_inputs"], batch["instructions"])))
        else:
            cond = self.condition(batch["clouds"], batch["instructions"])
        plan = batch["plan"].to(self.device, torch.float32)
        valid = batch["valid"].to(self.device)
        x = self.codec.encode(plan)  # (B, T, 2, d)
        # Padded steps are zeros in the normalised space (see models/pose_dit.py for why).
        x = torch.where(valid[..., None, None], x, torch.zeros_like(x))
        return self.scheduler.loss(self.head, x, cond, None, valid)

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

    # ----- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, cond: Condition, steps: int | None = None, generator: torch.Generator | None = None,
        head: nn.Module | FrozenPoseDiT | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Condition (from `condition`) → (poses (B, T, 2, 7), valid_prob (B, T)) for the whole horizon.
        `head` is the network sampled with (default: self.head; a Planner passes its frozen or
        half-precision copy)."""
        x, logit = self.scheduler.sample(self.head if head is None else head, cond, None, steps, generator)
        return self.codec.decode(x), torch.sigmoid(logit)

    # ----- checkpoints --------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write config.json and model.safetensors (head, codec statistics, and a light encoder's weights)
        into directory `path`; an encoder with a checkpoint format of its own (the 3D-MoE LLM: point
        encoder, projection, routers and LoRA adapters, never the base LLM) writes it into encoder/."""
        from safetensors.torch import save_file, save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # Write to temporary names and rename, so a crash mid-save never leaves a torn checkpoint.
        if self.encoder_saves_itself:
            tmp_encoder = path / (ENCODER_DIR + ".tmp")
            shutil.rmtree(tmp_encoder, ignore_errors=True)
            self.encoder.save_pretrained(tmp_encoder)
            shutil.rmtree(path / ENCODER_DIR, ignore_errors=True)
            tmp_encoder.replace(path / ENCODER_DIR)
        tmp = path / (WEIGHTS_NAME + ".tmp")
        if self.encoder_saves_itself:
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if not k.startswith("encoder.")}
            save_file(state, str(tmp), metadata={"format": "pt"})
        else:
            save_model(self, str(tmp), metadata={"format": "pt"})  # tensors shared inside the model stored once
        tmp.replace(path / WEIGHTS_NAME)
        (path / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return path

    @property
    def encoder_saves_itself(self) -> bool:
        return saves_itself(type(self.encoder))

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "Policy":
        """Load a directory written by save_pretrained. Raises CheckpointError naming what is wrong."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, load_model

        path = Path(path)
        hint = "train one with `threedmoe-train-pose-dit --data DIR --out DIR` or pass the directory that holds it"
        if not path.is_dir():
            raise CheckpointError(f"policy checkpoint {path} is not a directory; {hint}")
        config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        for f in (config_file, weights_file):
            if not f.is_file():
                raise CheckpointError(f"policy checkpoint {path} has no {f.name}; {hint}")
        try:
            raw = json.loads(config_file.read_text())
            if not isinstance(raw, dict):
                raise TypeError(f"the top level is a {type(raw).__name__}, not an object")

            def check_types(value, reference, where: str) -> None:
                """Every field has its default's JSON type (an int may stand for a float), nested ones too:
                the dataclasses accept e.g. "pool_condition": "x" or "horizon": true without a word."""
                kinds = ((bool, (bool,)), (int, (int,)), (float, (int, float)), (str, (str,)), (list, (list,)),
                         (tuple, (list,)), (dict, (dict,)))
                for kind, accepted in kinds:
                    if isinstance(reference, kind):
                        if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
                            raise TypeError(f"{where} must be a {kind.__name__}, got {value!r}")
                        break
                if isinstance(reference, dict):
                    for key in value.keys() & reference.keys():
                        check_types(value[key], reference[key], f"{where}.{key}" if where else key)
                elif isinstance(reference, (list, tuple)) and reference:
                    for i, item in enumerate(value):
                        check_types(item, reference[0], f"{where}[{i}]")

            reference = PolicyConfig().to_dict()
            for name, default in (("encoder_config", lambda: encoder_entry(raw.get("encoder", "light"))[0]()),
                                  ("scheduler_config", lambda: make_scheduler(raw.get("scheduler", "rectified_flow")))):
                try:  # the defaults of the encoder / scheduler this file names
                    reference[name] = dataclasses.asdict(default())
                except (TypeError, ValueError, KeyError, ImportError):
                    pass  # an unknown name: PolicyConfig says so below
            check_types(raw, reference, "")
            config = PolicyConfig.from_dict(raw)
            if isinstance(config.seed, bool) or not isinstance(config.seed, int):
                raise TypeError(f"seed must be an int, got {config.seed!r}")
            encoder_class = encoder_entry(config.encoder)[1]
        except (OSError, TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RuntimeError) as e:
            raise CheckpointError(
                f"{config_file} is not a valid policy config ({type(e).__name__}: {e}); fix that field, "
                "re-save the checkpoint or retrain"
            ) from None
        encoder = None
        if (path / ENCODER_DIR).is_dir():  # an encoder with its own checkpoint (the 3D-MoE LLM)
            try:
                encoder = encoder_class.from_pretrained(path / ENCODER_DIR)
            except (SafetensorError, OSError, TypeError, ValueError, KeyError, RuntimeError, AttributeError) as e:
                raise CheckpointError(f"{path / ENCODER_DIR} is not a valid encoder checkpoint ({type(e).__name__}: {e}); "
                                      "copy it again or retrain") from None
        elif saves_itself(encoder_class):
            raise CheckpointError(f"policy checkpoint {path} has no {ENCODER_DIR}/ for its {config.encoder!r} encoder; {hint}")
        try:
            # Building the modules checks every size and type the dataclasses do not.
            policy = cls(config, encoder=encoder)
        except (OSError, TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RuntimeError) as e:
            raise CheckpointError(
                f"{config_file} is not a valid policy config ({type(e).__name__}: {e}); fix that field, "
                "re-save the checkpoint or retrain"
            ) from None
        try:
            weights = load_file(str(weights_file), device="cpu")  # reads every tensor: a torn file fails here
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{weights_file} is corrupt or not a safetensors file ({e}); copy it again or retrain") from None
        try:
            if encoder is None:
                load_model(policy, str(weights_file), strict=True)
            else:  # the encoder's weights came from encoder/; model.safetensors holds the rest, all of it
                result = policy.load_state_dict(weights, strict=False)
                missing = [k for k in result.missing_keys if not k.startswith("encoder.")]
                if missing or result.unexpected_keys:
                    raise KeyError(f"missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{weights_file} does not match {config_file}: {e}") from None
        policy.model_id = path.resolve().name
        return policy.to(map_location).eval()

    def num_parameters(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"encoder": count(self.encoder), "head": count(self.head)}

