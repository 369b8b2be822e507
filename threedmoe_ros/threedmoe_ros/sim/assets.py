"""Every asset of the tabletop, generated here from primitives: table, blocks, bowls, zones, the
suction tool and a UR5-like arm (URDF text written by this module).

Frames: world z up, the table's top surface is z = 0, the arm's base sits at the origin (as in
Ravens), and the workspace lies in front of it.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pybullet as p

from threedmoe_ros.workspace import WORKSPACE  # noqa: F401  (re-exported: the sim crops to it)

# Colours (RGB 0..1). The split follows CLIPort: episodes with seen colours draw from TRAIN_COLORS,
# unseen ones from EVAL_COLORS; four of the eval colours never appear in training.
COLORS = {
    "blue": (0.306, 0.475, 0.655),
    "red": (0.882, 0.341, 0.349),
    "green": (0.349, 0.631, 0.310),
    "orange": (0.949, 0.557, 0.169),
    "yellow": (0.929, 0.788, 0.282),
    "purple": (0.690, 0.478, 0.631),
    "pink": (1.000, 0.616, 0.655),
    "cyan": (0.463, 0.718, 0.698),
    "brown": (0.612, 0.459, 0.373),
    "gray": (0.729, 0.690, 0.675),
    "white": (0.95, 0.95, 0.95),
}
TRAIN_COLORS = ("blue", "red", "green", "yellow", "brown", "gray", "cyan")
EVAL_COLORS = ("blue", "red", "green", "orange", "purple", "pink", "white")

# Cube edge lengths by size name. Three sizes far enough apart that "bigger" is obvious in a cloud.
BLOCK_SIZES = {"small": 0.03, "medium": 0.04, "big": 0.05}

BOWL_RADIUS = 0.07  # outer radius; a big block fits with room to spare
BOWL_HEIGHT = 0.03
BOWL_WALL = 0.008
ZONE_SIZE = 0.15  # square side; four medium blocks fit side by side
ZONE_THICKNESS = 0.001

TABLE_COLOR = (0.55, 0.5, 0.45)
BLOCK_MASS = 0.05


def colors_for(unseen: bool) -> tuple[str, ...]:
    return EVAL_COLORS if unseen else TRAIN_COLORS


@dataclass
class Object:
    """One thing on the table the task talks about. `label` is its instance id in clouds (1..K)."""

    body: int
    kind: str  # "block" | "bowl" | "zone"
    color: str
    size: str = ""  # blocks: small/medium/big
    extent: float = 0.0  # blocks: edge length (mean of the two horizontal sides); bowls: outer radius; zones: side
    label: int = 0
    height: float = 0.0  # top above the base: a block's vertical side, a bowl's rim, a zone's thickness
    wall: float = 0.0  # bowls: wall thickness
    distractor: bool = False  # placed by appearance randomization; no instruction is about it

    def __post_init__(self) -> None:
        # Unset: the original assets' shape of the kind.
        if self.height == 0.0:
            self.height = {"block": self.extent, "bowl": BOWL_HEIGHT}.get(self.kind, ZONE_THICKNESS)
        if self.wall == 0.0 and self.kind == "bowl":
            self.wall = BOWL_WALL

    @property
    def radius(self) -> float:
        """Radius of a disc that covers the object's footprint (for placing without overlap)."""
        if self.kind == "block":
            return self.extent * math.sqrt(0.5)
        return self.extent if self.kind == "bowl" else self.extent * math.sqrt(0.5)

    @property
    def inner_radius(self) -> float:
        """A bowl's radius inside its wall."""
        return self.extent - self.wall

    def describe(self) -> str:
        return f"{self.size + ' ' if self.size else ''}{self.color} {self.kind}"


def _rgba(color: str, rgb=None) -> list[float]:
    return [*(COLORS[color] if rgb is None else rgb), 1.0]


def make_table(client: int, rgb=TABLE_COLOR) -> int:
    """A 1.5 × 1.6 m slab whose top is z = 0, centred under the workspace."""
    half = [0.75, 0.8, 0.025]
    col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=client)
    vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=[*rgb, 1], physicsClientId=client)
    body = p.createMultiBody(0, col, vis, [0.5, 0.0, -half[2]], physicsClientId=client)
    p.changeDynamics(body, -1, lateralFriction=0.8, physicsClientId=client)
    return body


