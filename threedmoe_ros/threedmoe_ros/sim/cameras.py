"""RealSense-D415-like RGB-D cameras, rendered headless, and their fusion into one labelled cloud.

Each camera is placed by eye/target like a person mounts one; intrinsics are the D415's at 640×480
(fx = fy = 450, principal point at the centre) and scale with the configured resolution. Depth is
linearised from the z-buffer and back-projected through the optical frame (x right, y down,
z forward, REP 103 `*_optical_frame`) into the world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pybullet as p

from threedmoe_ros.types import Cloud
from threedmoe_ros.workspace import WORKSPACE

D415_WIDTH, D415_HEIGHT, D415_FOCAL = 640, 480, 450.0


@dataclass
class CameraConfig:
    """One camera: where it is, where it looks, and its image size."""

    name: str
    eye: tuple[float, float, float]
    target: tuple[float, float, float] = (0.5, 0.0, 0.0)
    width: int = D415_WIDTH
    height: int = D415_HEIGHT
    near: float = 0.01
    far: float = 10.0

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"camera {self.name}: image {self.width}x{self.height} is too small")
        if np.allclose(self.eye, self.target):
            raise ValueError(f"camera {self.name}: eye and target coincide")

    @property
    def focal(self) -> float:
        # The D415's 450 px at 640 wide keeps its field of view at any resolution.
        return D415_FOCAL * self.width / D415_WIDTH

    def intrinsics(self) -> np.ndarray:
        return np.array([[self.focal, 0, self.width / 2], [0, self.focal, self.height / 2], [0, 0, 1]])

    def rotation(self) -> np.ndarray:
        """World ← optical-frame rotation (columns: x right, y down, z forward)."""
        forward = np.subtract(self.target, self.eye).astype(float)
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        return np.stack([right, down, forward], axis=1)


def default_cameras(width: int = 320, height: int = 240) -> list[CameraConfig]:
    """Three cameras as in Ravens: one in front of the table, one each side, all looking at its middle."""
    return [
        CameraConfig("front", (1.05, 0.0, 0.75), width=width, height=height),
        CameraConfig("left", (0.2, 0.65, 0.75), width=width, height=height),
        CameraConfig("right", (0.2, -0.65, 0.75), width=width, height=height),
    ]


@dataclass
class Frame:
    """One rendered camera image."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32, metres along the optical axis
    segmentation: np.ndarray  # (H, W) int32 pybullet body id, -1 for nothing

    def degraded(self, noise: float, dropout: float, rng: np.random.Generator) -> "Frame":
        """This frame as a real depth sensor returns it: Gaussian depth noise whose deviation is `noise`
        at 1 m and grows with depth squared (stereo), and a share `dropout` of pixels with no return."""
        depth = self.depth
        if noise > 0:
            depth = depth + (rng.standard_normal(depth.shape) * noise * depth**2).astype(np.float32)
        seg = self.segmentation
        if dropout > 0:
            seg = np.where(rng.random(seg.shape) < dropout, -1, seg).astype(np.int32)
        return Frame(self.rgb, depth, seg)


def render(client: int, camera: CameraConfig, light=None) -> Frame:
    """One RGB-D image; `light` (sim.appearance.Light) sets TinyRenderer's lighting, None its default."""
    eye = np.asarray(camera.eye, dtype=float)
    up = -camera.rotation()[:, 1]  # image up = minus optical y
    view = p.computeViewMatrix(eye.tolist(), list(camera.target), up.tolist())
    fov = math.degrees(2 * math.atan(camera.height / 2 / camera.focal))
    proj = p.computeProjectionMatrixFOV(fov, camera.width / camera.height, camera.near, camera.far)
    _, _, rgba, zbuffer, seg = p.getCameraImage(
        camera.width, camera.height, view, proj, renderer=p.ER_TINY_RENDERER, physicsClientId=client,
        **({} if light is None else light.kwargs()),
    )
    rgba = np.asarray(rgba, dtype=np.uint8).reshape(camera.height, camera.width, 4)
    zbuffer = np.asarray(zbuffer, dtype=np.float32).reshape(camera.height, camera.width)
    n, f = camera.near, camera.far
    depth = f * n / (f - (f - n) * zbuffer)
    seg = np.asarray(seg, dtype=np.int32).reshape(camera.height, camera.width)
    return Frame(rgba[..., :3].copy(), depth.astype(np.float32), seg)


@lru_cache(maxsize=32)
def _rays(width: int, height: int, focal: float, eye: tuple, target: tuple) -> np.ndarray:
    """(H*W, 3) float32 world-frame direction of each pixel, scaled so depth × ray + eye is the point."""
    camera = CameraConfig("rays", eye, target, width, height)
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    optical = np.stack([(u - width / 2) / focal, (v - height / 2) / focal, np.ones_like(u)], axis=-1).reshape(-1, 3)
    return (optical @ camera.rotation().T).astype(np.float32)


def back_project(frame: Frame, camera: CameraConfig, pixels: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) float32 world points of a frame's pixels (all, or the flat indices in `pixels`)."""
    h, w = frame.depth.shape
    rays = _rays(w, h, camera.focal, tuple(map(float, camera.eye)), tuple(map(float, camera.target)))
    depth = frame.depth.reshape(-1)
    if pixels is not None:
        rays, depth = rays[pixels], depth[pixels]
    return rays * depth[:, None] + np.asarray(camera.eye, dtype=np.float32)


