"""One way to group a cloud into objects, and what every consumer reads off each object.

    groups = group_objects(cloud)              # labels when the cloud has them, else segmentation
    objs = summarize(cloud, groups)            # centroid, top-face centre, box, colour, count, 4-fold orientation

The light encoder's object tokens, the point encoder's object crops, the pointer head's anchors and
refine all come from here, so they agree on what an object is and where it sits. Objects come in
reading order (centroid x, then y) whichever way they were found, and summarize white-balances their
colours against the table.

Grouping:
- labelled clouds (the simulator's, or an upstream segmentation node's): one object per instance label > 0
  (0 is the table);
- unlabelled clouds (a real sensor): `segment_region` grows regions over neighbours that are alike in
  white-balanced colour, above the table plane (RANSAC, open3d) or flat on it but unlike the table
  (zones), then takes apart what touches in its own colour: towers by cube height, blocks in a bowl
  by the bowl's ring. On the simulator's clouds it recovers 0.98 of objects in the training looks and
  0.95 in the shifted ones (bench/bench_segmentation.py; the table plane + DBSCAN, kept as the
  baseline: 0.63 / 0.56). Returns no groups when open3d is missing or nothing stands out.
numpy, scipy (+ open3d for the table plane) only.
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
    # Neighbourhood (m) and the fewest points of an object (DBSCAN's density). The simulator's clouds are
    # voxelised at 4 mm, so 1 cm joins a block's faces and keeps blocks 2 cm apart (the oracle's slot spacing) separate.
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
    # Region growing (segment_region). Edges join points within `eps` whose white-balanced
    # chromaticities differ by at most `color_edge` (L1); flat points count as candidates when theirs
    # (white-balanced) differs from mid grey by more than `flat_color_distance`. Measured on
    # training-look clouds: 99.99 % of edges inside an object differ by ≤ 0.02, the median edge between
    # two differently coloured objects by 0.16.
    color_edge: float = 0.04
    # Between two flat points (which face the light alike), white-balanced rgb (0..1, L2) as well.
    flat_edge: float = 0.06
    # Towers: a region whose top lies above `tower_ratio` times its top face's edge holds more than one
    # cube; the top one is cut `tower_cut` edges below the top. Top-face points lie within `top_face` of the
    # highest; cubes' edges lie within [min_edge, max_edge].
    # Two like cubes stand 2 edges tall and a smaller one on a bigger more; 1.8 leaves whole a single box up
    # to 1.8 times as tall as wide (tested: 10 × 6 cm).
    tower_ratio: float = 1.8
    tower_cut: float = 1.0
    top_face: float = 0.005
    min_edge: float = 0.02
    max_edge: float = 0.07
    # Bowls: raised points more than this inside the wall ring's radius stand in the bowl.
    bowl_wall_band: float = 0.02
    # A raised region is an arc of a bowl's wall when a circle of radius within `bowl_radius` (m) fits its
    # points to `bowl_fit` RMS; like-coloured regions on the same circle are joined to it.
    bowl_radius: tuple[float, float] = (0.045, 0.095)
    bowl_fit: float = 0.006
    method: str = "region"
    """Which segmenter (SEGMENTERS): "region" (region growing, segment_region) or "dbscan" (table plane +
    DBSCAN, the first one, kept as the baseline bench/bench_segmentation.py compares against)."""

    def __post_init__(self) -> None:
        if self.method not in SEGMENTERS:
            raise ValueError(f"SegmentConfig.method must be one of {sorted(SEGMENTERS)}, got {self.method!r}")


GROUPINGS = ("auto", "labels", "segment")  # how group_objects finds a cloud's objects


@dataclass
class ObjectGroups:
    indices: list[np.ndarray]
    """Point indices of each object, in reading order (by centroid x, then y), whichever the method."""
    ids: list[int]
    """Instance label of each object, or -1 when segmented."""
    method: str
    """"labels" or "segment" (or "none": nothing found)."""

    def __len__(self) -> int:
        return len(self.indices)


def group_objects(cloud: Cloud, method: str = "auto", config: SegmentConfig | None = None) -> ObjectGroups:
    """Objects of `cloud`: by instance label ("labels"), by segmentation ("segment"), or "auto"
    (labels when the cloud carries any label > 0, else segmentation)."""
    if method not in GROUPINGS:
        raise ValueError(f"object grouping must be one of {', '.join(GROUPINGS)}, got {method!r}")
    if method in ("auto", "labels") and cloud.label is not None and (cloud.label > 0).any():
        ids = [int(i) for i in np.unique(cloud.label) if i > 0]
        groups = [np.flatnonzero(cloud.label == i) for i in ids]
        order = _reading_order(cloud.xyz, groups)
        return ObjectGroups([groups[k] for k in order], [ids[k] for k in order], "labels")
    if method == "labels":
        raise ValueError("object grouping 'labels' but the cloud has no instance labels > 0")
    groups = segment(cloud, config or SegmentConfig())
    groups = [groups[k] for k in _reading_order(cloud.xyz, groups)]
    return ObjectGroups(groups, [-1] * len(groups), "segment" if groups else "none")


def _reading_order(xyz: np.ndarray, groups: list[np.ndarray]) -> list[int]:
    """Indices of `groups` by centroid x, then y (rounded to the millimetre): one order for labelled and
    segmented clouds alike. The simulator numbers the objects a task is about first, so label order told
    a policy which objects mattered, and a model that reads objects in sequence (the LM) learned it:
    the shipped default scored 0.03 on put-block-in-zone with segmented objects against 0.95 labelled."""
    return sorted(range(len(groups)), key=lambda k: tuple(np.round(xyz[groups[k], :2].astype(np.float64).mean(0), 3)))


def segment(cloud: Cloud, cfg: SegmentConfig) -> list[np.ndarray]:
    """Object point indices of an unlabelled tabletop cloud, by `cfg.method`."""
    try:
        import open3d  # noqa: F401  (the table plane's RANSAC)
    except ImportError:
        warnings.warn("open3d is not installed: an unlabelled cloud cannot be segmented into objects", stacklevel=2)
        return []
    if len(cloud) < 3:
        return []
    return SEGMENTERS[cfg.method](cloud, cfg)


def segment_dbscan(cloud: Cloud, cfg: SegmentConfig) -> list[np.ndarray]:
    """Table plane + DBSCAN on the points above it, and on flat points unlike the table."""
    import open3d as o3d

    xyz = cloud.xyz.astype(np.float64)
    height = _table_height(xyz, cfg)
    if height is None:  # no horizontal plane: cluster everything
        raised, flat = np.arange(len(xyz)), np.zeros(0, np.int64)
    else:
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
    return objects


# The table's median colour in training-look clouds (336 clouds of bench/bench_segmentation.py; spread
# ±0.04 per channel there, ±0.1 in the shifted look): what object colours are balanced to.
TABLE_RGB = np.array([138.5, 126.0, 113.0]) / 255


def white_balance(rgb: np.ndarray, table: np.ndarray, target: np.ndarray | float = 0.5) -> np.ndarray:
    """(N, 3) colours in [0, 1] seen where the table looks `table` (3,), as they would look where it
    looks `target`: a von Kries (grey-world) correction, channel by channel.

    The table is the one surface every tabletop cloud shows most of, so its median colour tells the
    light's tint and strength; dividing it out brings a shifted look's colours back to the training look's."""
    return np.clip(rgb * (target / np.maximum(table, 1e-3)), 0.0, 1.0)


