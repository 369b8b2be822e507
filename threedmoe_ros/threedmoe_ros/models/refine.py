"""Snap sampled pick/place positions onto the objects the cloud shows.

Pose-DiT regresses positions; after a short CPU training run they are within ~1–2 cm, while a
suction pick must land on a 3–5 cm block and a stack needs ~3 mm. A labelled cloud tells exactly
where each object's top face is, so the plan's positions are moved onto it when the model clearly
meant that object:
  pick  → the top-face centre of the nearest object within `pick_radius`;
  place → the top-face centre of the nearest block-like object within `place_radius`, when the
          sampled height says the held object goes on top of it (a stack); other places (zones,
          bowls, free table) keep the sampled position.
Orientation and the plan's length are never changed. numpy only; `Policy.plan(refine=True)` uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from threedmoe_ros.types import PICK, PLACE, Cloud


@dataclass
class ObjectTop:
    label: int
    top_xy: np.ndarray  # centre of the top face (points within 5 mm of the highest), world frame
    top_z: float
    height: float  # top above the lowest point of the object
    extent: float  # largest xy side of its bounding box


def object_tops(cloud: Cloud) -> list[ObjectTop]:
    if cloud.label is None:
        return []
    tops = []
    for label in np.unique(cloud.label):
        if label <= 0:
            continue
        xyz = cloud.xyz[cloud.label == label]
        z_max = float(xyz[:, 2].max())
        top = xyz[xyz[:, 2] > z_max - 0.005]
        extent = float((xyz[:, :2].max(0) - xyz[:, :2].min(0)).max())
        tops.append(ObjectTop(int(label), top[:, :2].mean(0), z_max, z_max - float(xyz[:, 2].min()), extent))
    return tops


def refine_plan(poses: np.ndarray, cloud: Cloud, pick_radius: float = 0.04, place_radius: float = 0.03) -> np.ndarray:
    """poses (T, 2, 7) → a copy with positions snapped onto observed objects (see module doc)."""
    poses = np.array(poses, dtype=np.float64, copy=True)
    tops = object_tops(cloud)
    if not tops or len(poses) == 0:
        return poses
    centres = np.stack([t.top_xy for t in tops])
    for step in poses:
        d = np.linalg.norm(centres - step[PICK, :2], axis=1)
        i = int(d.argmin())
        if d[i] <= pick_radius:
            step[PICK, :2], step[PICK, 2] = tops[i].top_xy, tops[i].top_z
            picked = i
        else:
            picked = -1
        # A block-like support: standing up (a zone is flat), small (a bowl is wide), not the held object.
        support = [k for k, t in enumerate(tops) if k != picked and 0.02 <= t.height <= 0.12 and t.extent <= 0.08]
        if support:
            d = np.linalg.norm(centres[support] - step[PLACE, :2], axis=1)
            k = support[int(d.argmin())]
            # The sampled place height is the held object's bottom + its height: above the support's top means on it.
            if d.min() <= place_radius and step[PLACE, 2] > tops[k].top_z + 0.01:
                step[PLACE, :2] = tops[k].top_xy
    return poses
