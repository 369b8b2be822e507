"""A light ConditionEncoder: the Pose-DiT head's condition without a language model (and the 3D-MoE's explicit side).

Scene → one token per object, as data/objects.py groups the cloud (instance labels when present,
its segmentation otherwise; reading order either way). A token's features are centroid, extent, mean
colour (white-balanced against the table), log point count and 4-fold orientation, or with
`object_encoder` a frozen pretrained encoder's features in place of the colour, through an MLP; each
object token also carries its
top-face centre and box (Condition.anchors / boxes), where the pointer head puts picks and places.
Instruction → one token per word: lower-cased words hashed (crc32, stable across processes) into
`vocab_size` buckets and embedded, plus a position embedding. Hashing needs no vocabulary file and
maps paraphrases' unseen words somewhere instead of failing.
A small Transformer encoder then runs over [object tokens | word tokens], so "red" can bind to the
object whose colour token is red before the head ever sees them; the head cross-attends to all of
them. Costs a few milliseconds on one CPU core (bench/bench_pose_dit.py reports it).
"""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from threedmoe_ros.data.objects import GROUPINGS, ObjectGroups, ObjectSummary, cielab, group_objects, summarize
from threedmoe_ros.models.condition import Condition, ConditionEncoder
from threedmoe_ros.types import Cloud
from threedmoe_ros.workspace import WORKSPACE_CENTER, WORKSPACE_HALF

_WORD = re.compile(r"[a-z0-9]+")
N_OBJECT_FEATURES = 12  # centroid 3, extent 3, mean rgb 3, log count 1, 4-fold orientation 2 (+3 with top_color)