@dataclass
class FusionConfig:
    """How camera images become one world-frame cloud."""

    bounds: np.ndarray = field(default_factory=lambda: WORKSPACE.copy())
    """Crop box [[xmin, xmax], [ymin, ymax], [zmin, zmax]], metres; the table surface z = 0 is kept. It
    only crops the cloud: plans are checked against workspace.WORKSPACE, whatever this box is."""
    voxel: float = 0.004
    """Keep one point per voxel of this edge (m); 0 keeps every pixel. 4 mm keeps a 3 cm block's
    faces at ~50 points each and a cloud of ~30k points instead of ~150k."""

    def __post_init__(self) -> None:
        self.bounds = np.asarray(self.bounds, dtype=float).reshape(3, 2)
        if (self.bounds[:, 0] >= self.bounds[:, 1]).any():
            raise ValueError(f"FusionConfig.bounds must have min < max on each axis, got {self.bounds.tolist()}")
        if self.voxel < 0:
            raise ValueError("FusionConfig.voxel must be >= 0")


def fuse(frames: list[Frame], cameras: list[CameraConfig], labels: dict[int, int], drop: set[int],
         cfg: FusionConfig) -> Cloud:
    """Fuse frames into one cloud cropped to cfg.bounds (not downsampled: see `downsample`).

    labels maps pybullet body id → instance label (1..K); any other body (the table) gets 0.
    Pixels of bodies in `drop` (the robot) are removed, so the arm never appears as a table point.
    """
    xyz, rgb, label = [], [], []
    lut_size = max([*labels, *drop, 0]) + 2
    lut = np.zeros(lut_size, dtype=np.int32)
    for body, value in labels.items():
        lut[body] = value
    dropped = np.zeros(lut_size, dtype=bool)
    dropped[list(drop)] = True
    lo, hi = cfg.bounds[:, 0] - 1e-3, cfg.bounds[:, 1]
    for frame, camera in zip(frames, cameras):
        seg = frame.segmentation.reshape(-1)
        body = np.where(seg >= 0, seg & ((1 << 24) - 1), lut_size - 1)  # -1 (no hit) → a 0 entry
        # Back-project only pixels that hit something we keep: a third of the work on a typical view.
        pixels = np.flatnonzero((seg >= 0) & ~dropped[body])
        points = back_project(frame, camera, pixels)
        inside = np.all((points >= lo) & (points <= hi), axis=1)
        pixels = pixels[inside]
        xyz.append(points[inside])
        rgb.append(frame.rgb.reshape(-1, 3)[pixels])
        label.append(lut[body[pixels]])
    return Cloud(np.concatenate(xyz), np.concatenate(rgb), np.concatenate(label))


def downsample(cloud: Cloud, voxel: float) -> Cloud:
    return cloud.subset(voxel_indices(cloud.xyz, voxel)) if voxel > 0 and len(cloud) else cloud


def voxel_indices(xyz: np.ndarray, voxel: float) -> np.ndarray:
    """Indices of the first point in each occupied voxel, in the original order (deterministic)."""
    keys = np.floor(xyz / voxel).astype(np.int64)
    keys -= keys.min(axis=0)
    dims = keys.max(axis=0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, first = np.unique(flat, return_index=True)
    return np.sort(first)


def heightmap(cloud: Cloud, bounds: np.ndarray, pixel: float = 0.003125) -> tuple[np.ndarray, np.ndarray]:
    """Top-down (height, colour) maps of a cloud, as Ravens' oracles see the table.

    Rows run along x (row 0 at xmin), columns along y (column 0 at ymin); pixel 3.125 mm gives
    Ravens' 160 × 320 over the workspace. Empty cells are 0 height and black.
    """
    bounds = np.asarray(bounds, dtype=float)
    rows = int(round((bounds[0, 1] - bounds[0, 0]) / pixel))
    cols = int(round((bounds[1, 1] - bounds[1, 0]) / pixel))
    height = np.zeros(rows * cols, dtype=np.float32)
    color = np.zeros((rows * cols, 3), dtype=np.uint8)
    if len(cloud) == 0:
        return height.reshape(rows, cols), color.reshape(rows, cols, 3)
    r = np.clip(((cloud.xyz[:, 0] - bounds[0, 0]) / pixel).astype(int), 0, rows - 1)
    c = np.clip(((cloud.xyz[:, 1] - bounds[1, 0]) / pixel).astype(int), 0, cols - 1)
    order = np.argsort(cloud.xyz[:, 2], kind="stable")  # low points first: the highest wins
    cell = (r * cols + c)[order]
    height[cell] = np.maximum(cloud.xyz[order, 2], 0.0)
    if cloud.rgb is not None:
        color[cell] = cloud.rgb[order]
    filled = np.zeros(rows * cols, dtype=bool)
    filled[cell] = True
    height, color, filled = height.reshape(rows, cols), color.reshape(rows, cols, 3), filled.reshape(rows, cols)
    # At 320×240 a camera pixel covers ~4 mm of table, more than a heightmap cell: fill each empty
    # cell from its highest filled neighbour so the map has no speckle.
    pad_h = np.pad(np.where(filled, height, -1.0), 1, constant_values=-1.0)
    pad_c = np.pad(color, ((1, 1), (1, 1), (0, 0)))
    shifts = [(dr, dc) for dr in range(3) for dc in range(3)]
    stacked = np.stack([pad_h[dr:dr + rows, dc:dc + cols] for dr, dc in shifts])  # (9, rows, cols)
    best = stacked.argmax(axis=0)
    best_h = np.take_along_axis(stacked, best[None], axis=0)[0]
    hole = ~filled & (best_h >= 0)
    rr, cc = np.nonzero(hole)
    dr, dc = np.array(shifts)[best[hole]].T
    height[hole] = best_h[hole]
    color[hole] = pad_c[rr + dr, cc + dc]
    return height, color
