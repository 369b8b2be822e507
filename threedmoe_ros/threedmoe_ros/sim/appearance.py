"""Appearance randomization: how an episode looks, drawn per seed from ranges in one config.

    look = sample_look(APPEARANCE["train"], np.random.default_rng([seed, LOOK_STREAM, task.stream]))

A policy that knows objects only by the exact shade, size and camera of our assets fails on any
other tabletop. Every episode therefore draws its own look: the shade of each named colour, the
table's colour, the light, the shapes within a kind (block scale and off-cube aspect, bowl radius,
height and wall, zone size and filled or outlined), distractor objects, how tightly objects are
placed, and the sensing (one to three cameras, pose jitter, depth noise and dropout).

Two range sets ship: `train` (what demonstrations are collected with) and `shifted` (evaluation
only). Every continuous range of `shifted` lies outside the `train` range of the same field, as a
union of intervals on either side of it (`Ranges`); the categorical draws (camera count, filled or
outlined zones, light azimuth) and the distractor count (up to crowded scenes of 16-18 objects, in
both) are shared. `plain` (None) is the
fixed look of the original assets, which older checkpoints were trained on.

The look is drawn from its own random stream (episode seed, LOOK_STREAM, task), apart from the
scene's, so a seed always gives the same look; the scene itself still differs between appearance
splits, since object sizes and density change where things fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from threedmoe_ros.sim.assets import COLORS, TABLE_COLOR

LOOK_STREAM = 0x100C  # the look's seed sequence: [episode seed, LOOK_STREAM, task.stream]
NOISE_STREAM = 0x401E  # [episode seed, NOISE_STREAM, task.stream, observation index]: depth noise and dropout

Interval = tuple[float, float]


@dataclass(frozen=True)
class Ranges:
    """A union of closed intervals to draw a value from, uniformly by total length."""

    parts: tuple[Interval, ...]

    def __post_init__(self) -> None:
        if not self.parts or any(lo > hi for lo, hi in self.parts):
            raise ValueError(f"Ranges needs intervals with lo <= hi, got {self.parts}")

    @classmethod
    def of(cls, *parts: Interval) -> "Ranges":
        return cls(tuple((float(lo), float(hi)) for lo, hi in parts))

    def draw(self, rng: np.random.Generator) -> float:
        widths = np.array([hi - lo for lo, hi in self.parts])
        k = int(rng.choice(len(widths), p=widths / widths.sum())) if widths.sum() > 0 else 0
        lo, hi = self.parts[k]
        return float(rng.uniform(lo, hi)) if hi > lo else lo

    def contains(self, value: float, eps: float = 1e-9) -> bool:
        return any(lo - eps <= value <= hi + eps for lo, hi in self.parts)

    def overlaps(self, other: "Ranges") -> bool:
        """True when the two share more than an endpoint."""
        return any(min(h1, h2) - max(l1, l2) > 1e-9 for l1, h1 in self.parts for l2, h2 in other.parts)

    @property
    def low(self) -> float:
        return min(lo for lo, _ in self.parts)

    @property
    def high(self) -> float:
        return max(hi for _, hi in self.parts)


@dataclass
class AppearanceConfig:
    """Ranges of one appearance split. Lengths in metres, colours in rgb 0..1, angles in degrees."""

    name: str = "train"
    # Colour: each object's rgb lies at this L2 distance from its colour name's centre (assets.COLORS),
    # in a random direction; the table's from assets.TABLE_COLOR.
    shade: Ranges = Ranges.of((0.0, 0.05))
    table_shade: Ranges = Ranges.of((0.0, 0.05))
    # Light: elevation of the light direction above the table, its diffuse and ambient strength,
    # and a tint (L2 distance of the light colour from white).
    light_elevation: Ranges = Ranges.of((55.0, 90.0))
    light_diffuse: Ranges = Ranges.of((0.25, 0.45))
    light_ambient: Ranges = Ranges.of((0.55, 0.7))
    light_tint: Ranges = Ranges.of((0.0, 0.05))
    # Shapes within a kind. Blocks: one scale per episode (so small < medium < big always holds), and
    # an off-cube factor per block and axis. Bowls and zones: per object.
    block_scale: Ranges = Ranges.of((0.93, 1.07))
    block_aspect: Ranges = Ranges.of((0.0, 0.03))
    bowl_radius: Ranges = Ranges.of((0.062, 0.075))
    bowl_height: Ranges = Ranges.of((0.025, 0.035))
    bowl_wall: Ranges = Ranges.of((0.006, 0.010))
    zone_size: Ranges = Ranges.of((0.135, 0.16))
    zone_line: Ranges = Ranges.of((0.010, 0.020))
    zone_outline_p: float = 0.5
    # Scene: distractor objects (kinds each task allows, colours the task does not use; a scene holds
    # at most scene.MAX_OBJECTS objects, as LoHoRavens' busiest) and the share of the sampling area's
    # side that objects are placed in (smaller = denser).
    distractors: tuple[int, int] = (2, 15)
    density: Ranges = Ranges.of((0.85, 1.0))
    # Sensing: how many of the three cameras render, how far each eye and target move, the depth
    # noise's standard deviation at 1 m (it grows with depth squared, as a stereo sensor's), and the
    # share of pixels that return nothing.
    cameras: tuple[int, int] = (1, 3)
    camera_jitter: Ranges = Ranges.of((0.0, 0.03))
    depth_noise: Ranges = Ranges.of((0.0, 0.002))
    dropout: Ranges = Ranges.of((0.0, 0.05))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and f.name not in ("distractors", "cameras"):
                setattr(self, f.name, Ranges.of(*value) if value and isinstance(value[0], tuple) else Ranges.of(value))
        lo, hi = self.distractors
        if not 0 <= lo <= hi <= 16:
            raise ValueError(f"AppearanceConfig.distractors {self.distractors} must satisfy 0 <= lo <= hi <= 16")
        lo, hi = self.cameras
        if not 1 <= lo <= hi <= 3:
            raise ValueError(f"AppearanceConfig.cameras {self.cameras} must satisfy 1 <= lo <= hi <= 3")
        if not 0 <= self.zone_outline_p <= 1:
            raise ValueError("AppearanceConfig.zone_outline_p must be in [0, 1]")
        if self.density.low <= 0.3 or self.density.high > 1.0:
            raise ValueError(f"AppearanceConfig.density must lie in (0.3, 1], got {self.density.parts}")
        if self.block_scale.low < 0.8 or self.block_scale.high > 1.2:
            raise ValueError("AppearanceConfig.block_scale must lie in [0.8, 1.2] (sizes stay ordered)")
        if self.dropout.high >= 0.5 or self.bowl_wall.high * 3 > self.bowl_radius.low:
            raise ValueError("AppearanceConfig: dropout must be < 0.5 and bowl walls thin beside the radius")

    def ranges(self) -> dict[str, Ranges]:
        """The continuous fields, by name (what `shifted` keeps disjoint from `train`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), Ranges)}


