"""The 3D encoder of 3D-MoE (from LEO): PointNet++ per object, a spatial transformer over objects,
one linear projection into the LLM's embedding space.

    Cloud ──group_objects──▶ K objects × P points ──PointNet2Encoder──▶ (K, F)
          ──SpatialTransformer (attention biased by pairwise object geometry)──▶ (K, H)
          ──Linear──▶ (K, D_llm) object tokens

Objects come from, in order of preference:
1. instance labels carried by the cloud (simulator; label 0 = table/background),
2. segmentation of a real sensor's cloud (data/objects.py, the grouping every consumer shares),
3. farthest-point-sampled patches (each point joins its nearest FPS centre) when neither finds objects.

Everything here is pure PyTorch (open3d only for segmentation), batched over all objects of a batch
of clouds at once. FPS starts from the point farthest from the centroid and ball query keeps the k
nearest points inside the radius, so an object's feature does not depend on the order of its points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from threedmoe_ros.data import objects
from threedmoe_ros.data.objects import SegmentConfig
from threedmoe_ros.types import Cloud

GROUPING_MODES = ("auto", "labels", "segment", "patches")


@dataclass
class PointEncoderConfig:
    """3D encoder sizes and object grouping.

    out_dim: width of the object tokens, the LLM's hidden size (2048 for Llama 3.2 1B).
    points_per_object: P, points sampled per object (LEO: 1024).
    max_objects: objects kept per scene (the largest by point count).
    sa_npoints / sa_radii / sa_nsample: centres, ball radius (in the object's unit sphere) and
        neighbours of the two PointNet++ set-abstraction levels; a third level pools all points.
    sa_widths: MLP widths of the three levels; feature_dim is the last width.
    hidden_dim / num_layers / num_heads: spatial transformer.
    grouping: "auto" (labels → segmentation → patches), or force one method.
    plane_distance / dbscan_eps / dbscan_min_points: the segmentation of unlabelled clouds
        (data/objects.py, SegmentConfig; the same defaults).
    min_object_points: smaller groups are noise and dropped.
    num_patches: FPS patches when no objects are found.
    seed: seeds point subsampling, so the same cloud always gives the same tokens.
    """

    out_dim: int = 2048
    points_per_object: int = 1024
    max_objects: int = 60
    sa_npoints: tuple[int, int] = (256, 64)
    sa_radii: tuple[float, float] = (0.2, 0.4)
    sa_nsample: tuple[int, int] = (32, 32)
    sa_widths: tuple[tuple[int, ...], ...] = ((32, 32, 64), (64, 64, 128), (128, 256))
    hidden_dim: int = 256
    num_layers: int = 3
    num_heads: int = 8
    grouping: str = "auto"
    plane_distance: float = SegmentConfig.plane_distance
    dbscan_eps: float = SegmentConfig.eps
    dbscan_min_points: int = SegmentConfig.min_points
    min_object_points: int = 10
    num_patches: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.grouping not in GROUPING_MODES:
            raise ValueError(f"PointEncoderConfig.grouping must be one of {GROUPING_MODES}, got {self.grouping!r}")
        self.sa_npoints, self.sa_radii, self.sa_nsample = tuple(self.sa_npoints), tuple(self.sa_radii), tuple(self.sa_nsample)
        self.sa_widths = tuple(tuple(w) for w in self.sa_widths)
        if not (len(self.sa_npoints) == len(self.sa_radii) == len(self.sa_nsample) == len(self.sa_widths) - 1):
            raise ValueError("PointEncoderConfig: sa_npoints, sa_radii, sa_nsample need one entry per set-abstraction "
                             "level and sa_widths one more (the final group-all level)")
        if not self.points_per_object >= self.sa_npoints[0] >= self.sa_npoints[-1] >= 1:
            raise ValueError(f"PointEncoderConfig: need points_per_object ≥ sa_npoints (decreasing), got "
                             f"{self.points_per_object} and {self.sa_npoints}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"PointEncoderConfig.hidden_dim {self.hidden_dim} must divide by num_heads {self.num_heads}")
        for name in ("out_dim", "max_objects", "num_patches", "min_object_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"PointEncoderConfig.{name} must be ≥ 1, got {getattr(self, name)}")

    @property
    def feature_dim(self) -> int:
        return self.sa_widths[-1][-1]

    @classmethod
    def tiny(cls, out_dim: int = 64, **overrides) -> "PointEncoderConfig":
        """A few-thousand-parameter encoder for tests."""
        base = dict(out_dim=out_dim, points_per_object=64, max_objects=16, sa_npoints=(16, 4), sa_nsample=(8, 4),
                    sa_widths=((16,), (32,), (32,)), hidden_dim=32, num_layers=1, num_heads=2, num_patches=8)
        return cls(**{**base, **overrides})


# ---------------------------------------------------------------------------------------------
# Sampling and grouping primitives (batched)
# ---------------------------------------------------------------------------------------------


def index_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather rows per batch: points (B, N, C), idx (B, *S) → (B, *S, C)."""
    b, c = points.shape[0], points.shape[-1]
    flat = idx.reshape(b, -1)  # (B, S)
    out = torch.gather(points, 1, flat[..., None].expand(-1, -1, c))
    return out.reshape(*idx.shape, c)


def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances: a (B, M, 3), b (B, N, 3) → (B, M, N), without a (B, M, N, 3) temporary."""
    d = (a * a).sum(-1)[..., None] + (b * b).sum(-1)[:, None, :] - 2 * a @ b.transpose(1, 2)
    return d.clamp_min_(0)


def farthest_point_sample(xyz: torch.Tensor, m: int) -> torch.Tensor:
    """Batched farthest-point sampling: xyz (B, N, 3) → indices (B, m).

    Starts from the point farthest from the centroid (not index 0), so the chosen set does not depend
    on point order. One vectorised step per sample: O(m · B · N).
    """
    b, n, _ = xyz.shape
    planes = xyz.permute(2, 0, 1).contiguous()  # (3, B, N): each coordinate contiguous
    idx = torch.empty(b, m, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, n), float("inf"), device=xyz.device, dtype=xyz.dtype)
    d, diff = torch.empty_like(dist), torch.empty_like(dist)
    far = ((xyz - xyz.mean(1, keepdim=True)) ** 2).sum(-1).argmax(-1)  # (B,)
    rows = torch.arange(b, device=xyz.device)
    for i in range(m):
        idx[:, i] = far
        centre = xyz[rows, far]  # (B, 3)
        # Squared distance to the new centre, per coordinate plane into preallocated buffers: the loop
        # runs m times, and temporaries of (B, N, 3) made it ~7× slower on a CPU.
        torch.sub(planes[0], centre[:, 0:1], out=diff)
        torch.mul(diff, diff, out=d)
        for axis in (1, 2):
            torch.sub(planes[axis], centre[:, axis : axis + 1], out=diff)
            d.addcmul_(diff, diff)
        torch.minimum(dist, d, out=dist)
        far = dist.argmax(-1)
    return idx


def ball_query(xyz: torch.Tensor, centres: torch.Tensor, radius: float, k: int) -> torch.Tensor:
    """The k nearest points within `radius` of each centre: xyz (B, N, 3), centres (B, M, 3) → (B, M, k).

    Slots with no point inside the ball repeat the nearest point (the centre itself when centres are
    drawn from xyz), as PointNet++ pads with the first hit. Taking the nearest rather than the first
    k by index keeps the result independent of point order.
    """
    d2 = square_distance(centres, xyz)  # (B, M, N)
    d2k, idx = d2.topk(min(k, xyz.shape[1]), dim=-1, largest=False)  # ascending
    idx = torch.where(d2k > radius * radius, idx[..., :1], idx)
    if idx.shape[-1] < k:  # fewer points than k: pad with the nearest
        idx = torch.cat([idx, idx[..., :1].expand(*idx.shape[:-1], k - idx.shape[-1])], -1)
    return idx


def _mlp(widths: tuple[int, ...], in_dim: int) -> nn.Sequential:
    # No normalisation inside the per-point MLP: PointNet++'s BatchNorm would make an object's feature
    # depend on the rest of the batch, and LayerNorm over every grouped point cost a fifth of the
    # encoder's CPU time. The spatial transformer normalises per object instead.
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(in_dim, w), nn.ReLU(inplace=True)]
        in_dim = w
    return nn.Sequential(*layers)


class SetAbstraction(nn.Module):
    """PointNet++ set abstraction: FPS centres, ball-query neighbourhoods, shared MLP, max-pool.

    npoint=None pools all points into one feature (the "group all" level).
    """

    def __init__(self, npoint: int | None, radius: float, nsample: int, in_channels: int, widths: tuple[int, ...]):
        super().__init__()
        self.npoint, self.radius, self.nsample = npoint, radius, nsample
        self.mlp = _mlp(widths, in_channels + 3)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # xyz (B, N, 3), feats (B, N, C) → centres (B, M, 3), features (B, M, C')
        if self.npoint is None:
            grouped = xyz[:, None] if feats is None else torch.cat([xyz, feats], -1)[:, None]  # (B, 1, N, 3+C)
            return xyz.new_zeros(xyz.shape[0], 1, 3), self.mlp(grouped).amax(2)
        centres = index_points(xyz, farthest_point_sample(xyz, self.npoint))  # (B, M, 3)
        idx = ball_query(xyz, centres, self.radius, self.nsample)  # (B, M, k)
        local = (index_points(xyz, idx) - centres[:, :, None]) / self.radius  # (B, M, k, 3), scale-free
        grouped = local if feats is None else torch.cat([local, index_points(feats, idx)], -1)
        return centres, self.mlp(grouped).amax(2)  # max over the neighbourhood: order-free


class PointNet2Encoder(nn.Module):
    """PointNet++ (single-scale grouping) over objects: (B, P, 3) points + (B, P, 3) colours → (B, F).

    Each object is centred on its centroid and scaled into the unit sphere first; where it is and how
    big it is goes to the spatial transformer separately, as in LEO.
    """

    def __init__(self, cfg: PointEncoderConfig):
        super().__init__()
        levels, in_ch = [], 3  # colour channels
        for npoint, radius, nsample, widths in zip(cfg.sa_npoints, cfg.sa_radii, cfg.sa_nsample, cfg.sa_widths):
            levels.append(SetAbstraction(npoint, radius, nsample, in_ch, widths))
            in_ch = widths[-1]
        levels.append(SetAbstraction(None, 1.0, 0, in_ch, cfg.sa_widths[-1]))
        self.levels = nn.ModuleList(levels)

    @staticmethod
    def normalize(xyz: torch.Tensor) -> torch.Tensor:
        """Centre each object and scale it into the unit sphere: (B, P, 3) → (B, P, 3)."""
        xyz = xyz - xyz.mean(1, keepdim=True)
        return xyz / xyz.norm(dim=-1).amax(1).clamp_min(1e-6)[:, None, None]

    def forward(self, xyz: torch.Tensor, rgb: torch.Tensor | None = None) -> torch.Tensor:
        # xyz (B, P, 3) metres; rgb (B, P, 3) in [0, 1] → (B, F)
        xyz = self.normalize(xyz)
        feats = rgb if rgb is not None else torch.zeros_like(xyz)
        for level in self.levels:
            xyz, feats = level(xyz, feats)
        return feats[:, 0]


# ---------------------------------------------------------------------------------------------
# Spatial transformer over objects (LEO)
# ---------------------------------------------------------------------------------------------


def pairwise_spatial_features(centres: torch.Tensor) -> torch.Tensor:
    """Geometry of every object pair: centres (B, K, 3) → (B, K, K, 5).

    [distance, sin/cos of the horizontal angle, sin/cos of the elevation angle], LEO's pairwise
    features, computed without trigonometry.
    """
    delta = centres[:, None, :, :] - centres[:, :, None, :]  # (B, K, K, 3): from i to j
    dist = delta.norm(dim=-1)
    dxy = delta[..., :2].norm(dim=-1)
    eps = 1e-6
    return torch.stack([
        dist,
        delta[..., 1] / (dxy + eps), delta[..., 0] / (dxy + eps),  # sin, cos of azimuth
        delta[..., 2] / (dist + eps), dxy / (dist + eps),  # sin, cos of elevation
    ], dim=-1)


class SpatialSelfAttention(nn.Module):
    """Multi-head self-attention whose weights are gated by pairwise object geometry.

    logits_h(i, j) = q_i·k_j/√d + log σ(g_h(f_ij)): softmax then multiplies each attention weight by
    σ(g_h(f_ij)) ∈ (0, 1) before renormalising, so a head can learn to look at near (or far, above,
    left-of) objects. This is the spatial attention LEO takes from Vil3DRef.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.spatial = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, num_heads))

    def forward(self, x: torch.Tensor, pair: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x (B, K, H), pair (B, K, K, 5), mask (B, K) True = real object
        b, k, dim = x.shape
        q, key, v = self.qkv(x).view(b, k, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = F.logsigmoid(self.spatial(pair)).permute(0, 3, 1, 2)  # (B, h, K, K)
        bias = bias.masked_fill(~mask[:, None, None, :], float("-inf"))
        y = F.scaled_dot_product_attention(q, key, v, attn_mask=bias)  # (B, h, K, d)
        return self.out(y.transpose(1, 2).reshape(b, k, dim))


class SpatialTransformerLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SpatialSelfAttention(dim, num_heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, pair: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pair, mask)  # pre-norm: stable without warm-up
        return x + self.mlp(self.norm2(x))


class SpatialTransformer(nn.Module):
    """Object features + where the objects are → context-aware object embeddings (B, K, H).

    Object order carries no meaning: no positional index, only geometry, so the output permutes with
    the input.
    """

    def __init__(self, feature_dim: int, hidden_dim: int, num_layers: int, num_heads: int):
        super().__init__()
        self.feature_in = nn.Linear(feature_dim, hidden_dim)
        self.location_in = nn.Linear(6, hidden_dim)  # centre (3) + box size (3)
        self.layers = nn.ModuleList(SpatialTransformerLayer(hidden_dim, num_heads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, feats: torch.Tensor, centres: torch.Tensor, sizes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # feats (B, K, F), centres / sizes (B, K, 3), mask (B, K) → (B, K, H)
        x = self.feature_in(feats) + self.location_in(torch.cat([centres, sizes], -1))
        pair = pairwise_spatial_features(centres)
        for layer in self.layers:
            x = layer(x, pair, mask)
        return self.norm(x).masked_fill(~mask[..., None], 0.0)


# ---------------------------------------------------------------------------------------------
# Clouds → objects
# ---------------------------------------------------------------------------------------------


@dataclass
class SceneObjects:
    """Objects of one cloud, resampled to a fixed size.

    xyz (K, P, 3) float32 metres; rgb (K, P, 3) float32 in [0, 1]; centres / sizes (K, 3) of the
    axis-aligned boxes of all points of each object; ids: instance label per object (or -1);
    method: "labels", "segment" or "patches".
    """

    xyz: np.ndarray
    rgb: np.ndarray
    centres: np.ndarray
    sizes: np.ndarray
    ids: list[int] = field(default_factory=list)
    method: str = ""
    # (K, 3) centre of each object's top face and its height (data.objects.summarize): where a pick
    # or a place on the object goes, the anchor a pointer head aims at.
    top: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.xyz)


def fps_patches(xyz: np.ndarray, num_patches: int) -> list[np.ndarray]:
    """Split a cloud into patches: FPS centres, each point to its nearest centre."""
    pts = torch.from_numpy(xyz)[None]
    centres = index_points(pts, farthest_point_sample(pts, min(num_patches, len(xyz))))  # (1, M, 3)
    owner = torch.cat([square_distance(chunk, centres).argmin(-1) for chunk in pts.split(65536, dim=1)], 1)[0]
    owner = owner.numpy()
    return [np.flatnonzero(owner == m) for m in range(centres.shape[1]) if (owner == m).any()]


def group_objects(cloud: Cloud, cfg: PointEncoderConfig) -> tuple[list[np.ndarray], list[int], str]:
    """Point-index arrays of the objects in `cloud`, their instance ids (-1 if none), and the method used:
    the project's one grouping (data/objects.py: labels, else segmentation), then FPS patches."""
    if len(cloud) == 0:
        raise ValueError("cannot encode an empty cloud (0 points)")
    if cfg.grouping != "patches":
        segment = SegmentConfig(plane_distance=cfg.plane_distance, eps=cfg.dbscan_eps, min_points=cfg.dbscan_min_points,
                                seed=cfg.seed)
        found = objects.group_objects(cloud, "auto" if cfg.grouping == "auto" else cfg.grouping, segment)
        keep = [i for i, g in enumerate(found.indices) if found.method == "labels" or len(g) >= cfg.min_object_points]
        if keep:
            return [found.indices[i] for i in keep], [found.ids[i] for i in keep], found.method
        if cfg.grouping in ("labels", "segment"):
            raise ValueError(f"grouping={cfg.grouping!r} but the cloud has no objects by that method")
    groups = fps_patches(cloud.xyz, cfg.num_patches)
    return groups, [-1] * len(groups), "patches"


def cloud_to_objects(cloud: Cloud, cfg: PointEncoderConfig) -> SceneObjects:
    """Group a cloud into at most `max_objects` objects and resample each to `points_per_object` points."""
    groups, ids, method = group_objects(cloud, cfg)
    big = [i for i, g in enumerate(groups) if len(g) >= cfg.min_object_points] or list(range(len(groups)))
    big = sorted(big, key=lambda i: -len(groups[i]))[: cfg.max_objects]
    big.sort()  # keep label / discovery order, which the prompt's object list follows
    rng = np.random.default_rng(cfg.seed)
    p = cfg.points_per_object
    xyz, rgb, centres, sizes = [], [], [], []
    for i in big:
        g = groups[i]
        # Random subsampling (LEO does the same); fewer points than P are all kept and topped up.
        pick = rng.choice(g, p, replace=False) if len(g) >= p else np.concatenate([g, rng.choice(g, p - len(g))])
        xyz.append(cloud.xyz[pick])
        rgb.append(cloud.rgb[pick].astype(np.float32) / 255 if cloud.rgb is not None else np.zeros((p, 3), np.float32))
        lo, hi = cloud.xyz[g].min(0), cloud.xyz[g].max(0)
        centres.append((lo + hi) / 2)
        sizes.append(hi - lo)
    top = objects.summarize(cloud, objects.ObjectGroups([groups[i] for i in big], [ids[i] for i in big], method)).top
    return SceneObjects(np.stack(xyz), np.stack(rgb), np.stack(centres).astype(np.float32),
                        np.stack(sizes).astype(np.float32), [ids[i] for i in big], method, top.astype(np.float32))


class ObjectEncoder(nn.Module):
    """Clouds → object tokens in the LLM's embedding space: PointNet2Encoder → SpatialTransformer → Linear.

    forward(clouds) → (tokens (B, K, out_dim), mask (B, K) bool); K is the most objects in the batch.
    """

    def __init__(self, cfg: PointEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.pointnet = PointNet2Encoder(cfg)
        self.spatial = SpatialTransformer(cfg.feature_dim, cfg.hidden_dim, cfg.num_layers, cfg.num_heads)
        self.proj = nn.Linear(cfg.hidden_dim, cfg.out_dim)

    def objects(self, clouds: list[Cloud]) -> list[SceneObjects]:
        return [cloud_to_objects(c, self.cfg) for c in clouds]

    def forward(self, clouds: list[Cloud] | list[SceneObjects]) -> tuple[torch.Tensor, torch.Tensor]:
        scenes = [c if isinstance(c, SceneObjects) else cloud_to_objects(c, self.cfg) for c in clouds]
        return self.encode_objects(scenes)

    def encode_objects(self, scenes: list[SceneObjects]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.proj.weight.device
        counts = [len(s) for s in scenes]
        # All objects of the batch through PointNet++ at once.
        xyz = torch.from_numpy(np.concatenate([s.xyz for s in scenes])).to(device)  # (ΣK, P, 3)
        rgb = torch.from_numpy(np.concatenate([s.rgb for s in scenes])).to(device)  # (ΣK, P, 3)
        feats = self.pointnet(xyz, rgb)  # (ΣK, F)

        b, k = len(scenes), max(counts)
        mask = torch.zeros(b, k, dtype=torch.bool, device=device)
        padded = feats.new_zeros(b, k, feats.shape[-1])
        centres, sizes = feats.new_zeros(b, k, 3), feats.new_zeros(b, k, 3)
        for i, (s, chunk) in enumerate(zip(scenes, feats.split(counts))):
            n = counts[i]
            mask[i, :n] = True
            padded[i, :n] = chunk
            centres[i, :n] = torch.from_numpy(s.centres).to(device)
            sizes[i, :n] = torch.from_numpy(s.sizes).to(device)
        x = self.spatial(padded, centres, sizes, mask)  # (B, K, H)
        return self.proj(x) * mask[..., None], mask  # (B, K, D_llm)
