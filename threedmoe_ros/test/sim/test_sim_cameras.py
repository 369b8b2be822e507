"""The fused observation: points land where the objects are, labels follow the objects, the crop holds."""

from __future__ import annotations

import numpy as np
import pytest

from threedmoe_ros.sim.cameras import CameraConfig, FusionConfig, default_cameras, voxel_indices
from threedmoe_ros.sim.env import EnvConfig, TabletopEnv


@pytest.fixture(scope="module")
def observed():
    with TabletopEnv(EnvConfig(task="put-block-in-bowl", cameras=default_cameras(160, 120))) as env:
        obs, info = env.reset(2)
        yield obs, info


def test_cloud_is_cropped_to_the_workspace(observed):
    obs, _ = observed
    cloud = obs["cloud"]
    bounds = FusionConfig().bounds
    assert len(cloud) > 1000
    assert np.all(cloud.xyz >= bounds[:, 0] - 1e-3) and np.all(cloud.xyz <= bounds[:, 1] + 1e-3)
    assert cloud.rgb.dtype == np.uint8 and cloud.label.dtype == np.int32


def test_each_object_is_seen_where_it_is_with_its_own_label(observed):
    obs, info = observed
    cloud = obs["cloud"]
    assert set(np.unique(cloud.label)) <= {0} | {o["label"] for o in info["objects"]}
    table = cloud.xyz[cloud.label == 0]
    assert np.abs(np.median(table[:, 2])) < 0.003  # the table top is z = 0
    for obj in info["objects"]:
        points = cloud.xyz[cloud.label == obj["label"]]
        assert len(points) > 10, f"{obj['color']} {obj['kind']} not seen"
        centre = obj["position"]
        assert np.linalg.norm(np.median(points[:, :2], axis=0) - centre[:2]) < 0.02
        if obj["kind"] == "block":
            assert points[:, 2].max() == pytest.approx(centre[2] + obj["extent"] / 2, abs=0.005)


def test_heightmap_shows_blocks_at_their_height(observed):
    obs, info = observed
    height, color = info["heightmap"], info["colormap"]
    assert height.shape == (160, 320) and color.shape == (160, 320, 3)
    assert height.max() == pytest.approx(max(o["position"][2] + o["extent"] / 2 for o in info["objects"]
                                             if o["kind"] == "block"), abs=0.006)


def test_camera_intrinsics_scale_with_resolution():
    full = CameraConfig("c", (1, 0, 1))
    half = CameraConfig("c", (1, 0, 1), width=320, height=240)
    assert full.focal == 450 and half.focal == 225
    with pytest.raises(ValueError):
        CameraConfig("c", (0.5, 0, 0), target=(0.5, 0, 0))


def test_voxel_downsampling_keeps_one_point_per_voxel_deterministically():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 0.1, (5000, 3)).astype(np.float32)
    keep = voxel_indices(xyz, 0.02)
    assert len(keep) <= 125 and np.array_equal(keep, voxel_indices(xyz, 0.02))
