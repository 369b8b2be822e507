"""The oracle: plans the remaining pick-and-place steps from the current state.

It walks the episode's goals in their canonical order for the current state (Episode.goals_now:
interchangeable objects in reading order, so every state has one right next step) on a copy of the object poses, so a multi-step plan is
consistent (the second block goes on where the first one will be). Before it picks a block it
moves away whatever rests on it (hidden blocks), and before it stacks onto a block it clears it.
Poses it emits are SE(2): tool pointing down, yaw only.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from threedmoe_ros.sim.goals import InBowl, InRegion, OnTop
from threedmoe_ros.sim.scene import BOWL_FLOOR, SAMPLE_BOUNDS, Pose2, Region, Scene, resting_on, wrap
from threedmoe_ros.sim.tasks import Episode

SLOT_PITCH = 0.07  # spacing of the places the oracle tries inside a zone or area
PARK_PITCH = 0.02  # spacing of the places it tries when parking a block out of the way


def yaw_quaternion(yaw: float) -> np.ndarray:
    """ROS-order quaternion (x, y, z, w) of a rotation by `yaw` about +z."""
    return np.array([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])


class _Planner:
    def __init__(self, scene: Scene, episode: Episode, canonical: bool = True):
        self.objects = scene.objects
        self.poses = copy.deepcopy(scene.poses())
        self.keep_out = episode.keep_out
        # What the planner walks, in order (and so which blocks belong in which region).
        self.goals = episode.goals_now(self.objects, self.poses) if canonical else list(episode.goals)
        self.steps: list[np.ndarray] = []

    # ------------------------------------------------------------ free space

    def _fits(self, index: int, xy: np.ndarray, ignore: tuple[int, ...] = ()) -> bool:
        obj = self.objects[index]
        for k, other in enumerate(self.objects):
            if k == index or k in ignore or other.kind == "zone":
                continue
            d = xy - self.poses[k].position[:2]
            if other.kind == "block":
                # The moved block is placed square to the axes; the other may be turned.
                if max(abs(d[0]), abs(d[1])) < obj.extent / 2 + other.radius + 0.003:
                    return False
            elif np.linalg.norm(d) < obj.radius + other.radius + 0.005:
                return False
        return True

    def _outside(self, xy: np.ndarray, radius: float) -> bool:
        zones = [self._zone(k) for k, o in enumerate(self.objects) if o.kind == "zone"]
        for region in self.keep_out + zones:
            d = np.abs(xy - np.asarray(region.center)) - np.asarray(region.half)
            if np.all(d < radius + 0.01):
                return False
        return True

    def _zone(self, k: int) -> Region:
        c, e = self.poses[k].position, self.objects[k].extent
        return Region((float(c[0]), float(c[1])), (e / 2, e / 2))

    def park_spot(self, index: int) -> np.ndarray:
        """The nearest free table spot outside every zone and goal area."""
        r = self.objects[index].radius
        xs = np.arange(SAMPLE_BOUNDS[0, 0] + r, SAMPLE_BOUNDS[0, 1] - r + 1e-9, PARK_PITCH)
        ys = np.arange(SAMPLE_BOUNDS[1, 0] + r, SAMPLE_BOUNDS[1, 1] - r + 1e-9, PARK_PITCH)
        grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)
        here = self.poses[index].position[:2]
        for xy in grid[np.argsort(np.linalg.norm(grid - here, axis=1), kind="stable")]:
            if self._fits(index, xy) and self._outside(xy, r):
                return xy
        raise RuntimeError(f"oracle: no free spot to park object {self.objects[index].describe()}")

    def slot(self, index: int, region: Region, center: bool) -> np.ndarray:
        """A free place for the block inside `region` (its centre when `center`)."""
        c = np.asarray(region.center, dtype=float)
        if center:
            candidates = [c]
        else:
            inset = self.objects[index].extent / 2 + 0.005
            axes = []
            for a in range(2):
                span = 2 * (region.half[a] - inset)
                n = int(span // SLOT_PITCH) + 1
                # A region narrower than the pitch (a small zone): its centre, then its two edges.
                axes.append(np.linspace(c[a] - span / 2, c[a] + span / 2, n) if n > 1 else c[a] + np.array([0, -1, 1]) * span / 2)
            grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
            candidates = grid[np.argsort(np.linalg.norm(grid - c, axis=1), kind="stable")]
        for xy in candidates:
            if self._fits(index, xy):
                return xy
        raise RuntimeError(f"oracle: no room for {self.objects[index].describe()} in {region.name or 'region'}")

    # ------------------------------------------------------------ moves

    def move(self, index: int, xy, bottom: float, yaw: float | None) -> None:
        """Append a step that carries block `index` to (xy, bottom z), turned to `yaw` modulo 90°."""
        obj, pose = self.objects[index], self.poses[index]
        pick_yaw = wrap(pose.yaw, math.pi / 2)
        turn = 0.0 if yaw is None else wrap(yaw - pose.yaw, math.pi / 2)
        top = pose.position[2] + obj.height / 2
        pick = np.concatenate([[pose.position[0], pose.position[1], top], yaw_quaternion(pick_yaw)])
        place = np.concatenate([[xy[0], xy[1], bottom + obj.height], yaw_quaternion(pick_yaw + turn)])
        self.steps.append(np.stack([pick, place]))
        self.poses[index] = Pose2(np.array([xy[0], xy[1], bottom + obj.height / 2]), pose.yaw + turn)

    def clear(self, index: int, keep: int | None = None) -> None:
        """Park every block resting on block `index` (top first), except `keep`."""
        for k, other in enumerate(self.objects):
            if k in (index, keep) or other.kind != "block":
                continue
            if resting_on(other, self.poses[k], self.objects[index], self.poses[index]):
                self.park(k)

    def park(self, index: int) -> None:
        """Clear block `index` and move it to the nearest free spot out of every goal area."""
        self.clear(index)
        self.move(index, self.park_spot(index), 0.0, None)

    def achieve(self, goal) -> None:
        if goal.holds(self.objects, self.poses):
            return
        self.clear(goal.obj)
        if isinstance(goal, InRegion):
            if goal.center:  # a tower's base goes in the middle: move away whatever another hand left there
                c = np.asarray(goal.region.center, dtype=float)
                others = tuple(range(len(self.objects)))
                for k, other in enumerate(self.objects):
                    # _fits against block k alone: does k overlap the base's spot?
                    if k != goal.obj and other.kind == "block" and not self._fits(goal.obj, c, ignore=others[:k] + others[k + 1:]):
                        self.park(k)
            try:
                xy = self.slot(goal.obj, goal.region, goal.center)
            except RuntimeError:  # full of blocks that do not belong there (another hand put them in): park them
                belong = {g.obj for g in self.goals if isinstance(g, InRegion) and g.region == goal.region}
                for k, other in enumerate(self.objects):
                    if other.kind == "block" and k not in belong and goal.region.contains(self.poses[k].position):
                        self.park(k)
                xy = self.slot(goal.obj, goal.region, goal.center)
            self.move(goal.obj, xy, 0.0, 0.0)
        elif isinstance(goal, InBowl):
            bowl = self.poses[goal.bowl].position
            if goal.slot is None:
                self.move(goal.obj, bowl[:2], bowl[2] + BOWL_FLOOR, None)
            else:
                self.move(goal.obj, bowl[:2] + np.asarray(goal.slot), bowl[2] + BOWL_FLOOR, 0.0)
        elif isinstance(goal, OnTop):
            self.clear(goal.below, keep=goal.obj)
            below = self.poses[goal.below]
            top = below.position[2] + self.objects[goal.below].height / 2
            self.move(goal.obj, below.position[:2], top, below.yaw)
        else:
            raise TypeError(f"oracle: unknown goal {goal!r}")


def oracle_plan(scene: Scene, episode: Episode, canonical: bool = True) -> np.ndarray:
    """Remaining steps, (T, 2, 7), to finish `episode` from the scene's current state (T = 0: done).
    `canonical` False walks the goals in creation order (the ablation of canonical order)."""
    planner = _Planner(scene, episode, canonical)
    for goal in planner.goals:
        planner.achieve(goal)
    return np.stack(planner.steps) if planner.steps else np.zeros((0, 2, 7))

