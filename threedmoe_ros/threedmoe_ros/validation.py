"""The one input validator and the one plan validator. numpy only: no torch, no rclpy, no pybullet.

Inputs (what a sensor or a client sends) go through `validate_text` and `validate_cloud`; every
failure raises `InputError`, whose message is the reason a user reads on the policy node's
`status` topic. The planner, the nodes and the evaluation call these two and nothing else.

Plans (what the policy wants executed) go through `validate_plan` before anything is published
or executed: finite, inside the workspace, unit quaternions, the suction tool near vertical, and
within the arm's reach. The simulator's `TabletopEnv.validate` applies the same rules and adds an
exact inverse-kinematics check, which needs pybullet; here reach is the envelope fitted to it.

What an empty plan means: the policy judges the instruction done. It is only ever made for a
cloud that passed `validate_cloud`, which refuses clouds with no object in them, so "done" can
never be the answer to a cloud that had nothing in it.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from threedmoe_ros.types import InputError  # defined beside Cloud, which raises it too
from threedmoe_ros.workspace import WORKSPACE, inside_workspace

if TYPE_CHECKING:
    from threedmoe_ros.types import Cloud

# Longest instruction or question accepted, in characters: longer text is a client bug, not a task.
MAX_INSTRUCTION_CHARS = 512
# Clouds with more points are refused: a 10 M-point cloud is a driver misconfiguration, not a
# scene, and turning it into tokens would stall a node for seconds.
MAX_POINTS = 2_000_000



# ------------------------------------------------------------------------------------------ text

def validate_text(text, max_chars: int = MAX_INSTRUCTION_CHARS, what: str = "instruction") -> str:
    """The instruction (or question) stripped of surrounding white space, or InputError saying why not.

    Refused: anything but a str, empty or white space only, longer than `max_chars` characters
    (checked first, so a 10 MB string costs nothing), control characters (NUL included: a NUL
    would silently cut the text in C code downstream), and U+FFFD, which is what invalid UTF-8
    becomes when a ROS string is decoded.
    """
    if not isinstance(text, str):
        raise InputError(f"{what} must be text (str), got {type(text).__name__}")
    if len(text) > max_chars:
        raise InputError(f"{what} has {len(text)} characters, more than the limit of {max_chars}; send one sentence")
    stripped = text.strip()
    if not stripped:
        raise InputError(f"{what} is empty; send a sentence such as 'put the red block in the green zone'")
    bad = sorted({c for c in text if (unicodedata.category(c) == "Cc" and c not in "\t\n\r") or c == "\ufffd"})
    if bad:
        names = ", ".join(f"U+{ord(c):04X}" for c in bad[:5])
        hint = " (U+FFFD: the text was not valid UTF-8)" if "\ufffd" in bad else ""
        raise InputError(f"{what} contains control characters or invalid UTF-8 ({names}){hint}; send plain UTF-8 text")
    return stripped


# ----------------------------------------------------------------------------------------- clouds

@dataclass(frozen=True)
class CloudLimits:
    """What a cloud must satisfy before the policy plans on it (the node exposes each as a parameter)."""

    max_points: int = MAX_POINTS
    # Points farther than this (m) outside the workspace box are absurd for this robot (1e30,
    # a wrong unit, a byte-swapped float) and are dropped; NaN and inf are dropped too.
    sanity_margin: float = 1.0
    # A cloud must keep at least this many points inside the workspace (grown by 5 cm).
    min_points: int = 10
    # An object is a label > 0 with at least this many points, or (unlabelled clouds) this many
    # points more than `object_height` above the lowest point.
    min_object_points: int = 5
    object_height: float = 0.005
    # Distinct instance labels allowed: grouping costs grow with them, and no tabletop has more.
    max_labels: int = 1024
    # Accepted frame_ids; empty = any non-empty frame (there is no tf here to transform others).
    frames: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_points", "min_points", "min_object_points", "max_labels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CloudLimits.{name} must be a positive int, got {value!r}")
        if not (math.isfinite(self.sanity_margin) and self.sanity_margin >= 0):
            raise ValueError(f"CloudLimits.sanity_margin must be a finite number >= 0, got {self.sanity_margin!r}")
        if not (math.isfinite(self.object_height) and self.object_height >= 0):
            raise ValueError(f"CloudLimits.object_height must be a finite number >= 0, got {self.object_height!r}")
        object.__setattr__(self, "frames", tuple(str(f) for f in self.frames))


def _box(bounds: np.ndarray) -> str:
    return " ".join(f"{a}∈[{lo:g}, {hi:g}]" for a, (lo, hi) in zip("xyz", np.asarray(bounds)))


def validate_cloud(cloud: "Cloud", limits: CloudLimits = CloudLimits(), drop: bool = True) -> "Cloud":
    """The cloud to plan on, or InputError saying why there is none.

    With `drop` (what a sensor needs) non-finite points and points outside the sanity box are
    removed; without it (the planner, whose callers pass clouds they made) any such point is
    an error. Then the cloud must have points in the workspace, not all in one place, and at least
    one object: a cloud of only table, one point or identical points gives no plan at all.
    """
    from threedmoe_ros.types import Cloud

    if not isinstance(cloud, Cloud):
        raise InputError(f"cloud must be a threedmoe_ros.types.Cloud, got {type(cloud).__name__}")
    n = len(cloud)
    if n == 0:
        raise InputError("cloud has no points; check the sensor or the cloud conversion")
    if n > limits.max_points:
        raise InputError(f"cloud has {n} points, more than the limit {limits.max_points}; downsample it first")
    if not cloud.frame_id:
        raise InputError("cloud has an empty frame_id; set header.frame_id (e.g. 'world')")
    if limits.frames and cloud.frame_id not in limits.frames:
        raise InputError(f"cloud frame '{cloud.frame_id}' is not one of {list(limits.frames)}; publish in one of them")

    xyz = cloud.xyz
    sane = inside_workspace(xyz, margin=limits.sanity_margin)  # NaN and ±inf are outside any box
    if not sane.all():
        finite = np.isfinite(xyz).all(axis=1)
        bad_nan, bad_far = int((~finite).sum()), int((finite & ~sane).sum())
        if not drop:
            what = [f"{bad_nan} have NaN or infinite coordinates"] * bool(bad_nan) + [
                f"{bad_far} lie more than {limits.sanity_margin:g} m outside the workspace"] * bool(bad_far)
            raise InputError(f"of the cloud's {n} points, {' and '.join(what)}; drop them before planning")
        if not sane.any():
            raise InputError(
                f"none of the {n} points is usable: {bad_nan} NaN/inf, {bad_far} more than {limits.sanity_margin:g} m "
                f"outside the workspace {_box(WORKSPACE)} (wrong unit, frame or endianness?)"
            )
        cloud = cloud.subset(sane)
        xyz = cloud.xyz

    near = inside_workspace(xyz, margin=0.05)
    inner = xyz[near]
    if len(inner) < limits.min_points:
        raise InputError(
            f"only {len(inner)} of {len(cloud)} points lie inside the workspace {_box(WORKSPACE)} (limit "
            f"{limits.min_points}); is the cloud in the world frame, in metres, with the right endianness?"
        )
    extent = max(float(np.ptp(inner[:, axis])) for axis in range(3))
    if extent < 1e-3:
        raise InputError(f"all {len(inner)} points in the workspace are at one place (extent < 1 mm); the cloud shows no scene")

    if cloud.label is not None:
        labels, counts = np.unique(cloud.label[near], return_counts=True)
        if len(labels) > limits.max_labels:
            raise InputError(f"cloud has {len(labels)} distinct labels, more than the limit {limits.max_labels}; "
                             "a label is an object instance (0 = table)")
        objects = int(((labels > 0) & (counts >= limits.min_object_points)).sum())
        if objects == 0:
            raise InputError(f"cloud has no objects: no label > 0 has {limits.min_object_points} or more points in the "
                             "workspace (0 = table); there is nothing to pick")
    else:
        z = inner[:, 2]
        if int((z > z.min() + limits.object_height).sum()) < limits.min_object_points:
            raise InputError(f"cloud has no objects: fewer than {limits.min_object_points} points stand more than "
                             f"{limits.object_height * 1e3:g} mm above the lowest one; there is nothing to pick")
    return cloud


# ------------------------------------------------------------------------------------------ plans

# Reach of the simulator's UR5-like arm with the suction tool near vertical, fitted to its
# pybullet IK (2 500 random targets, 1 cm tolerance): a target at horizontal distance h from the
# base axis and height z is reachable when h >= REACH_MIN_H and h² + (z − REACH_Z0)² <= REACH_R².
# Inside the workspace this disagrees with the IK only within ~1 cm of the envelope.
REACH_MIN_H, REACH_Z0, REACH_R = 0.14, -0.14, 0.925


def reachable(xyz: np.ndarray) -> np.ndarray:
    """(..., 3) tool-tip positions → (...,) bool: inside the arm's reach envelope (NaN is not)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    h = np.hypot(xyz[..., 0], xyz[..., 1])
    return (h >= REACH_MIN_H) & (h**2 + (xyz[..., 2] - REACH_Z0) ** 2 <= REACH_R**2)


