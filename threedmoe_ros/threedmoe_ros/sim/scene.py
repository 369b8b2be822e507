"""The per-episode world a task builds: objects with stable labels, collision-free placement, and
the geometric predicates (in a zone, in a bowl, on top of) that both success checks and the
oracle use — one definition, so the oracle aims at exactly what the check scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pybullet as p

from threedmoe_ros.sim import assets
from threedmoe_ros.sim.assets import Object

# Where objects are sampled: the workspace less a margin that keeps every pose, and a 4-block
# tower on it, inside the UR5's reach (the far corners of the workspace are not).
SAMPLE_BOUNDS = np.array([[0.30, 0.70], [-0.42, 0.42]])

# Ravens' tolerances: position 1 cm, height 1.5 cm, yaw 15° modulo the object's symmetry.
POS_TOL, HEIGHT_TOL, YAW_TOL = 0.01, 0.015, math.radians(15)
ZONE_FRACTION = 0.8  # share of a block's footprint that must lie inside a zone/area
BOWL_FLOOR = 0.004


class SamplingError(RuntimeError):
    """The sampler could not fit the requested objects on the table."""


@dataclass
class Region:
    """An axis-aligned rectangle on the table: a zone's square or a named area of the workspace."""

    center: tuple[float, float]
    half: tuple[float, float]
    name: str = ""

    def contains(self, xy: np.ndarray) -> np.ndarray:
        d = np.abs(np.asarray(xy)[..., :2] - np.asarray(self.center))
        return np.all(d <= np.asarray(self.half) + 1e-9, axis=-1)


@dataclass
class Pose2:
    """Where an object is: centre position (x, y, z) and yaw about +z."""

    position: np.ndarray
    yaw: float


def wrap(angle: float, period: float) -> float:
    """Angle wrapped to [-period/2, period/2)."""
    return (angle + period / 2) % period - period / 2


def footprint(obj: Object, pose: Pose2, n: int = 5) -> np.ndarray:
    """(n*n, 2) points spread over the block's bottom face."""
    s = (np.arange(n) + 0.5) / n - 0.5
    gx, gy = np.meshgrid(s * obj.extent, s * obj.extent)
    c, si = math.cos(pose.yaw), math.sin(pose.yaw)
    local = np.stack([gx.ravel(), gy.ravel()], axis=1)
    return local @ np.array([[c, si], [-si, c]]) + pose.position[:2]


def fraction_inside(obj: Object, pose: Pose2, region: Region) -> float:
    return float(region.contains(footprint(obj, pose)).mean())


def in_region(obj: Object, pose: Pose2, region: Region) -> bool:
    return fraction_inside(obj, pose, region) >= ZONE_FRACTION


def in_bowl(obj: Object, pose: Pose2, bowl: Object, bowl_pose: Pose2) -> bool:
    """Centre inside the bowl's floor and bottom below its rim."""
    inner = assets.BOWL_RADIUS - assets.BOWL_WALL
    horizontal = np.linalg.norm(pose.position[:2] - bowl_pose.position[:2])
    bottom = pose.position[2] - obj.height / 2
    return horizontal <= inner - obj.extent / 2 + 0.005 and bottom < assets.BOWL_HEIGHT


def on_top(obj: Object, pose: Pose2, below: Object, below_pose: Pose2) -> bool:
    """Stacked as Ravens scores it: centred within 1 cm, at the right height within 1.5 cm, yaw within 15°."""
    horizontal = np.linalg.norm(pose.position[:2] - below_pose.position[:2])
    expected_z = below_pose.position[2] + (below.height + obj.height) / 2
    yaw_error = abs(wrap(pose.yaw - below_pose.yaw, math.pi / 2))
    return horizontal <= POS_TOL and abs(pose.position[2] - expected_z) <= HEIGHT_TOL and yaw_error <= YAW_TOL


def resting_on(obj: Object, pose: Pose2, below: Object, below_pose: Pose2) -> bool:
    """Loosely on top (any offset that still rests on it): used to find what covers what."""
    reach = below.extent / 2 + obj.extent / 2 if below.kind == "block" else 0.0
    horizontal = np.linalg.norm(pose.position[:2] - below_pose.position[:2])
    return below.kind == "block" and horizontal < reach * 0.9 and pose.position[2] > below_pose.position[2] + 0.5 * below.height