def chromaticity(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) colours → their shares r, g, b of r + g + b: what stays when a face turns from the light.

    A small offset keeps near-black points from taking any hue."""
    rgb = rgb + 0.02
    return rgb / rgb.sum(axis=-1, keepdims=True)


def segment_region(cloud: Cloud, cfg: SegmentConfig) -> list[np.ndarray]:
    """Region growing over a neighbour graph whose edges join points that are close and alike in colour.

    1. RANSAC finds the table plane; points above `plane_distance` are *raised*, points on it whose
       white-balanced colour is far from the table's are *flat* candidates.
    2. Colours are white-balanced against the table (white_balance) and compared by chromaticity, which a
       block's lit top and shaded sides share; two flat points are compared by lightness as well.
    3. Points join along edges shorter than `eps` between points within `color_edge` of each other: a
       block in a bowl, blocks side by side and differently coloured towers come apart.
    4. Arcs of one bowl's wall ring are joined (_join_bowl_arcs). In a region, flat points beyond the
       raised part's footprint are a flat object it stands on (a zone), those under it its own floor or rim.
    5. Like-coloured things that touch: raised points well inside a bowl's ring stand in it (_split_bowl);
       a region taller than the cube its top face belongs to is a tower, cut cube by cube (_split_tower).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    xyz = cloud.xyz.astype(np.float64)
    height = _table_height(xyz, cfg)
    if height is None:  # no table in view: one region per connected, like-coloured patch
        height = np.full(len(xyz), np.inf)
    rgb = cloud.rgb.astype(np.float64) / 255.0 if cloud.rgb is not None else np.full_like(xyz, 0.5)
    on_plane = np.abs(height) <= cfg.plane_distance
    table_rgb = np.median(rgb[on_plane], axis=0) if on_plane.any() else np.full(3, 0.5)
    balanced = white_balance(rgb, table_rgb)
    chroma = chromaticity(balanced)
    raised = height > cfg.plane_distance
    # Flat points face the light as the table does, so lightness tells them apart from it too (a grey zone).
    flat = on_plane & (np.linalg.norm(balanced - 0.5, axis=1) > cfg.flat_color_distance / 255)
    index = np.flatnonzero(raised | flat)
    if len(index) == 0:
        return []
    # Neighbours within eps that are alike: in chromaticity (shading-free) anywhere, and in lightness
    # too between two flat points.
    pairs = cKDTree(xyz[index]).query_pairs(cfg.eps, output_type="ndarray")
    a, b = index[pairs[:, 0]], index[pairs[:, 1]]
    alike = np.abs(chroma[a] - chroma[b]).sum(1) <= cfg.color_edge
    both_flat = flat[a] & flat[b]
    alike &= ~both_flat | (np.linalg.norm(balanced[a] - balanced[b], axis=1) <= cfg.flat_edge)
    i, j = pairs[alike].T
    _, comp = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(len(index),) * 2), directed=False)
    objects = []
    for region in _join_bowl_arcs(xyz, [index[comp == k] for k in np.flatnonzero(np.bincount(comp) >= cfg.min_points)],
                                  raised, chroma, cfg):
        up, down = region[raised[region]], region[~raised[region]]
        if len(up) < cfg.min_points:  # a flat thing: a zone, a sheet
            if len(region) >= cfg.min_flat_points and np.ptp(xyz[region, :2], axis=0).max() >= cfg.min_flat_extent:
                objects.append(region)
            continue
        # Flat points beyond the raised part's footprint are a flat object it stands on (a block on a zone
        # of its colour); those under it are its own (a bowl's floor, a block's bottom rim).
        lo, hi = xyz[up, :2].min(0) - 0.003, xyz[up, :2].max(0) + 0.003
        under = np.all((xyz[down, :2] >= lo) & (xyz[down, :2] <= hi), axis=1)
        beyond = down[~under]
        if len(beyond) >= cfg.min_flat_points and np.ptp(xyz[beyond, :2], axis=0).max() >= cfg.min_flat_extent:
            objects.append(beyond)
            down = down[under]
        walls, *inner = _split_bowl(xyz, up, down, cfg)
        pieces = _split_tower(xyz, height, walls, cfg)
        pieces[-1] = np.concatenate([pieces[-1], down])  # the floor and rim go with the lowest piece
        objects.extend(pieces)
        objects.extend(piece for block in inner for piece in _split_tower(xyz, height, block, cfg))
    return objects