def tilt_deg(quaternion: np.ndarray) -> float:
    """Angle between the tool axis (the pose's −z) and straight down, degrees; x y z w order."""
    q = np.asarray(quaternion, dtype=np.float64)
    q = q / np.linalg.norm(q)
    return math.degrees(math.acos(float(np.clip(1 - 2 * (q[0] ** 2 + q[1] ** 2), -1.0, 1.0))))


def validate_plan(plan, margin: float = 0.01, max_tilt_deg: float = 30.0, reach: bool = True) -> str:
    """'' when every pose of `plan` (T, 2, 7) may be executed, else what is wrong with the first bad one.

    The rules of the simulator (sim/env.py), checked pose by pose in this order: finite, unit
    quaternion (norm within 10 %), position inside the workspace (workspace.WORKSPACE, the one box
    every plan check uses) grown by `margin`, tool within `max_tilt_deg` of vertical, and (with
    `reach`) inside the arm's reach envelope. An empty plan is valid: it says the instruction is done.
    """
    from threedmoe_ros.types import as_plan

    try:
        plan = as_plan(plan) if np.size(plan) else np.zeros((0, 2, 7))
    except (TypeError, ValueError) as exc:
        return str(exc)
    for k, step in enumerate(plan):
        for which, pose in (("pick", step[0]), ("place", step[1])):
            where = f"step {k} {which}"
            if not np.all(np.isfinite(pose)):
                return f"{where} pose has non-finite values {pose.tolist()}"
            norm = float(np.linalg.norm(pose[3:]))
            if not 0.9 <= norm <= 1.1:
                return f"{where} quaternion has norm {norm:.3f}; expected a unit quaternion (x, y, z, w)"
            x, y, z = pose[:3]
            if not inside_workspace(pose[:3], margin):
                return f"{where} position ({x:.3f}, {y:.3f}, {z:.3f}) is outside the workspace {_box(WORKSPACE)}"
            tilt = tilt_deg(pose[3:])
            if tilt > max_tilt_deg:
                return f"{where} tool is tilted {tilt:.0f}° from vertical (limit {max_tilt_deg:.0f}°)"
            if reach and not reachable(pose[:3]):
                return f"{where} position ({x:.3f}, {y:.3f}, {z:.3f}) is out of the arm's reach"
    return ""