@dataclass
class LightEncoderConfig:
    """Sizes of the light condition encoder."""

    dim: int = 128
    layers: int = 2
    heads: int = 4
    vocab_size: int = 2048  # hash buckets; collisions are rare at templated-English vocabularies
    max_words: int = 32  # longer instructions are cut (the policy rejects very long ones first)
    max_objects: int = 32  # the largest objects by point count are kept
    # How a cloud becomes objects (data/objects.py): "auto" uses instance labels when the cloud
    # has them and segments it otherwise; "segment" ignores labels (what a real sensor gives).
    grouping: str = "auto"
    # Add the top face's colour in CIELAB to each object's features: the mean over all faces mixes lit
    # and shaded sides, which moves with the light, and rgb distances do not follow colour names.
    top_color: bool = False
    # Colours white-balanced against the table before they become features (data/objects.py); False:
    # as the camera saw them (what checkpoints before white balance were trained on).
    white_balance: bool = True
    # A pretrained object encoder (threedmoe-train-object-encoder's OUT/checkpoint): its frozen features
    # take the place of the colour features (mean rgb, top-face CIELAB); "" keeps the explicit ones.
    object_encoder: str = ""
    # Where positions are centred and scaled before the MLP (the workspace centre and half-size).
    center: tuple[float, float, float] = WORKSPACE_CENTER
    scale: tuple[float, float, float] = WORKSPACE_HALF

    def __post_init__(self) -> None:
        for name in ("dim", "layers", "heads", "vocab_size", "max_words", "max_objects"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LightEncoderConfig.{name} must be a positive int, got {value!r}")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"LightEncoderConfig.grouping must be one of {', '.join(GROUPINGS)}, got {self.grouping!r}")
        if self.dim % self.heads:
            raise ValueError(f"LightEncoderConfig: dim {self.dim} is not divisible by heads {self.heads}")
        self.center = tuple(float(v) for v in self.center)
        self.scale = tuple(float(v) for v in self.scale)
        if len(self.center) != 3 or len(self.scale) != 3 or min(self.scale) <= 0:
            raise ValueError(f"LightEncoderConfig: center/scale need 3 values, scale > 0; got {self.center}, {self.scale}")

    @property
    def n_object_features(self) -> int:
        if self.object_encoder:  # geometry (centroid, extent, log count, orientation) + the encoder's features
            return N_OBJECT_FEATURES - 3 + _object_encoder(self.object_encoder).config.feature_dim
        return N_OBJECT_FEATURES + 3 * self.top_color


@functools.lru_cache(maxsize=4)
def _object_encoder(path: str):
    """The frozen pretrained object encoder at `path`, loaded once per process."""
    from threedmoe_ros.models.object_attributes import ObjectAttributeEncoder

    return ObjectAttributeEncoder.from_pretrained(path)


def tokenize(instruction: str, vocab_size: int, max_words: int) -> list[int]:
    """Words → hash buckets 1..vocab_size−1 (0 is reserved for padding)."""
    words = _WORD.findall(instruction.lower())[:max_words]
    return [1 + zlib.crc32(w.encode()) % (vocab_size - 1) for w in words]


def object_features(cloud: Cloud, cfg: LightEncoderConfig) -> tuple[np.ndarray, ObjectSummary]:
    """(N, 3) cloud → (M, F) object features and the objects they describe, M <= max_objects (M may be 0),
    F = cfg.n_object_features."""
    groups = group_objects(cloud, cfg.grouping)
    objs = summarize(cloud, groups, cfg.white_balance)
    if len(objs) > cfg.max_objects:  # the largest by point count, in their original order
        keep = np.sort(np.argsort(-objs.count, kind="stable")[: cfg.max_objects])
        objs = objs.take(keep)
        groups = ObjectGroups([groups.indices[k] for k in keep], [groups.ids[k] for k in keep], groups.method)
    if len(objs) == 0:
        return np.zeros((0, cfg.n_object_features), np.float32), objs
    center, scale = np.asarray(cfg.center), np.asarray(cfg.scale)
    geometry = [(objs.centroid - center) / scale, (objs.hi - objs.lo) / scale]
    shape = [np.log(objs.count)[:, None] / 10, objs.orientation]
    if cfg.object_encoder:
        parts = [*geometry, *shape, _object_encoder(cfg.object_encoder).features(cloud, groups)]
    else:
        parts = [*geometry, objs.rgb * 2 - 1, *shape] + ([cielab(objs.top_rgb)] if cfg.top_color else [])
    feats = np.concatenate(parts, axis=1)
    return feats.astype(np.float32), objs


class ObjectInputs(NamedTuple):
    """One scene's objects as the encoder reads them: computed from the cloud once (grouping is the
    slow part), so training can keep them per sample instead of grouping every step."""

    features: np.ndarray  # (M, F) object_features
    anchors: np.ndarray  # (M, 3) top-face centres, world frame
    boxes: np.ndarray  # (M, 4) xy boxes: x_lo, y_lo, x_hi, y_hi
    ids: list[int]  # the objects' instance labels (empty when the cloud was segmented)


def object_inputs(cloud: Cloud, cfg: LightEncoderConfig) -> ObjectInputs:
    feats, objs = object_features(cloud, cfg)
    boxes = np.concatenate([objs.lo[:, :2], objs.hi[:, :2]], axis=1) if len(objs) else np.zeros((0, 4))
    return ObjectInputs(feats, np.asarray(objs.top, np.float32).reshape(-1, 3), boxes.astype(np.float32), list(objs.ids))


class LightConditionEncoder(ConditionEncoder):
    """(clouds, instructions) → Condition: tokens (B, K, dim) = [objects | words], mask (B, K) True = real,
    and the object tokens' anchors."""

    def __init__(self, config: LightEncoderConfig | None = None):
        super().__init__()
        self.config = cfg = config or LightEncoderConfig()
        self.cond_dim = cfg.dim
        self.object_mlp = nn.Sequential(nn.Linear(cfg.n_object_features, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))
        self.word_embed = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=0)
        self.word_pos = nn.Parameter(torch.randn(cfg.max_words, cfg.dim) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(2, cfg.dim) * 0.02)  # object vs word
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 2 * cfg.dim, dropout=0.0, batch_first=True, norm_first=True)
        self.mixer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, clouds: list[Cloud], instructions: list[str]) -> Condition:
        if len(clouds) != len(instructions):
            raise ValueError(f"{len(clouds)} clouds but {len(instructions)} instructions")
        return self.encode([object_inputs(c, self.config) for c in clouds], instructions)

    def encode(self, scenes: list[ObjectInputs], instructions: list[str], object_extra: list[torch.Tensor] | None = None,
               extra: list[torch.Tensor] | None = None) -> Condition:
        """The condition of scenes already turned into ObjectInputs. An encoder built on this one may add
        `object_extra` (per scene (M, dim)) to the object tokens and append `extra` tokens (per scene
        (X, dim)) to the mixer's sequence; neither is an anchor."""
        cfg = self.config
        device = self.word_pos.device
        words = [tokenize(s, cfg.vocab_size, cfg.max_words) for s in instructions]
        B = len(scenes)
        M = max(1, max((len(s.features) for s in scenes), default=0))
        W = max(1, max((len(w) for w in words), default=0))
        obj = torch.zeros(B, M, cfg.n_object_features)
        obj_mask = torch.zeros(B, M, dtype=torch.bool)
        anchors = torch.zeros(B, M, 3)
        boxes = torch.zeros(B, M, 4)
        ids = torch.zeros(B, W, dtype=torch.long)
        word_mask = torch.zeros(B, W, dtype=torch.bool)
        for b, (scene, w) in enumerate(zip(scenes, words)):
            m = len(scene.features)
            obj[b, :m] = torch.as_tensor(scene.features)
            anchors[b, :m] = torch.as_tensor(scene.anchors)
            boxes[b, :m] = torch.as_tensor(scene.boxes)
            obj_mask[b, :m] = True
            ids[b, : len(w)] = torch.tensor(w, dtype=torch.long)
            word_mask[b, : len(w)] = True
        obj, obj_mask, ids, word_mask = obj.to(device), obj_mask.to(device), ids.to(device), word_mask.to(device)

        object_tokens = self.object_mlp(obj) + self.type_embed[0]  # (B, M, D)
        if object_extra is not None:
            object_tokens = object_tokens + _pad([e.to(device) for e in object_extra], M)[0]
        parts = [object_tokens, self.word_embed(ids) + self.word_pos[:W] + self.type_embed[1]]  # (B, W, D)
        masks = [obj_mask, word_mask]
        if extra is not None:
            tokens, mask = _pad([e.to(device) for e in extra], max(1, max(len(e) for e in extra)))
            parts.append(tokens)
            masks.append(mask)
        tokens, mask = torch.cat(parts, dim=1), torch.cat(masks, dim=1)  # (B, K, D), (B, K)
        # A row with no real token (empty cloud and empty instruction) would make attention NaN;
        # let such a row see its first slot, which then carries only the type embedding.
        mask[:, 0] |= ~mask.any(dim=1)
        tokens = self.mixer(tokens, src_key_padding_mask=~mask)
        K = tokens.shape[1]
        anchor_mask = torch.zeros(B, K, dtype=torch.bool, device=device)
        anchor_mask[:, :M] = obj_mask
        pad_anchors = lambda a: torch.cat([a, a.new_zeros(B, K - a.shape[1], a.shape[2])], 1).to(device)  # noqa: E731
        return Condition(self.norm(tokens), mask, pad_anchors(anchors), pad_anchors(boxes), anchor_mask)


def _pad(rows: list[torch.Tensor], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (n_i, D) → (B, length, D) zero-padded and its mask (B, length), True = real."""
    out = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.bool, device=rows[0].device)
    for b, r in enumerate(rows):
        out[b, : len(r)] = r
        mask[b, : len(r)] = True
    return out, mask
