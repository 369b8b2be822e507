"""Snap sampled pick/place positions onto the objects the cloud shows.

Pose-DiT regresses positions; after a short CPU training run they are within ~1–2 cm, while a
suction pick must land on a 3–5 cm block and a stack needs ~3 mm. The cloud's objects (data/objects.py:
labels, or segmentation of an unlabelled cloud) tell where each top face is, so the plan's
positions are moved onto it when the model clearly meant that object:
  pick  → the top-face centre of the nearest object within `pick_radius`;
  place → the top-face centre of the nearest block-like object within `place_radius`, when the
          sampled height says the held object goes on top of it (a stack); other places (zones,
          bowls, free table) keep the sampled position.
Orientation and the plan's length are never changed. numpy only; `Planner(refine=True)` uses it.
"""

from __future__ import annotations

import numpy as np

from threedmoe_ros.data.objects import objects_of
from threedmoe_ros.types import PICK, PLACE, Cloud


def refine_plan(poses: np.ndarray, cloud: Cloud, pick_radius: float = 0.04, place_radius: float = 0.03) -> np.ndarray:
    """poses (T, 2, 7) → a copy with positions snapped onto observed objects (see module doc)."""
    poses = np.array(poses, dtype=np.float64, copy=True)
    objs = objects_of(cloud)
    if len(objs) == 0 or len(poses) == 0:
        return poses
    centres = objs.top[:, :2]
    height = objs.hi[:, 2] - objs.lo[:, 2]
    extent = (objs.hi[:, :2] - objs.lo[:, :2]).max(axis=1)
    for step in poses:
        d = np.linalg.norm(centres - step[PICK, :2], axis=1)
        i = int(d.argmin())
        if d[i] <= pick_radius:
            step[PICK, :3] = objs.top[i]
            picked = i
        else:
            picked = -1
        # A block-like support: standing up (a zone is flat), small (a bowl is wide), not the held object.
        support = [k for k in range(len(objs)) if k != picked and 0.02 <= height[k] <= 0.12 and extent[k] <= 0.08]
        if support:
            d = np.linalg.norm(centres[support] - step[PLACE, :2], axis=1)
            k = support[int(d.argmin())]
            # The sampled place height is the held object's bottom + its height: above the support's top means on it.
            if d.min() <= place_radius and step[PLACE, 2] > objs.top[k, 2] + 0.01:
                step[PLACE, :2] = centres[k]
    return poses