def _table_height(xyz: np.ndarray, cfg: SegmentConfig) -> np.ndarray | None:
    """Signed height of each point above the table plane (RANSAC), or None when no plane is horizontal."""
    import open3d as o3d

    o3d.utility.random.seed(cfg.seed)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    (a, b, c, d), _ = pcd.segment_plane(distance_threshold=cfg.plane_distance, ransac_n=3, num_iterations=200)
    normal = np.array([a, b, c])
    if abs(normal[2]) < 0.9 * np.linalg.norm(normal):
        return None
    return (xyz @ normal + d) / np.linalg.norm(normal) * np.sign(normal[2])


def _split_tower(xyz: np.ndarray, height: np.ndarray, region: np.ndarray, cfg: SegmentConfig) -> list[np.ndarray]:
    """`region` cut into cubes from the top while it is taller than the cube on top of it (see segment_region)."""
    pieces = []
    while len(region) >= cfg.min_points:
        h = height[region]
        top = h.max()
        face = region[h > top - cfg.top_face]
        edge = _footprint_edge(xyz[face, :2])
        if top < cfg.tower_ratio * edge or edge < cfg.min_edge or edge > cfg.max_edge:
            break
        cut = top - edge * cfg.tower_cut
        upper, lower = region[h >= cut], region[h < cut]
        if len(lower) < cfg.min_points:
            break
        pieces.append(upper)
        region = lower
    return pieces + [region]


def _footprint_edge(xy: np.ndarray) -> float:
    """Side of the smallest square, over yaws in 5° steps, that holds a patch of points (a top face)."""
    if len(xy) < 3:
        return 0.0
    yaw = np.deg2rad(np.arange(0, 90, 5))
    axes = np.stack([np.cos(yaw), np.sin(yaw)])  # (2, Y)
    ptp_x, ptp_y = np.ptp(xy @ axes, axis=0), np.ptp(xy @ np.stack([-axes[1], axes[0]]), axis=0)
    return float(np.maximum(ptp_x, ptp_y).min())


