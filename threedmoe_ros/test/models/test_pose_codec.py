"""The pose encoding: round trips, symmetry folding, and that any network output decodes to a valid pose."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from threedmoe_ros.models.pose_codec import PoseCodec, PoseCodecConfig, rpy_to_quat


def _poses(n: int, yaw_range: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low, high = torch.tensor([0.25, -0.5, 0.0]), torch.tensor([0.75, 0.5, 0.3])
    pos = low + torch.rand(n, 3, generator=g) * (high - low)
    yaw = (torch.rand(n, generator=g) * 2 - 1) * yaw_range
    q = rpy_to_quat(torch.stack([torch.zeros(n), torch.zeros(n), yaw], -1))
    return torch.cat([pos, q], -1)


def _same_rotation(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    return (q1 * q2).sum(-1).abs()  # 1 when equal up to sign


@pytest.mark.parametrize("k", [1, 4])
def test_round_trip_within_the_symmetry_range(k):
    codec = PoseCodec(PoseCodecConfig(yaw_symmetry=k))
    poses = _poses(256, math.pi / k * 0.999)
    back = codec.decode(codec.encode(poses))
    assert torch.allclose(back[:, :3], poses[:, :3], atol=1e-5)
    assert torch.all(_same_rotation(back[:, 3:], poses[:, 3:]) > 1 - 1e-5)


def test_a_block_turned_by_90_degrees_encodes_the_same():
    codec = PoseCodec(PoseCodecConfig(yaw_symmetry=4))
    poses = _poses(64, math.pi)
    turned = poses.clone()
    yaw = torch.atan2(2 * poses[:, 6] * poses[:, 5], 1 - 2 * poses[:, 5] ** 2)
    turned[:, 3:] = rpy_to_quat(torch.stack([torch.zeros(64), torch.zeros(64), yaw + math.pi / 2], -1))
    assert torch.allclose(codec.encode(poses), codec.encode(turned), atol=1e-5)


def test_euler_encoding_is_the_papers_d6():
    codec = PoseCodec(PoseCodecConfig(rotation="euler"))
    assert codec.dim == 6
    poses = _poses(32, math.pi * 0.999)
    back = codec.decode(codec.encode(poses))
    assert torch.allclose(back[:, :3], poses[:, :3], atol=1e-5)
    assert torch.all(_same_rotation(back[:, 3:], poses[:, 3:]) > 1 - 1e-5)


@settings(max_examples=60, deadline=None)
@given(
    rotation=st.sampled_from(["yaw", "euler"]),
    k=st.integers(1, 6),
    data=st.data(),
)
def test_any_network_output_decodes_to_a_valid_pose(rotation, k, data):
    cfg = PoseCodecConfig(rotation=rotation, yaw_symmetry=k)
    codec = PoseCodec(cfg)
    floats = st.floats(allow_nan=False, allow_infinity=True, width=32)
    x = data.draw(arrays(np.float32, (data.draw(st.integers(1, 5)), cfg.dim), elements=floats))
    poses = codec.decode(torch.from_numpy(x))
    assert poses.shape == (len(x), 7)
    assert torch.isfinite(poses).all()
    assert torch.all(poses[:, :3] >= codec.low) and torch.all(poses[:, :3] <= codec.high)
    assert torch.allclose(poses[:, 3:].norm(dim=-1), torch.ones(len(x)), atol=1e-5)


def test_statistics_travel_in_the_state_dict():
    trained = PoseCodec(PoseCodecConfig(low=(0.0, -1.0, 0.0), high=(1.0, 1.0, 0.5), yaw_symmetry=2))
    fresh = PoseCodec(PoseCodecConfig())  # default bounds, k = 4
    fresh.load_state_dict(trained.state_dict())
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    assert torch.allclose(fresh.decode(x), trained.decode(x))
    assert set(trained.state_dict()) == {"low", "high", "yaw_symmetry"}


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(low=(0.0, 0.0, 0.0), high=(1.0, 0.0, 1.0)), "exceed"),
        (dict(low=(0.0, 0.0)), "3 values"),
        (dict(rotation="quat"), "rotation"),
        (dict(yaw_symmetry=0), "yaw_symmetry"),
        (dict(high=(1.0, float("inf"), 1.0)), "finite"),
    ],
)
def test_bad_config_is_refused_with_a_reason(kwargs, words):
    with pytest.raises(ValueError, match=words):
        PoseCodecConfig(**kwargs)
