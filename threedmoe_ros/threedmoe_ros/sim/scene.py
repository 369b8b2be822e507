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
from threedmoe_ros.sim.appearance import Look
from threedmoe_ros.sim.assets import Object
from threedmoe_ros.sim.phrasing import Phrasing

# Where objects are sampled: the workspace less a margin that keeps every pose, and a 4-block
# tower on it, inside the UR5's reach (the far corners of the workspace are not).
SAMPLE_BOUNDS = np.array([[0.30, 0.70], [-0.42, 0.42]])

# Ravens' tolerances: position 1 cm, height 1.5 cm, yaw 15° modulo the object's symmetry.
POS_TOL, HEIGHT_TOL, YAW_TOL = 0.01, 0.015, math.radians(15)
ZONE_FRACTION = 0.8  # share of a block's footprint that must lie inside a zone/area
BOWL_FLOOR = 0.004

# Crowded scenes: at most MAX_OBJECTS objects (LoHoRavens' busiest scenes hold about 17). Bowls and
# zones are large beside the sampling area, so distractors add at most this many of each; the rest
# of a crowd is blocks, where the task's words allow distractor blocks.
MAX_OBJECTS = 18
DISTRACTOR_CAP = {"block": 14, "bowl": 3, "zone": 1}
DISTRACTOR_TRIES = 200  # a distractor that finds no room in this many draws is left out


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
    horizontal = np.linalg.norm(pose.position[:2] - bowl_pose.position[:2])
    bottom = pose.position[2] - obj.height / 2
    return horizontal <= bowl.inner_radius - obj.extent / 2 + 0.005 and bottom < bowl.height


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

    def __init__(self, client: int, rng: np.random.Generator, unseen_colors: bool, look: Look | None = None,
                 phrasing: Phrasing | None = None):
        self.client = client
        self.rng = rng
        self.unseen_colors = unseen_colors
        self.colors = assets.colors_for(unseen_colors)
        self.objects: list[Object] = []
        self.look = look
        self.phrasing = phrasing
        # Where objects are sampled: the sampling area, shrunk about its centre by the look's density.
        centre, half = SAMPLE_BOUNDS.mean(axis=1), (SAMPLE_BOUNDS[:, 1] - SAMPLE_BOUNDS[:, 0]) / 2
        half = half * (look.density if look is not None else 1.0)
        self.bounds = np.stack([centre - half, centre + half], axis=1)

    def _rgb(self, color: str):
        return None if self.look is None else self.look.rgb(color)

    # ------------------------------------------------------------ building

    def pick_colors(self, k: int) -> list[str]:
        return [str(c) for c in self.rng.choice(self.colors, size=k, replace=False)]

    def _add(self, obj: Object) -> int:
        obj.label = len(self.objects) + 1
        self.objects.append(obj)
        return len(self.objects) - 1

    def free_xy(self, radius: float, within: Region | None = None, avoid: list[Region] = (), tries: int = 2000) -> np.ndarray:
        """A random xy where a disc of `radius` overlaps no object (and none of `avoid`)."""
        lo, hi = self.bounds[:, 0] + radius, self.bounds[:, 1] - radius
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

    def add_block(self, color: str, size: str = "medium", xy=None, bottom: float = 0.0, within: Region | None = None,
                  avoid: list[Region] = (), yaw: float | None = None, tries: int = 2000) -> int:
        """A block standing at `bottom` (m above the table; > 0 rests it on another block at `xy`),
        turned by `yaw` (random when None)."""
        dims = self.block_dims(size)
        if xy is None:
            xy = self.free_xy((dims[0] + dims[1]) / 2 * math.sqrt(0.5), within, avoid, tries)
        z = bottom + dims[2] / 2
        drawn = float(self.rng.uniform(-math.pi / 4, math.pi / 4))  # drawn either way: one stream whatever the caller asks
        yaw = drawn if yaw is None else yaw
        return self._add(assets.make_block(self.client, color, size, [xy[0], xy[1], z], yaw, dims, self._rgb(color)))

    def block_dims(self, size: str) -> tuple[float, float, float]:
        """(x, y, z) of a new block of `size` in this episode's look (a cube of the nominal edge when plain)."""
        edge = assets.BLOCK_SIZES[size]
        return (edge,) * 3 if self.look is None else self.look.block_dims(edge)

    def add_bowl(self, color: str, avoid: list[Region] = (), within: Region | None = None, tries: int = 2000) -> int:
        radius, height, wall = (assets.BOWL_RADIUS, assets.BOWL_HEIGHT, assets.BOWL_WALL) if self.look is None \
            else self.look.bowl()
        xy = self.free_xy(radius, within, avoid, tries)
        return self._add(assets.make_bowl(self.client, color, [xy[0], xy[1], 0.0], radius, height, wall, self._rgb(color)))

    def add_zone(self, color: str, avoid: list[Region] = (), tries: int = 2000) -> int:
        size, line = (assets.ZONE_SIZE, 0.0) if self.look is None else self.look.zone()
        xy = self.free_xy(size * math.sqrt(0.5), avoid=avoid, tries=tries)
        return self._add(assets.make_zone(self.client, color, xy, size=size, line=line, rgb=self._rgb(color)))

    def add_distractors(self, kinds: tuple[str, ...], avoid: list[Region] = ()) -> None:
        """The look's distractor objects: kinds the task allows (at most DISTRACTOR_CAP of each, and
        MAX_OBJECTS in the scene), in colours no object of the scene has, outside `avoid` (goal areas)
        and every zone. One that finds no room is left out."""
        if self.look is None or not kinds or not self.look.distractors:
            return
        avoid = list(avoid) + [self.zone_region(i) for i, o in enumerate(self.objects) if o.kind == "zone"]
        used = {o.color for o in self.objects}
        free = [c for c in self.colors if c not in used]
        if not free:
            return
        rng = self.look.rng  # the look's stream: the task's own draws stay the same under every look
        added = {kind: 0 for kind in kinds}
        for _ in range(min(self.look.distractors, MAX_OBJECTS - len(self.objects))):
            options = [k for k in kinds if added[k] < DISTRACTOR_CAP[k]]
            if not options:
                break
            kind, color = str(rng.choice(options)), str(rng.choice(free))
            added[kind] += 1
            try:
                if kind == "block":
                    size = str(rng.choice(list(assets.BLOCK_SIZES)))
                    index = self.add_block(color, size, avoid=avoid, tries=DISTRACTOR_TRIES)
                elif kind == "bowl":
                    index = self.add_bowl(color, avoid=avoid, tries=DISTRACTOR_TRIES)
                else:
                    index = self.add_zone(color, avoid=avoid, tries=DISTRACTOR_TRIES)
            except SamplingError:
                continue
            self.objects[index].distractor = True

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
