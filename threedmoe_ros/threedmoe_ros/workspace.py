"""The workspace: the one box every room agrees on (metres, world frame, z up, table top at z = 0).

LoHoRavens' / Ravens' tabletop area in front of the arm's base (which sits at the origin): 0.5 m
deep, 1 m wide, 0.3 m high. The simulator crops its clouds to it and rejects plans outside it; the
pose codec maps it onto [−1, 1]; the policy never publishes a pose outside it. numpy only.
"""

from __future__ import annotations

import numpy as np

# (3, 2): rows x, y, z; columns low, high.
WORKSPACE = np.array([[0.25, 0.75], [-0.5, 0.5], [0.0, 0.3]])
WORKSPACE_LOW: tuple[float, float, float] = tuple(float(v) for v in WORKSPACE[:, 0])
WORKSPACE_HIGH: tuple[float, float, float] = tuple(float(v) for v in WORKSPACE[:, 1])
WORKSPACE_CENTER: tuple[float, float, float] = tuple(float(v) for v in WORKSPACE.mean(1))
WORKSPACE_HALF: tuple[float, float, float] = tuple(float(v) for v in (WORKSPACE[:, 1] - WORKSPACE[:, 0]) / 2)


def inside_workspace(xyz: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(..., 3) positions → (...,) bool: inside the box grown by `margin` on every side (NaN is outside)."""
    xyz = np.asarray(xyz)
    # Axis by axis on column views: numpy's .all(axis=-1) over a width-3 axis is ~5x slower on a
    # 30k-point cloud, and this runs on every cloud the policy node plans. The bounds are float64
    # scalars, so a float32 cloud is compared at float64 precision, as before.
    low, high = WORKSPACE[:, 0] - margin, WORKSPACE[:, 1] + margin
    inside = (xyz[..., 0] >= low[0]) & (xyz[..., 0] <= high[0])
    for axis in (1, 2):
        inside &= (xyz[..., axis] >= low[axis]) & (xyz[..., axis] <= high[axis])
    return inside
