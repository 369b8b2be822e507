"""Pose encoding: world-frame pick/place poses ↔ the normalised vectors Pose-DiT denoises.

One encoding for the whole project (`PoseCodec`). A pose (x, y, z, qx, qy, qz, qw) becomes

    rotation="yaw"   (default, d=5):  x̂, ŷ, ẑ, cos(kψ), sin(kψ)
    rotation="euler" (paper, d=6):    x̂, ŷ, ẑ, roll/π, pitch/π, yaw/π

where x̂ ŷ ẑ are positions mapped linearly from the workspace box to [−1, 1] and ψ is the yaw.

Why "yaw" is the default:
- Tabletop pick-and-place is SE(2): the tool always comes from above, so roll and pitch carry no
  information (Ravens' and LoHoRavens' oracles emit yaw-only poses). The paper's d=6 spends three
  numbers on Euler angles, which wrap at ±π: two nearly equal poses can be far apart as vectors,
  and a regression target that jumps is a target a flow model blurs. (cos, sin) is continuous.
- Objects are symmetric. A block looks the same turned by 90°, so its yaw is only defined mod 90°
  and the target ψ is a four-mode distribution; encoding kψ with k = `yaw_symmetry` = 4 folds the
  four modes into one. Zones are square (same argument) and bowls are round (any k is right).
  Decoded yaws lie in (−π/k, π/k]; the simulator's success checks treat them modulo 2π/k.
  Set k=1 for tasks with asymmetric objects.

Normalisation lives in the state_dict (as diffusion_policy's LinearNormalizer): the workspace box
and k are buffers, so a checkpoint restores the statistics it was trained with, whatever the config.

Decoding is total: any real network output (NaN excluded) decodes to a valid pose — positions
clipped into the workspace box, unit quaternions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from threedmoe_ros.workspace import WORKSPACE_HIGH, WORKSPACE_LOW

ROTATIONS = {"yaw": 2, "euler": 3}  # rotation encoding → number of rotation channels


@dataclass
class PoseCodecConfig:
    """Workspace box and rotation encoding of the pose vectors."""

    # Workspace box in the world frame (metres): positions map linearly onto [−1, 1].
    # Default: the tabletop in front of the robot base (LoHoRavens' 0.5 m × 1 m area, 0.3 m high).
    low: tuple[float, float, float] = WORKSPACE_LOW
    high: tuple[float, float, float] = WORKSPACE_HIGH
    # "yaw" (SE(2), continuous, default) or "euler" (roll/pitch/yaw, the paper's d=6).
    rotation: str = "yaw"
    # k in (cos kψ, sin kψ): the order of the objects' rotational symmetry (4 = square blocks).
    yaw_symmetry: int = 4

    def __post_init__(self) -> None:
        self.low = tuple(float(v) for v in self.low)
        self.high = tuple(float(v) for v in self.high)
        if len(self.low) != 3 or len(self.high) != 3:
            raise ValueError(f"PoseCodecConfig: low/high need 3 values (x, y, z), got {self.low}, {self.high}")
        if not all(math.isfinite(v) for v in self.low + self.high):
            raise ValueError(f"PoseCodecConfig: workspace bounds must be finite, got {self.low}, {self.high}")
        if any(h <= lo for lo, h in zip(self.low, self.high)):
            raise ValueError(f"PoseCodecConfig: every high must exceed its low, got low={self.low} high={self.high}")
        if self.rotation not in ROTATIONS:
            raise ValueError(f"PoseCodecConfig: rotation must be one of {sorted(ROTATIONS)}, got {self.rotation!r}")
        if not isinstance(self.yaw_symmetry, int) or self.yaw_symmetry < 1:
            raise ValueError(f"PoseCodecConfig: yaw_symmetry must be an int >= 1, got {self.yaw_symmetry!r}")

    @property
    def dim(self) -> int:
        """d: channels per encoded pose."""
        return 3 + ROTATIONS[self.rotation]

    @property
    def unit_m(self) -> tuple[float, float, float]:
        """Metres per normalised unit on each axis (half the box): what a metric tolerance is in the normalised space."""
        return tuple((h - lo) / 2 for lo, h in zip(self.low, self.high))


def quat_to_rpy(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions x y z w (any norm) → (..., 3) roll, pitch, yaw (ZYX Euler)."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z, w = q.unbind(-1)
    roll = torch.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = torch.asin((2 * (w * y - z * x)).clamp(-1.0, 1.0))
    yaw = torch.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return torch.stack([roll, pitch, yaw], dim=-1)


def rpy_to_quat(rpy: torch.Tensor) -> torch.Tensor:
    """(..., 3) roll, pitch, yaw → (..., 4) unit quaternions x y z w."""
    cr, cp, cy = (torch.cos(rpy / 2)).unbind(-1)
    sr, sp, sy = (torch.sin(rpy / 2)).unbind(-1)
    q = torch.stack(
        [
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy,
        ],
        dim=-1,
    )
    return q / q.norm(dim=-1, keepdim=True)  # exact unit norm despite float rounding


class PoseCodec(nn.Module):
    """(…, 7) world poses ↔ (…, d) vectors in [−1, 1]; statistics are buffers (saved with the model)."""

    def __init__(self, config: PoseCodecConfig | None = None):
        super().__init__()
        self.config = config or PoseCodecConfig()
        self.register_buffer("low", torch.tensor(self.config.low, dtype=torch.float32))
        self.register_buffer("high", torch.tensor(self.config.high, dtype=torch.float32))
        self.register_buffer("yaw_symmetry", torch.tensor(self.config.yaw_symmetry, dtype=torch.int64))

    @property
    def dim(self) -> int:
        return self.config.dim

    def normalize_xyz(self, xyz: torch.Tensor) -> torch.Tensor:
        """(..., 3) world positions, or (..., 2) xy, → the same in [−1, 1] over the workspace box."""
        n = xyz.shape[-1]
        return 2 * (xyz - self.low[:n]) / (self.high[:n] - self.low[:n]) - 1

    def encode(self, poses: torch.Tensor) -> torch.Tensor:
        """(..., 7) x y z qx qy qz qw → (..., d). Positions outside the box map outside [−1, 1]."""
        pos = self.normalize_xyz(poses[..., :3])
        rpy = quat_to_rpy(poses[..., 3:7])
        if self.config.rotation == "yaw":
            k_yaw = self.yaw_symmetry * rpy[..., 2]
            rot = torch.stack([torch.cos(k_yaw), torch.sin(k_yaw)], dim=-1)
        else:
            rot = rpy / math.pi
        return torch.cat([pos, rot], dim=-1)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) any reals → (..., 7) poses with positions inside the box and unit quaternions."""
        pos = (x[..., :3].clamp(-1.0, 1.0) + 1) / 2 * (self.high - self.low) + self.low
        # The clamp above keeps ±inf inside the box; clamp again because the affine map can round
        # a hair past a bound in float32.
        pos = torch.minimum(torch.maximum(pos, self.low), self.high)
        if self.config.rotation == "yaw":
            # atan2 is defined for every finite or infinite pair (atan2(0, 0) = 0), so a collapsed
            # (cos, sin) output still decodes; its norm is not trusted, only its direction.
            c, s = x[..., 3].clamp(-1e6, 1e6), x[..., 4].clamp(-1e6, 1e6)
            yaw = torch.atan2(s, c) / self.yaw_symmetry
            rpy = torch.stack([torch.zeros_like(yaw), torch.zeros_like(yaw), yaw], dim=-1)
        else:
            rpy = x[..., 3:6].clamp(-1.0, 1.0) * math.pi
        return torch.cat([pos, rpy_to_quat(rpy)], dim=-1)
