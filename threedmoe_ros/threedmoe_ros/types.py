"""Plain data shared by every room: a point cloud and a plan, as numpy arrays.

Conventions (REP 103): metres, world frame `world` with z up; quaternions in ROS order (x, y, z, w).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class InputError(ValueError):
    """Input that cannot be used; `reason` (also str(self)) says what is wrong and what to send instead."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# A plan is an array (T, 2, 7): T steps × (pick, place) × (x, y, z, qx, qy, qz, qw).
PICK, PLACE = 0, 1
POSE_DIM = 7


def _column(values, dtype, width: int, name: str) -> np.ndarray:
    """values as a contiguous (N, width) array ((N,) for width 1), or InputError naming the field."""
    try:
        array = np.asarray(values)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"dtype {array.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):  # huge values become inf: the validator drops them
            array = np.ascontiguousarray(array, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"Cloud: {name} must be numbers, got {type(values).__name__} ({exc})") from None
    if width == 1:
        return array.reshape(-1)
    if array.size % width:
        raise InputError(f"Cloud: {name} has {array.size} values, not a multiple of {width}: expected shape (N, {width})")
    return array.reshape(-1, width)


@dataclass
class Cloud:
    """A point cloud with optional colour and per-point instance label.

    xyz:   (N, 3) float32, metres, in `frame_id`.
    rgb:   (N, 3) uint8, or None when the sensor gives no colour.
    label: (N,) int32 instance id (0 = table / background), or None on a real sensor.
    """

    xyz: np.ndarray
    rgb: np.ndarray | None = None
    label: np.ndarray | None = None
    frame_id: str = "world"
    stamp_ns: int = 0

    def __post_init__(self) -> None:
        self.xyz = _column(self.xyz, np.float32, 3, "xyz")
        n = len(self.xyz)
        if self.rgb is not None:
            self.rgb = _column(self.rgb, np.uint8, 3, "rgb")
            if len(self.rgb) != n:
                raise InputError(f"Cloud: rgb has {len(self.rgb)} rows but xyz has {n}")
        if self.label is not None:
            self.label = _column(self.label, np.int32, 1, "label")
            if len(self.label) != n:
                raise InputError(f"Cloud: label has {len(self.label)} entries but xyz has {n}")

    def __len__(self) -> int:
        return len(self.xyz)

    def unlabelled(self) -> "Cloud":
        """The same cloud without instance labels: what a bare RGB-D camera gives."""
        return Cloud(self.xyz, self.rgb, None, self.frame_id, self.stamp_ns)

    def subset(self, index: np.ndarray) -> "Cloud":
        return Cloud(
            self.xyz[index],
            None if self.rgb is None else self.rgb[index],
            None if self.label is None else self.label[index],
            self.frame_id,
            self.stamp_ns,
        )


def as_plan(poses: np.ndarray | list) -> np.ndarray:
    """Return `poses` as a float64 plan array of shape (T, 2, 7); raises ValueError naming the shape."""
    plan = np.asarray(poses, dtype=np.float64)
    if plan.ndim == 2 and plan.shape == (2, POSE_DIM):
        plan = plan[None]
    if plan.ndim != 3 or plan.shape[1:] != (2, POSE_DIM):
        raise ValueError(f"a plan has shape (T, 2, {POSE_DIM}) (pick, place × xyz + quaternion xyzw), got {plan.shape}")
    return plan


@dataclass
class EpisodeOutcome:
    """How an episode ended (mirrors threedmoe_msgs/EpisodeResult)."""

    task: str
    seed: int
    instruction: str
    unseen_colors: bool
    steps_taken: int
    reward: float
    success: bool
    reason: str
    detail: str = ""
    extra: dict = field(default_factory=dict)
