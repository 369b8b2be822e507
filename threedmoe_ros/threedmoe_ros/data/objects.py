"""One way to group a cloud into objects, and what every consumer reads off each object.

    groups = group_objects(cloud)              # labels when the cloud has them, else segmentation
    objs = summarize(cloud, groups)            # centroid, top-face centre, box, colour, count, 4-fold orientation

The light encoder's object tokens, the point encoder's object crops, the pointer head's anchors and
refine all come from here, so they agree on what an object is and where it sits.

Grouping:
- labelled clouds (the simulator's): one object per instance label > 0 (0 is the table);
- unlabelled clouds (a real sensor): RANSAC finds the table plane (open3d); points more than
  `plane_distance` above it are clustered with DBSCAN (blocks, bowls, towers); points on the plane
  whose colour is far from the table's median colour are clustered too, so flat coloured things the
  task talks about (the tabletop's zones, a sheet of paper) are objects and not table. Returns no
  groups when open3d is missing or nothing stands out.
numpy (+ open3d for segmentation) only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from threedmoe_ros.types import Cloud


@dataclass
class SegmentConfig:
    """Segmentation of unlabelled clouds."""

    # Points farther above the table plane than this are object points (m); the plane's own inliers
    # are within it. 8 mm keeps a bowl's 4 mm floor with the table and a 3 cm block well above it.
    plane_distance: float = 0.008
    # DBSCAN neighbourhood (m) and density. The simulator's clouds are voxelised at 4 mm, so 1 cm
    # joins a block's faces and keeps blocks 2 cm apart (the oracle's slot spacing) separate.
    eps: float = 0.01
    min_points: int = 8
    # Flat objects: plane points whose rgb differs from the table's median by more than this (0..255, L2;
    # 60 lost a brown zone on the tabletop, 20 found every object of 80 zone and bowl scenes, seen and unseen colours),
    # in clusters of at least min_flat_points spanning at least min_flat_extent (m) — wider than the
    # coloured bottom rim of a block or bowl that falls within plane_distance of the table.
    flat_color_distance: float = 20.0
    min_flat_points: int = 40
    min_flat_extent: float = 0.06
    seed: int = 0


@dataclass
class ObjectGroups:
    indices: list[np.ndarray]
    """Point indices of each object, in a stable order (label order; segmentation: by x, then y)."""
    ids: list[int]
    """Instance label of each object, or -1 when segmented."""
    method: str
    """"labels" or "segment" (or "none": nothing found)."""

    def __len__(self) -> int:
        return len(self.indices)


def group_objects(cloud: Cloud, method: str = "auto", config: SegmentConfig | None = None) -> ObjectGroups:
    """Objects of `cloud`: by instance label ("labels"), by segmentation ("segment"), or "auto"
    (labels when the cloud carries any label > 0, else segmentation)."""
    if method not in ("auto", "labels", "segment"):
        raise ValueError(f"object grouping must be 'auto', 'labels' or 'segment', got {method!r}")
    if method in ("auto", "labels") and cloud.label is not None and (cloud.label > 0).any():
        ids = [int(i) for i in np.unique(cloud.label) if i > 0]
        return ObjectGroups([np.flatnonzero(cloud.label == i) for i in ids], ids, "labels")
    if method == "labels":
        raise ValueError("object grouping 'labels' but the cloud has no instance labels > 0")
    groups = segment(cloud, config or SegmentConfig())
    return ObjectGroups(groups, [-1] * len(groups), "segment" if groups else "none")


def segment(cloud: Cloud, cfg: SegmentConfig) -> list[np.ndarray]:
    """Object point indices of an unlabelled tabletop cloud (see the module docstring)."""
    try:
        import open3d as o3d
    except ImportError:
        warnings.warn("open3d is not installed: an unlabelled cloud cannot be segmented into objects", stacklevel=2)
        return []
    xyz = cloud.xyz.astype(np.float64)
    if len(xyz) < 3:
        return []
    o3d.utility.random.seed(cfg.seed)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    (a, b, c, d), inliers = pcd.segment_plane(distance_threshold=cfg.plane_distance, ransac_n=3, num_iterations=200)
    normal = np.array([a, b, c])
    if abs(normal[2]) < 0.9 * np.linalg.norm(normal):  # no horizontal plane: cluster everything
        raised, flat = np.arange(len(xyz)), np.zeros(0, np.int64)
    else:
        height = (xyz @ normal + d) / np.linalg.norm(normal) * np.sign(normal[2])  # signed, up = positive
        raised = np.flatnonzero(height > cfg.plane_distance)
        on_plane = np.flatnonzero(np.abs(height) <= cfg.plane_distance)
        flat = np.zeros(0, np.int64)
        if cloud.rgb is not None and len(on_plane):
            rgb = cloud.rgb[on_plane].astype(np.float64)
            flat = on_plane[np.linalg.norm(rgb - np.median(rgb, axis=0), axis=1) > cfg.flat_color_distance]

    def clusters(index: np.ndarray, min_size: int) -> list[np.ndarray]:
        if len(index) < cfg.min_points:
            return []
        sub = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz[index]))
        labels = np.asarray(sub.cluster_dbscan(eps=cfg.eps, min_points=cfg.min_points))
        found = [index[labels == k] for k in range(labels.max() + 1)] if labels.size else []
        return [g for g in found if len(g) >= min_size]

    objects = clusters(raised, cfg.min_points)
    # Plane points under a raised object's footprint are its own rim or floor (a block's bottom edge,
    # a bowl's floor), not a flat object; left in, they join a zone the block stands in and pull the
    # zone's top face onto the block.
    for o in objects:
        lo, hi = xyz[o, :2].min(0) - 0.003, xyz[o, :2].max(0) + 0.003
        flat = flat[~np.all((xyz[flat, :2] >= lo) & (xyz[flat, :2] <= hi), axis=1)]
    for g in clusters(flat, cfg.min_flat_points):
        if np.ptp(xyz[g, :2], axis=0).max() >= cfg.min_flat_extent:
            objects.append(g)
    groups = objects
    # A stable order that does not depend on DBSCAN's visiting order: by centroid x, then y.
    return sorted(groups, key=lambda g: tuple(np.round(xyz[g, :2].mean(0), 3)))


@dataclass
class ObjectSummary:
    """Per-object geometry and appearance of M objects, world frame (metres)."""

    centroid: np.ndarray  # (M, 3) mean of the points
    top: np.ndarray  # (M, 3) centre of the top face (points within 5 mm of the highest) and its height
    lo: np.ndarray  # (M, 3) axis-aligned box
    hi: np.ndarray  # (M, 3)
    rgb: np.ndarray  # (M, 3) mean colour in [0, 1] (0.5 without colour)
    count: np.ndarray  # (M,) points
    orientation: np.ndarray  # (M, 2) (cos 4ψ, sin 4ψ)-like moment of the xy spread: a square's yaw mod 90°
    ids: list[int] = field(default_factory=list)
    top_rgb: np.ndarray | None = None  # (M, 3) mean colour of the top-face points in [0, 1]: the face lit most evenly

    def __len__(self) -> int:
        return len(self.count)

    def take(self, index: np.ndarray) -> "ObjectSummary":
        """The objects at `index`, in that order."""
        arrays = (getattr(self, f) for f in ("centroid", "top", "lo", "hi", "rgb", "count", "orientation"))
        return ObjectSummary(*(a[index] for a in arrays), [self.ids[i] for i in index] if self.ids else [],
                             None if self.top_rgb is None else self.top_rgb[index])


def summarize(cloud: Cloud, groups: ObjectGroups) -> ObjectSummary:
    """Geometry of each group (see ObjectSummary); M = len(groups), possibly 0."""
    M = len(groups)
    if M == 0:
        z3 = np.zeros((0, 3))
        return ObjectSummary(z3, z3, z3, z3, z3, np.zeros(0), np.zeros((0, 2)), [], z3)
    xyz = cloud.xyz.astype(np.float64)
    rgb = cloud.rgb.astype(np.float64) / 255.0 if cloud.rgb is not None else np.full_like(xyz, 0.5)
    index = np.concatenate(groups.indices)
    owner = np.repeat(np.arange(M), [len(g) for g in groups.indices])  # object of each gathered point
    pts, col = xyz[index], rgb[index]
    count = np.bincount(owner, minlength=M).astype(np.float64)
    mean = lambda v: np.stack([np.bincount(owner, v[:, i], M) for i in range(v.shape[1])], 1) / count[:, None]  # noqa: E731
    centroid, colour = mean(pts), mean(col)
    # Groups are contiguous runs of `owner`, so per-object extremes are reduceat over the runs.
    starts = np.concatenate([[0], np.cumsum(count[:-1])]).astype(np.int64)
    lo, hi = np.minimum.reduceat(pts, starts, axis=0), np.maximum.reduceat(pts, starts, axis=0)
    near_top = pts[:, 2] > hi[owner, 2] - 0.005
    top_count = np.bincount(owner[near_top], minlength=M).astype(np.float64)
    top_xy = np.stack([np.bincount(owner[near_top], pts[near_top, i], M) for i in range(2)], 1) / top_count[:, None]
    top = np.concatenate([top_xy, hi[:, 2:3]], axis=1)
    top_rgb = np.stack([np.bincount(owner[near_top], col[near_top, i], M) for i in range(3)], 1) / top_count[:, None]
    z = (pts[:, 0] - centroid[owner, 0]) + 1j * (pts[:, 1] - centroid[owner, 1])
    z4 = z**4
    r4 = np.bincount(owner, np.abs(z4), M) + 1e-12
    orientation = np.stack([np.bincount(owner, z4.real, M), np.bincount(owner, z4.imag, M)], 1) / r4[:, None]
    return ObjectSummary(centroid, top, lo, hi, colour, count, orientation, list(groups.ids), top_rgb)


def cielab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] → CIELAB (D65) scaled to about [-1, 1]: (L/50 − 1, a/100, b/100).

    Lab separates lightness from hue, and its distances follow what a person calls a different
    colour, so a shade under dimmer light stays near its name and red stays apart from brown."""
    rgb = np.asarray(rgb, dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    L, a, b = 116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])
    return np.stack([L / 50 - 1, a / 100, b / 100], axis=-1)


def objects_of(cloud: Cloud, method: str = "auto", config: SegmentConfig | None = None) -> ObjectSummary:
    """group_objects + summarize."""
    return summarize(cloud, group_objects(cloud, method, config))