def make_block(client: int, color: str, size: str, position, yaw: float, dims=None, rgb=None) -> Object:
    """A cube of the size's edge, or a box of `dims` (x, y, z) m when appearance randomization gives one."""
    dims = (BLOCK_SIZES[size],) * 3 if dims is None else tuple(dims)
    half = [d / 2 for d in dims]
    col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=client)
    vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=_rgba(color, rgb), physicsClientId=client)
    body = p.createMultiBody(
        BLOCK_MASS, col, vis, position, p.getQuaternionFromEuler([0, 0, yaw]), physicsClientId=client
    )
    # Friction high enough that stacks stand; a little rolling friction stops slow creep.
    p.changeDynamics(body, -1, lateralFriction=0.8, spinningFriction=0.001, physicsClientId=client)
    return Object(body, "block", color, size, (dims[0] + dims[1]) / 2, height=dims[2])


def make_bowl(client: int, color: str, position, radius: float = BOWL_RADIUS, height: float = BOWL_HEIGHT,
              wall: float = BOWL_WALL, rgb=None) -> Object:
    """A fixed bowl: a floor disc and a ring of wall segments (pybullet has no concave primitive)."""
    segments = 16
    wall_len = 2 * radius * math.tan(math.pi / segments) + 0.002
    halves, positions, orientations = [], [], []
    floor_half = [radius * 0.75, radius * 0.75, 0.002]
    halves.append(floor_half)
    positions.append([0, 0, 0.002])
    orientations.append([0, 0, 0, 1])
    for i in range(segments):
        angle = 2 * math.pi * i / segments
        r = radius - wall / 2
        halves.append([wall / 2, wall_len / 2, height / 2])
        positions.append([r * math.cos(angle), r * math.sin(angle), height / 2])
        orientations.append(list(p.getQuaternionFromEuler([0, 0, angle])))
    col = p.createCollisionShapeArray(
        [p.GEOM_BOX] * len(halves), halfExtents=halves, collisionFramePositions=positions,
        collisionFrameOrientations=orientations, physicsClientId=client,
    )
    vis = p.createVisualShapeArray(
        [p.GEOM_BOX] * len(halves), halfExtents=halves, visualFramePositions=positions,
        visualFrameOrientations=orientations, physicsClientId=client,
    )
    body = p.createMultiBody(0, col, vis, position, physicsClientId=client)
    p.changeVisualShape(body, -1, rgbaColor=_rgba(color, rgb), physicsClientId=client)
    return Object(body, "bowl", color, "", radius, height=height, wall=wall)


def make_zone(client: int, color: str, position, yaw: float = 0.0, size: float = ZONE_SIZE, line: float = 0.0,
              rgb=None) -> Object:
    """A coloured square painted on the table: visual only, so blocks rest on the table through it.
    `line` > 0 draws only its outline, a frame of that width."""
    pos = [position[0], position[1], ZONE_THICKNESS / 2]
    if line <= 0:
        half = [size / 2, size / 2, ZONE_THICKNESS / 2]
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=_rgba(color, rgb), physicsClientId=client)
    else:
        a, b = size / 2, (size - line) / 2
        halves = [[a, line / 2, ZONE_THICKNESS / 2]] * 2 + [[line / 2, a, ZONE_THICKNESS / 2]] * 2
        offsets = [[0, b, 0], [0, -b, 0], [b, 0, 0], [-b, 0, 0]]
        vis = p.createVisualShapeArray([p.GEOM_BOX] * 4, halfExtents=halves, visualFramePositions=offsets,
                                       physicsClientId=client)
    body = p.createMultiBody(0, -1, vis, pos, p.getQuaternionFromEuler([0, 0, yaw]), physicsClientId=client)
    if line > 0:
        p.changeVisualShape(body, -1, rgbaColor=_rgba(color, rgb), physicsClientId=client)
    return Object(body, "zone", color, "", size, height=ZONE_THICKNESS)


# ---------------------------------------------------------------- suction tool

TOOL_LENGTH = 0.10
TOOL_RADIUS = 0.01


def make_tool(client: int, position) -> int:
    """A suction tool: a slim cylinder whose base frame is its tip (the point that touches objects)."""
    frame = [0, 0, TOOL_LENGTH / 2]
    col = p.createCollisionShape(
        p.GEOM_CYLINDER, radius=TOOL_RADIUS, height=TOOL_LENGTH, collisionFramePosition=frame, physicsClientId=client
    )
    vis = p.createVisualShape(
        p.GEOM_CYLINDER, radius=TOOL_RADIUS, length=TOOL_LENGTH, visualFramePosition=frame,
        rgbaColor=[0.2, 0.2, 0.2, 1], physicsClientId=client,
    )
    body = p.createMultiBody(0.1, col, vis, position, physicsClientId=client)
    p.changeDynamics(body, -1, lateralFriction=1.0, physicsClientId=client)
    return body


