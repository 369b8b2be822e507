"""The suction pick-and-place primitive.

approach above the pick → descend until contact → suction on → lift to a travel height that clears
every object → move above the place → descend until the held object touches something → release →
retreat. Every limit is in simulated time, so a slow machine and a fast one give the same result,
and a primitive that does not finish is a failure with a reason, never a success.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p

from threedmoe_ros.sim.robot import Robot


@dataclass
class PrimitiveConfig:
    """Speeds and limits of the pick-and-place primitive."""

    speed: float = 1.0
    """Tool speed in free space, m/s."""
    contact_speed: float = 0.15
    """Speed over the last `contact_distance` before an expected contact, m/s (slow enough to stop within 1 mm)."""
    contact_distance: float = 0.03
    """Length of the slow part of each descent, m."""
    overshoot: float = 0.03
    """How far below a pose's z a descent may go looking for contact, m: a predicted pose may sit a
    little above the surface, but a pick over empty table must fail, not scrape along it."""
    clearance: float = 0.04
    """Gap kept between the held object and the tallest object while travelling, m."""
    motion_slack_s: float = 1.0
    """Simulated seconds a motion may take beyond its planned duration before it counts as blocked."""
    settle_s: float = 1.0
    """Longest simulated time allowed for objects to come to rest after a release."""

    def __post_init__(self) -> None:
        if min(self.speed, self.contact_speed) <= 0:
            raise ValueError("PrimitiveConfig: speeds must be > 0 m/s")
        if min(self.contact_distance, self.overshoot, self.clearance, self.motion_slack_s, self.settle_s) < 0:
            raise ValueError("PrimitiveConfig: distances and times must be >= 0")


@dataclass
class PrimitiveResult:
    ok: bool
    detail: str = ""
    picked: int | None = None


def _move(robot: Robot, target, orientation, speed: float, slack_s: float, stop=None) -> str:
    """Drive the tool in a straight line; returns "reached", "contact" (stop() said so) or "timeout"."""
    start, start_q = robot.tool_pose()
    target = np.asarray(target, dtype=float)
    distance = float(np.linalg.norm(target - start))
    n = max(1, int(np.ceil(distance / speed / robot.timestep)))
    for i in range(1, n + 1):
        s = i / n
        q = p.getQuaternionSlerp(start_q.tolist(), list(orientation), s)
        robot.command(start + s * (target - start), q)
        robot.step()
        if stop is not None and stop():
            return "contact"
    # The path is done; give the constraint a moment to catch up (it lags by a few mm).
    for _ in range(int(slack_s / robot.timestep)):
        if np.linalg.norm(robot.tool_pose()[0] - target) < 0.002:
            return "reached"
        robot.step()
        if stop is not None and stop():
            return "contact"
    return "timeout"


def _descend(robot: Robot, xy, z_goal: float, orientation, cfg: PrimitiveConfig, stop) -> str:
    """Fast down to `contact_distance` above z_goal, then slowly on to `overshoot` below it."""
    z_now = robot.tool_pose()[0][2]
    z_slow = min(z_now, z_goal + cfg.contact_distance)
    status = _move(robot, [xy[0], xy[1], z_slow], orientation, cfg.speed, cfg.motion_slack_s, stop)
    if status != "reached":
        return status
    return _move(robot, [xy[0], xy[1], z_goal - cfg.overshoot], orientation, cfg.contact_speed, cfg.motion_slack_s, stop)


def _top(body: int, client: int) -> float:
    return p.getAABB(body, physicsClientId=client)[1][2]


def settle(robot: Robot, movable: list[int], max_s: float) -> None:
    """Step until every movable object is at rest (or max_s simulated seconds pass)."""
    for i in range(int(max_s / robot.timestep)):
        robot.step()
        if i % 8 == 7:
            speeds = [np.linalg.norm(p.getBaseVelocity(b, physicsClientId=robot.client)[0]) for b in movable]
            if not speeds or max(speeds) < 2e-3:
                return


def pick_place(robot: Robot, pick: np.ndarray, place: np.ndarray, movable: list[int], obstacles: list[int],
               cfg: PrimitiveConfig) -> PrimitiveResult:
    """Execute one pick-and-place step. `pick`/`place` are tool-tip poses (x y z qx qy qz qw)."""
    client = robot.client
    movable_set = set(movable)
    pick_q, place_q = list(pick[3:]), list(place[3:])

    def travel_height(extra: float) -> float:
        tallest = max([_top(b, client) for b in obstacles if b != robot.held] + [0.0])
        return max(tallest, pick[2], place[2]) + extra + cfg.clearance

    # Approach from above the pick at a height that clears everything.
    z_travel = travel_height(0.0)
    pos, _ = robot.tool_pose()
    status = _move(robot, [pos[0], pos[1], max(pos[2], z_travel)], pick_q, cfg.speed, cfg.motion_slack_s)
    if status == "reached":
        status = _move(robot, [pick[0], pick[1], max(pos[2], z_travel)], pick_q, cfg.speed, cfg.motion_slack_s)
    if status != "reached":
        return PrimitiveResult(False, f"approach to the pick pose timed out ({cfg.motion_slack_s:.1f} s simulated slack)")

    status = _descend(robot, pick[:2], pick[2], pick_q, cfg, stop=lambda: bool(robot.contacts(robot.tool)))
    if status != "contact":
        return PrimitiveResult(False, f"no contact within {cfg.overshoot * 100:.0f} cm below the pick pose "
                                      f"({pick[0]:.3f}, {pick[1]:.3f}, {pick[2]:.3f})")
    picked = robot.suction_on(movable_set)
    if picked is None:
        touched = robot.contacts(robot.tool)
        return PrimitiveResult(False, f"the suction cup touched no movable object at the pick pose (bodies {touched}: table or bowl)")

    held_height = robot.tool_pose()[0][2] - p.getAABB(picked, physicsClientId=client)[0][2]
    z_travel = travel_height(held_height)
    for target, q in (
        ([pick[0], pick[1], z_travel], pick_q),
        ([place[0], place[1], z_travel], place_q),
    ):
        if _move(robot, target, q, cfg.speed, cfg.motion_slack_s) != "reached":
            robot.release()
            return PrimitiveResult(False, "carrying the object timed out (blocked)", picked)

    def touching() -> bool:
        return bool(robot.contacts(picked, ignore=robot.bodies)) or bool(robot.contacts(robot.tool, ignore=(picked,)))

    status = _descend(robot, place[:2], place[2], place_q, cfg, stop=touching)
    robot.release()
    if status == "timeout":
        return PrimitiveResult(False, "descent to the place pose timed out (blocked)", picked)

    pos, q = robot.tool_pose()
    if _move(robot, [pos[0], pos[1], z_travel], q, cfg.speed, cfg.motion_slack_s) != "reached":
        return PrimitiveResult(False, "retreat timed out", picked)
    settle(robot, movable, cfg.settle_s)
    return PrimitiveResult(True, "", picked)


def go_home(robot: Robot, cfg: PrimitiveConfig) -> bool:
    """Fly the tool back to its home pose (out of the cameras' way), up first."""
    pos, _ = robot.tool_pose()
    up = max(pos[2], robot.home_position[2])
    ok = _move(robot, [pos[0], pos[1], up], robot.home_orientation, cfg.speed, cfg.motion_slack_s) == "reached"
    return ok and _move(robot, robot.home_position, robot.home_orientation, cfg.speed, cfg.motion_slack_s) == "reached"