def _shifted() -> AppearanceConfig:
    """Ranges outside `train`'s on every continuous field: wider shades, other sizes, denser placing.
    The distractor count is `train`'s: crowded scenes are what a policy is trained among, not a shift."""
    return AppearanceConfig(
        name="shifted",
        shade=Ranges.of((0.05, 0.10)),
        table_shade=Ranges.of((0.05, 0.10)),
        light_elevation=Ranges.of((35.0, 55.0)),
        light_diffuse=Ranges.of((0.15, 0.25), (0.45, 0.55)),
        light_ambient=Ranges.of((0.45, 0.55), (0.7, 0.8)),
        light_tint=Ranges.of((0.05, 0.10)),
        block_scale=Ranges.of((0.87, 0.93), (1.07, 1.13)),
        block_aspect=Ranges.of((0.03, 0.05)),
        bowl_radius=Ranges.of((0.056, 0.062), (0.075, 0.082)),
        bowl_height=Ranges.of((0.02, 0.025), (0.035, 0.04)),
        bowl_wall=Ranges.of((0.004, 0.006), (0.010, 0.012)),
        zone_size=Ranges.of((0.125, 0.135), (0.16, 0.175)),
        zone_line=Ranges.of((0.006, 0.010), (0.020, 0.026)),
        density=Ranges.of((0.75, 0.85)),
        camera_jitter=Ranges.of((0.03, 0.05)),
        depth_noise=Ranges.of((0.002, 0.004)),
        dropout=Ranges.of((0.05, 0.10)),
    )


APPEARANCE: dict[str, AppearanceConfig | None] = {"plain": None, "train": AppearanceConfig(), "shifted": _shifted()}


def appearance(name: str) -> AppearanceConfig | None:
    """The named split's ranges (None for `plain`, the original assets); ValueError naming the known ones."""
    if name not in APPEARANCE:
        raise ValueError(f"unknown appearance split '{name}'; known: {', '.join(APPEARANCE)}")
    return APPEARANCE[name]