def _fit_circle(xy: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Least-squares circle through xy points (Kasa): centre, radius, RMS distance off it."""
    A = np.column_stack([2 * xy, np.ones(len(xy))])
    (cx, cy, c), *_ = np.linalg.lstsq(A, (xy**2).sum(1), rcond=None)
    centre = np.array([cx, cy])
    radius = float(np.sqrt(max(c + cx**2 + cy**2, 0.0)))
    return centre, radius, float(np.sqrt(np.mean((np.linalg.norm(xy - centre, axis=1) - radius) ** 2)))


def _join_bowl_arcs(xyz: np.ndarray, regions: list[np.ndarray], raised: np.ndarray, chroma: np.ndarray,
                    cfg: SegmentConfig) -> list[np.ndarray]:
    """Regions that are arcs of one bowl's wall ring, joined. With one camera, or where depth drops out,
    a bowl's near and far walls may share no close neighbours; each is an arc of the same circle."""
    regions = sorted(regions, key=len, reverse=True)
    hues = [np.median(chroma[r], axis=0) for r in regions]
    out: list[np.ndarray] = []
    used = [False] * len(regions)
    for i, region in enumerate(regions):
        if used[i]:
            continue
        used[i] = True
        up = region[raised[region]]
        if len(up) >= cfg.min_points:
            centre, radius, rms = _fit_circle(xyz[up, :2])
            if cfg.bowl_radius[0] <= radius <= cfg.bowl_radius[1] and rms <= cfg.bowl_fit:
                for j in range(i + 1, len(regions)):
                    other = regions[j]
                    if used[j] or np.abs(hues[j] - hues[i]).sum() > cfg.color_edge:
                        continue
                    off = np.abs(np.linalg.norm(xyz[other, :2] - centre, axis=1) - radius)
                    if np.mean(off <= cfg.bowl_wall_band) >= 0.8:
                        region = np.concatenate([region, other])
                        used[j] = True
        out.append(region)
    return out


def _split_bowl(xyz: np.ndarray, up: np.ndarray, down: np.ndarray, cfg: SegmentConfig) -> list[np.ndarray]:
    """A bowl with blocks of its own colour in it, as [bowl walls, block, ...]; [up] when it is not one.

    A bowl is wider than any block and shows its floor; raised points well inside its wall ring are
    what stands in it."""
    lo, hi = xyz[up, :2].min(0), xyz[up, :2].max(0)
    radius = (hi - lo).mean() / 2
    if 2 * radius <= cfg.max_edge * 1.5 or len(down) < cfg.min_flat_points:
        return [up]
    centre = (lo + hi) / 2
    inside = np.linalg.norm(xyz[up, :2] - centre, axis=1) < radius - cfg.bowl_wall_band
    if inside.sum() < cfg.min_points:
        return [up]
    return [up[~inside], up[inside]]


SEGMENTERS = {"dbscan": segment_dbscan, "region": segment_region}


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


def object_colors(cloud: Cloud, groups: ObjectGroups) -> np.ndarray:
    """(N, 3) colours of `cloud` in [0, 1] as under the training looks' light: white-balanced against the
    table, which is what no group holds, for the most part (0.5 grey where the cloud has no colour)."""
    if cloud.rgb is None:
        return np.full((len(cloud), 3), 0.5)
    rgb = cloud.rgb.astype(np.float64) / 255.0
    table = np.ones(len(cloud), bool)
    if len(groups):
        table[np.concatenate(groups.indices)] = False
    return white_balance(rgb, np.median(rgb[table], axis=0), TABLE_RGB) if table.any() else rgb


def summarize(cloud: Cloud, groups: ObjectGroups, balance: bool = True) -> ObjectSummary:
    """Geometry and colour of each group (see ObjectSummary); M = len(groups), possibly 0. Colours are
    white-balanced against the table (`balance`): a nearest-centroid colour namer fitted on training-look
    top faces names 0.82 of shifted-look objects raw and 0.98 balanced (0.99 of training-look ones either way)."""
    M = len(groups)
    if M == 0:
        z3 = np.zeros((0, 3))
        return ObjectSummary(z3, z3, z3, z3, z3, np.zeros(0), np.zeros((0, 2)), [], z3)
    xyz = cloud.xyz.astype(np.float64)
    rgb = object_colors(cloud, groups) if balance else \
        (cloud.rgb.astype(np.float64) / 255.0 if cloud.rgb is not None else np.full_like(xyz, 0.5))
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


def objects_of(cloud: Cloud, method: str = "auto", config: SegmentConfig | None = None,
               balance: bool = True) -> ObjectSummary:
    """group_objects + summarize."""
    return summarize(cloud, group_objects(cloud, method, config), balance)
