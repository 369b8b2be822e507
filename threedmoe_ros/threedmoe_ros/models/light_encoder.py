"""A light ConditionEncoder for developing the Pose-DiT head before the 3D-MoE LLM is ready.

Scene → one token per object: with instance labels (the simulator's clouds; label 0 = table) an
object is its labelled points; without labels (a raw sensor) the points above the table are binned
into an xy grid and each occupied cell is a token. A token's features are centroid, extent, mean
colour and log point count, through an MLP.
Instruction → one token per word: lower-cased words hashed (crc32, stable across processes) into
`vocab_size` buckets and embedded, plus a position embedding. Hashing needs no vocabulary file and
maps paraphrases' unseen words somewhere instead of failing.
A small Transformer encoder then runs over [object tokens | word tokens], so "red" can bind to the
object whose colour token is red before the head ever sees them; the head cross-attends to all of
them. Costs a few milliseconds on one CPU core (bench/bench_pose_dit.py reports it).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from threedmoe_ros.models.condition import ConditionEncoder
from threedmoe_ros.types import Cloud
from threedmoe_ros.workspace import WORKSPACE_CENTER, WORKSPACE_HALF

_WORD = re.compile(r"[a-z0-9]+")
N_OBJECT_FEATURES = 12  # centroid 3, extent 3, mean rgb 3, log count 1, 4-fold orientation 2


@dataclass
class LightEncoderConfig:
    """Sizes of the light condition encoder."""

    dim: int = 128
    layers: int = 2
    heads: int = 4
    vocab_size: int = 2048  # hash buckets; collisions are rare at templated-English vocabularies
    max_words: int = 32  # longer instructions are cut (the policy rejects very long ones first)
    max_objects: int = 32  # the largest objects by point count are kept
    # Unlabelled clouds: points higher than this above the lowest point are "objects" (m), and
    # are binned into grid_cells × grid_cells cells over the xy extent of the cloud.
    min_height: float = 0.005
    grid_cells: int = 8
    # Where positions are centred and scaled before the MLP (the workspace centre and half-size).
    center: tuple[float, float, float] = WORKSPACE_CENTER
    scale: tuple[float, float, float] = WORKSPACE_HALF

    def __post_init__(self) -> None:
        for name in ("dim", "layers", "heads", "vocab_size", "max_words", "max_objects", "grid_cells"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LightEncoderConfig.{name} must be a positive int, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"LightEncoderConfig: dim {self.dim} is not divisible by heads {self.heads}")
        self.center = tuple(float(v) for v in self.center)
        self.scale = tuple(float(v) for v in self.scale)
        if len(self.center) != 3 or len(self.scale) != 3 or min(self.scale) <= 0:
            raise ValueError(f"LightEncoderConfig: center/scale need 3 values, scale > 0; got {self.center}, {self.scale}")


def tokenize(instruction: str, vocab_size: int, max_words: int) -> list[int]:
    """Words → hash buckets 1..vocab_size−1 (0 is reserved for padding)."""
    words = _WORD.findall(instruction.lower())[:max_words]
    return [1 + zlib.crc32(w.encode()) % (vocab_size - 1) for w in words]


def object_features(cloud: Cloud, cfg: LightEncoderConfig) -> np.ndarray:
    """(N, 3) cloud → (M, 12) object features, M <= max_objects (M may be 0)."""
    xyz = cloud.xyz.astype(np.float64)
    if len(xyz) == 0:
        return np.zeros((0, N_OBJECT_FEATURES), np.float32)
    rgb = cloud.rgb.astype(np.float64) / 255.0 if cloud.rgb is not None else np.full_like(xyz, 0.5)
    if cloud.label is not None:
        keep = cloud.label > 0
        ids = cloud.label[keep]
    else:
        keep = xyz[:, 2] > xyz[:, 2].min() + cfg.min_height
        lo, hi = xyz[keep, :2].min(0) if keep.any() else 0, xyz[keep, :2].max(0) if keep.any() else 1
        cell = np.clip(((xyz[keep, :2] - lo) / np.maximum(hi - lo, 1e-6) * cfg.grid_cells).astype(np.int64), 0, cfg.grid_cells - 1)
        ids = cell[:, 0] * cfg.grid_cells + cell[:, 1]
    if len(ids) == 0:
        return np.zeros((0, N_OBJECT_FEATURES), np.float32)
    xyz, rgb = xyz[keep], rgb[keep]
    uniq, inv = np.unique(ids, return_inverse=True)
    count = np.bincount(inv).astype(np.float64)  # (M,)
    mean_xyz = np.stack([np.bincount(inv, xyz[:, i]) for i in range(3)], 1) / count[:, None]
    mean_rgb = np.stack([np.bincount(inv, rgb[:, i]) for i in range(3)], 1) / count[:, None]
    # Per-object min/max by sorting points by object and reducing each run (ufunc.at is ~5× slower).
    grouped = xyz[np.argsort(inv, kind="stable")]
    starts = np.concatenate([[0], np.cumsum(count[:-1])]).astype(np.int64)
    lo, hi = np.minimum.reduceat(grouped, starts, axis=0), np.maximum.reduceat(grouped, starts, axis=0)
    z = (xyz[:, 0] - mean_xyz[inv, 0]) + 1j * (xyz[:, 1] - mean_xyz[inv, 1])
    z4 = z**4
    r4 = np.bincount(inv, np.abs(z4)) + 1e-12
    orientation = np.stack([np.bincount(inv, z4.real), np.bincount(inv, z4.imag)], 1) / r4[:, None]  # in [−1, 1]
    center, scale = np.asarray(cfg.center), np.asarray(cfg.scale)
    feats = np.concatenate(
        [(mean_xyz - center) / scale, (hi - lo) / scale, mean_rgb * 2 - 1, np.log(count)[:, None] / 10, orientation], axis=1
    )
    order = np.argsort(-count, kind="stable")[: cfg.max_objects]
    return feats[np.sort(order)].astype(np.float32)


class LightConditionEncoder(ConditionEncoder):
    """(clouds, instructions) → tokens (B, K, dim) = [objects | words], mask (B, K) True = real."""

    def __init__(self, config: LightEncoderConfig | None = None):
        super().__init__()
        self.config = cfg = config or LightEncoderConfig()
        self.cond_dim = cfg.dim
        self.object_mlp = nn.Sequential(nn.Linear(N_OBJECT_FEATURES, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))
        self.word_embed = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=0)
        self.word_pos = nn.Parameter(torch.randn(cfg.max_words, cfg.dim) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(2, cfg.dim) * 0.02)  # object vs word
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 2 * cfg.dim, dropout=0.0, batch_first=True, norm_first=True)
        self.mixer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, clouds: list[Cloud], instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(clouds) != len(instructions):
            raise ValueError(f"{len(clouds)} clouds but {len(instructions)} instructions")
        cfg = self.config
        device = self.word_pos.device
        feats = [object_features(c, cfg) for c in clouds]
        words = [tokenize(s, cfg.vocab_size, cfg.max_words) for s in instructions]
        B = len(clouds)
        M = max(1, max(len(f) for f in feats))
        W = max(1, max(len(w) for w in words))
        obj = torch.zeros(B, M, N_OBJECT_FEATURES)
        obj_mask = torch.zeros(B, M, dtype=torch.bool)
        ids = torch.zeros(B, W, dtype=torch.long)
        word_mask = torch.zeros(B, W, dtype=torch.bool)
        for b, (f, w) in enumerate(zip(feats, words)):
            obj[b, : len(f)] = torch.from_numpy(f)
            obj_mask[b, : len(f)] = True
            ids[b, : len(w)] = torch.tensor(w, dtype=torch.long)
            word_mask[b, : len(w)] = True
        obj, obj_mask, ids, word_mask = obj.to(device), obj_mask.to(device), ids.to(device), word_mask.to(device)

        tokens = torch.cat(
            [
                self.object_mlp(obj) + self.type_embed[0],  # (B, M, D)
                self.word_embed(ids) + self.word_pos[:W] + self.type_embed[1],  # (B, W, D)
            ],
            dim=1,
        )
        mask = torch.cat([obj_mask, word_mask], dim=1)  # (B, M+W)
        # A row with no real token (empty cloud and empty instruction) would make attention NaN;
        # let such a row see its first slot, which then carries only the type embedding.
        mask[:, 0] |= ~mask.any(dim=1)
        tokens = self.mixer(tokens, src_key_padding_mask=~mask)
        return self.norm(tokens), mask