@dataclass
class Light:
    """TinyRenderer lighting of every camera image of an episode (pybullet getCameraImage's arguments)."""

    direction: tuple[float, float, float] = (0.0, 0.0, 1.0)
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    diffuse: float = 0.35
    ambient: float = 0.6

    def kwargs(self) -> dict:
        return dict(lightDirection=list(self.direction), lightColor=list(self.color), lightDiffuseCoeff=self.diffuse,
                    lightAmbientCoeff=self.ambient, lightSpecularCoeff=0.05, shadow=0)


@dataclass
class Look:
    """One episode's draw from an AppearanceConfig; the scene builder and the cameras read it."""

    config: AppearanceConfig
    rng: np.random.Generator
    """The look's own stream: per-object draws (shades, bowl and zone shapes) continue from it."""
    table_rgb: tuple[float, float, float]
    light: Light
    block_scale: float
    distractors: int
    density: float
    cameras: list[int]
    """Indices into the environment's camera list that render, in order."""
    camera_offsets: list[tuple[np.ndarray, np.ndarray]]
    """(eye, target) offsets of each rendering camera, m."""
    depth_noise: float
    dropout: float
    shades: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def rgb(self, color: str) -> tuple[float, float, float]:
        """The shade of a colour name in this episode (one shade per name, so 'same colour' stays true)."""
        if color not in self.shades:
            self.shades[color] = _offset(COLORS[color], self.config.shade.draw(self.rng), self.rng)
        return self.shades[color]

    def block_dims(self, edge: float) -> tuple[float, float, float]:
        aspect = [1 + self.config.block_aspect.draw(self.rng) * self.rng.choice([-1, 1]) for _ in range(3)]
        return tuple(float(edge * self.block_scale * a) for a in aspect)

    def bowl(self) -> tuple[float, float, float]:
        """(outer radius, height, wall) of one bowl."""
        c = self.config
        return c.bowl_radius.draw(self.rng), c.bowl_height.draw(self.rng), c.bowl_wall.draw(self.rng)

    def zone(self) -> tuple[float, float]:
        """(side, line width; 0 = filled) of one zone."""
        c = self.config
        side = c.zone_size.draw(self.rng)
        return side, (c.zone_line.draw(self.rng) if self.rng.random() < c.zone_outline_p else 0.0)


def _offset(rgb, distance: float, rng: np.random.Generator) -> tuple[float, float, float]:
    """rgb moved by `distance` in a random direction that stays inside the unit cube (clipped if none is found)."""
    base = np.asarray(rgb, dtype=float)
    for _ in range(32):
        direction = rng.normal(size=3)
        moved = base + direction / (np.linalg.norm(direction) + 1e-12) * distance
        if np.all((moved >= 0) & (moved <= 1)):
            break
    return tuple(float(v) for v in np.clip(moved, 0, 1))


def sample_look(config: AppearanceConfig, rng: np.random.Generator, n_cameras: int = 3) -> Look:
    """Draw one episode's look. Episode-wide values are drawn first, in a fixed order, so a seed
    always gives the same look; per-object values continue from `rng` as the task builds."""
    table = _offset(TABLE_COLOR, config.table_shade.draw(rng), rng)
    azimuth = rng.uniform(0, 2 * math.pi)
    elevation = math.radians(config.light_elevation.draw(rng))
    direction = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation))
    light = Light(direction, _offset((1.0, 1.0, 1.0), config.light_tint.draw(rng), rng),
                  config.light_diffuse.draw(rng), config.light_ambient.draw(rng))
    block_scale = config.block_scale.draw(rng)
    distractors = int(rng.integers(config.distractors[0], config.distractors[1] + 1))
    density = config.density.draw(rng)
    lo, hi = min(config.cameras[0], n_cameras), min(config.cameras[1], n_cameras)
    count = int(rng.integers(lo, hi + 1))
    cameras = sorted(int(i) for i in rng.choice(n_cameras, size=count, replace=False))
    offsets = []
    for _ in cameras:
        pair = []
        for _ in range(2):  # eye, then target
            v = rng.normal(size=3)
            pair.append(v / (np.linalg.norm(v) + 1e-12) * config.camera_jitter.draw(rng))
        offsets.append((pair[0], pair[1]))
    return Look(config, rng, table, light, block_scale, distractors, density, cameras, offsets,
                config.depth_noise.draw(rng), config.dropout.draw(rng))