class Scene:
    """Objects of one episode; labels are 1..K in creation order, stable for the whole episode."""

    def __init__(self, client: int, rng: np.random.Generator, unseen_colors: bool):
        self.client = client
        self.rng = rng
        self.unseen_colors = unseen_colors
        self.colors = assets.colors_for(unseen_colors)
        self.objects: list[Object] = []

    # ------------------------------------------------------------ building

    def pick_colors(self, k: int) -> list[str]:
        return [str(c) for c in self.rng.choice(self.colors, size=k, replace=False)]

    def _add(self, obj: Object) -> int:
        obj.label = len(self.objects) + 1
        self.objects.append(obj)
        return len(self.objects) - 1

    def free_xy(self, radius: float, within: Region | None = None, avoid: list[Region] = (), tries: int = 2000) -> np.ndarray:
        """A random xy where a disc of `radius` overlaps no object (and none of `avoid`)."""
        lo, hi = SAMPLE_BOUNDS[:, 0] + radius, SAMPLE_BOUNDS[:, 1] - radius
        if within is not None:
            lo = np.maximum(lo, np.asarray(within.center) - within.half + radius)
            hi = np.minimum(hi, np.asarray(within.center) + within.half - radius)
        for _ in range(tries):
            xy = self.rng.uniform(lo, hi)
            if self._clear(xy, radius, avoid):
                return xy
        raise SamplingError(f"no free spot of radius {radius:.3f} m among {len(self.objects)} objects")

    def _clear(self, xy: np.ndarray, radius: float, avoid=()) -> bool:
        for obj in self.objects:
            pos = self.pose(obj).position
            if np.linalg.norm(xy - pos[:2]) < radius + obj.radius + 0.015:
                return False
        for region in avoid:
            d = np.abs(xy - np.asarray(region.center)) - np.asarray(region.half)
            if np.all(d < radius + 0.01):
                return False
        return True

    def add_block(self, color: str, size: str = "medium", xy=None, z: float | None = None, within: Region | None = None,
                  avoid: list[Region] = ()) -> int:
        edge = assets.BLOCK_SIZES[size]
        if xy is None:
            xy = self.free_xy(edge * math.sqrt(0.5), within, avoid)
        z = edge / 2 if z is None else z
        yaw = float(self.rng.uniform(-math.pi / 4, math.pi / 4))
        return self._add(assets.make_block(self.client, color, size, [xy[0], xy[1], z], yaw))

    def add_bowl(self, color: str, avoid: list[Region] = ()) -> int:
        xy = self.free_xy(assets.BOWL_RADIUS, avoid=avoid)
        return self._add(assets.make_bowl(self.client, color, [xy[0], xy[1], 0.0]))

    def add_zone(self, color: str) -> int:
        xy = self.free_xy(assets.ZONE_SIZE * math.sqrt(0.5))
        return self._add(assets.make_zone(self.client, color, xy))

    # ------------------------------------------------------------ state

    def pose(self, obj: Object | int) -> Pose2:
        obj = self.objects[obj] if isinstance(obj, (int, np.integer)) else obj
        pos, quat = p.getBasePositionAndOrientation(obj.body, physicsClientId=self.client)
        yaw = p.getEulerFromQuaternion(quat)[2]
        return Pose2(np.array(pos), float(yaw))

    def poses(self) -> list[Pose2]:
        return [self.pose(o) for o in self.objects]

    def zone_region(self, index: int) -> Region:
        obj = self.objects[index]
        c = self.pose(obj).position
        return Region((float(c[0]), float(c[1])), (obj.extent / 2, obj.extent / 2), f"{obj.color} zone")

    @property
    def movable(self) -> list[int]:
        return [o.body for o in self.objects if o.kind == "block"]

    @property
    def obstacles(self) -> list[int]:
        return [o.body for o in self.objects if o.kind != "zone"]

    def describe(self) -> list[dict]:
        out = []
        for obj in self.objects:
            pos, quat = p.getBasePositionAndOrientation(obj.body, physicsClientId=self.client)
            out.append(dict(label=obj.label, kind=obj.kind, color=obj.color, size=obj.size, extent=obj.extent,
                            position=np.array(pos), quaternion=np.array(quat)))
        return out
