"""A PointNet++ that says what an object is — its colour name, its kind and its size class — pretrained on
the simulator's per-object labels across the training looks, then frozen: the role the paper (after LEO)
gives its frozen PointNet++. Its features are one candidate for the object tokens, measured against the
explicit features (centroid, extent, colour, …) at equal data and budget (bench/bench_object_features.py).

    encoder = ObjectAttributeEncoder.from_pretrained(path)
    feats = encoder.features(cloud, groups)               # (M, feature_dim), frozen
    names = encoder.predict(cloud, groups)                # {"color": [...], "kind": [...], "size": [...]}

An object's points are resampled to `points` and given to PointNet2Encoder (which centres them and scales
them into the unit sphere) with their white-balanced colours (data/objects.py: white_balance against the
table, so the light's tint does not reach the features); the object's extent is appended, since the unit
sphere hides how big it is. Train with `threedmoe-train-object-encoder`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from threedmoe_ros.data.objects import ObjectGroups, object_colors
from threedmoe_ros.models.checkpoint import CheckpointError, atomic, load_module, read_json, save_tensors, write_json
from threedmoe_ros.models.point_encoder import PointEncoderConfig, PointNet2Encoder
from threedmoe_ros.types import Cloud

# What the heads name: the tabletop's colour names, kinds and block sizes (sim/assets.py; a test keeps
# them equal); bowls and zones have no size.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": ("blue", "red", "green", "orange", "yellow", "purple", "pink", "cyan", "brown", "gray", "white"),
    "kind": ("block", "bowl", "zone"),
    "size": ("none", "small", "medium", "big"),
}


@dataclass
class ObjectAttributeConfig:
    """Sizes of the object encoder (PointNet++ levels as PointEncoderConfig names them)."""

    points: int = 128  # points per object, resampled
    sa_npoints: tuple[int, ...] = (32, 8)
    sa_radii: tuple[float, ...] = (0.3, 0.6)
    sa_nsample: tuple[int, ...] = (16, 8)
    sa_widths: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64), (64,))
    seed: int = 0

    def __post_init__(self) -> None:
        self.pointnet()  # PointEncoderConfig checks the levels

    def pointnet(self) -> PointEncoderConfig:
        return PointEncoderConfig(points_per_object=self.points, sa_npoints=self.sa_npoints, sa_radii=self.sa_radii,
                                  sa_nsample=self.sa_nsample, sa_widths=self.sa_widths)

    @property
    def feature_dim(self) -> int:
        """PointNet++'s feature and the extent (3)."""
        return self.pointnet().feature_dim + 3


class ObjectAttributeEncoder(nn.Module):
    def __init__(self, config: ObjectAttributeConfig | None = None):
        super().__init__()
        self.config = cfg = config or ObjectAttributeConfig()
        self.pointnet = PointNet2Encoder(cfg.pointnet())
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.feature_dim, len(values)) for name, values in ATTRIBUTES.items()})

    def crops(self, cloud: Cloud, groups: ObjectGroups) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each object's points (M, P, 3), white-balanced colours (M, P, 3) and extent (M, 3), in metres."""
        rng = np.random.default_rng(self.config.seed)
        P = self.config.points
        rgb = object_colors(cloud, groups)
        xyz, col, extent = [], [], []
        for g in groups.indices:
            pick = rng.choice(g, P, replace=len(g) < P)
            xyz.append(cloud.xyz[pick])
            col.append(rgb[pick])
            extent.append(np.ptp(cloud.xyz[g], axis=0))
        as_tensor = lambda rows, shape: torch.as_tensor(np.asarray(rows, np.float32).reshape(shape))  # noqa: E731
        return as_tensor(xyz, (-1, P, 3)), as_tensor(col, (-1, P, 3)), as_tensor(extent, (-1, 3))

    def forward(self, xyz: torch.Tensor, rgb: torch.Tensor, extent: torch.Tensor) -> torch.Tensor:
        # (M, P, 3), (M, P, 3), (M, 3) → (M, feature_dim)
        if len(xyz) == 0:
            return xyz.new_zeros(0, self.config.feature_dim)
        return torch.cat([self.pointnet(xyz, rgb), extent * 10], dim=-1)  # extent in decimetres: order 0.3–1.7

    def logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def features(self, cloud: Cloud, groups: ObjectGroups) -> np.ndarray:
        """(M, feature_dim) frozen features of the objects `groups` finds in `cloud`."""
        return self(*self.crops(cloud, groups)).numpy()

    @torch.no_grad()
    def predict(self, cloud: Cloud, groups: ObjectGroups) -> dict[str, list[str]]:
        logits = self.logits(self(*self.crops(cloud, groups)))
        return {name: [ATTRIBUTES[name][i] for i in logits[name].argmax(-1).tolist()] for name in ATTRIBUTES}

    def save_pretrained(self, path: str | Path) -> Path:
        with atomic(path) as tmp:
            tmp.mkdir(parents=True)
            write_json({"object_attributes": dataclasses.asdict(self.config), "attributes": ATTRIBUTES}, tmp / "config.json")
            save_tensors(self, tmp / "model.safetensors")
        return Path(path)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "ObjectAttributeEncoder":
        """The frozen encoder in `path`; CheckpointError naming what is missing or wrong."""
        path = Path(path)
        config = read_json(path / "config.json", "object encoder config")
        try:
            cfg = ObjectAttributeConfig(**config["object_attributes"])
            if {k: tuple(v) for k, v in config["attributes"].items()} != ATTRIBUTES:
                raise ValueError("its attribute names differ from this version's")
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path / 'config.json'} is not a valid object encoder config ({e}); "
                                  "train one with threedmoe-train-object-encoder") from None
        model = cls(cfg)
        load_module(model, path / "model.safetensors")
        return model.eval().requires_grad_(False)