# ---------------------------------------------------------------- UR5-like arm

# Joint names and origins of a UR5 (Universal Robots' published link lengths); the tool link sits
# at the suction tip so inverse kinematics targets the point that touches objects.
UR5_JOINTS = (
    "shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint",
)
# Elbow-up, tool-down posture used as the rest pose for IK and as the home posture.
UR5_HOME = (0.0, -1.9, 1.9, -1.57, -1.57, 0.0)


def _link(name: str, length: float = 0.0, axis: str = "z", radius: float = 0.04, color=(0.7, 0.7, 0.72)) -> str:
    if length <= 0:
        geometry = ""
    else:
        rpy = {"z": "0 0 0", "y": "1.5708 0 0", "x": "0 1.5708 0"}[axis]
        xyz = {"z": f"0 0 {length / 2}", "y": f"0 {length / 2} 0", "x": f"{length / 2} 0 0"}[axis]
        geometry = (
            f'<visual><origin xyz="{xyz}" rpy="{rpy}"/><geometry><cylinder radius="{radius}" length="{abs(length)}"/>'
            f'</geometry><material name="m_{name}"><color rgba="{color[0]} {color[1]} {color[2]} 1"/></material></visual>'
        )
    inertial = '<inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial>'
    return f'<link name="{name}">{inertial}{geometry}</link>'


def _joint(name: str, parent: str, child: str, xyz: str, rpy: str, axis: str, fixed: bool = False) -> str:
    kind = "fixed" if fixed else "revolute"
    limit = "" if fixed else '<limit lower="-6.2832" upper="6.2832" effort="150" velocity="3.15"/>'
    ax = "" if fixed else f'<axis xyz="{axis}"/>'
    return (
        f'<joint name="{name}" type="{kind}"><parent link="{parent}"/><child link="{child}"/>'
        f'<origin xyz="{xyz}" rpy="{rpy}"/>{ax}{limit}</joint>'
    )


def ur5_urdf() -> str:
    """URDF text of a UR5-like arm with the suction tool's tip as its last (fixed) link, `tool_tip`."""
    h = math.pi / 2
    links = [
        _link("base_link", 0.089, "z", 0.06),
        _link("shoulder_link", 0.136, "y", 0.055),
        _link("upper_arm_link", 0.425, "z", 0.045),
        _link("forearm_link", 0.392, "z", 0.038),
        _link("wrist_1_link", 0.093, "y", 0.035),
        _link("wrist_2_link", 0.095, "z", 0.035),
        _link("wrist_3_link", 0.082, "y", 0.035),
        _link("ee_link"),
        _link("tool_tip"),
    ]
    joints = [
        _joint("shoulder_pan_joint", "base_link", "shoulder_link", "0 0 0.089159", "0 0 0", "0 0 1"),
        _joint("shoulder_lift_joint", "shoulder_link", "upper_arm_link", "0 0.13585 0", f"0 {h} 0", "0 1 0"),
        _joint("elbow_joint", "upper_arm_link", "forearm_link", "0 -0.1197 0.425", "0 0 0", "0 1 0"),
        _joint("wrist_1_joint", "forearm_link", "wrist_1_link", "0 0 0.39225", f"0 {h} 0", "0 1 0"),
        _joint("wrist_2_joint", "wrist_1_link", "wrist_2_link", "0 0.093 0", "0 0 0", "0 0 1"),
        _joint("wrist_3_joint", "wrist_2_link", "wrist_3_link", "0 0 0.09465", "0 0 0", "0 1 0"),
        _joint("ee_fixed_joint", "wrist_3_link", "ee_link", "0 0.0823 0", f"0 0 {h}", "", fixed=True),
        # The tool sticks out of the flange (ee_link +x) by its length; its tip frame has z against
        # the tool axis, so the identity orientation means "pointing straight down".
        _joint("tool_joint", "ee_link", "tool_tip", f"{TOOL_LENGTH} 0 0", f"0 {-h} 0", "", fixed=True),
    ]
    return f'<?xml version="1.0"?><robot name="ur5_like">{"".join(links)}{"".join(joints)}</robot>'


@lru_cache(maxsize=1)
def ur5_urdf_path() -> str:
    """The arm's URDF written once per process to a temporary file (pybullet loads URDF from files)."""
    directory = Path(tempfile.mkdtemp(prefix="threedmoe_sim_"))
    path = directory / "ur5_like.urdf"
    path.write_text(ur5_urdf())
    return str(path)
