"""Snapping plan positions onto observed objects: picks land on the nearest object's top face,
stacking places on the support's top centre, other places and every orientation stay as sampled."""

import numpy as np

from threedmoe_ros.models.refine import refine_plan
from threedmoe_ros.types import Cloud


def box(centre, size, label, rng, n=400):
    xyz = rng.uniform(-0.5, 0.5, (n, 3)) * size + centre
    return xyz, np.full(n, label)


def scene():
    rng = np.random.default_rng(0)
    parts = [box((0.5, 0.0, 0.0), (0.5, 1.0, 0.0), 0, rng, 2000),          # table
             box((0.40, 0.10, 0.02), (0.04, 0.04, 0.04), 1, rng),          # a 4 cm block
             box((0.60, -0.20, 0.025), (0.05, 0.05, 0.05), 2, rng),        # a 5 cm block
             box((0.45, -0.30, 0.001), (0.12, 0.12, 0.002), 3, rng)]       # a flat zone
    xyz = np.concatenate([p[0] for p in parts])
    return Cloud(xyz, label=np.concatenate([p[1] for p in parts]))


def pose(x, y, z, yaw=0.3):
    return [x, y, z, 0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)]


def test_pick_and_stack_snap_but_zone_place_and_orientation_do_not():
    cloud = scene()
    plan = np.array([
        [pose(0.415, 0.085, 0.03), pose(0.61, -0.19, 0.09)],   # pick block 1 off by 2 cm; stack on block 2
        [pose(0.585, -0.215, 0.04), pose(0.47, -0.32, 0.05)],  # pick block 2; place in the zone
    ])
    out = refine_plan(plan, cloud)
    np.testing.assert_allclose(out[0, 0, :2], [0.40, 0.10], atol=0.005)
    assert abs(out[0, 0, 2] - 0.04) < 0.002
    np.testing.assert_allclose(out[0, 1, :2], [0.60, -0.20], atol=0.005)  # on top of block 2
    np.testing.assert_allclose(out[1, 0, :2], [0.60, -0.20], atol=0.005)
    np.testing.assert_allclose(out[1, 1], plan[1, 1])  # a zone place is left alone
    np.testing.assert_allclose(out[..., 3:], plan[..., 3:])
    np.testing.assert_allclose(plan[0, 0, :2], [0.415, 0.085])  # input untouched


def test_far_picks_are_left_alone_with_or_without_labels():
    cloud = scene()
    plan = np.array([[pose(0.70, 0.40, 0.03), pose(0.30, 0.30, 0.03)]])
    np.testing.assert_allclose(refine_plan(plan, cloud), plan)
    np.testing.assert_allclose(refine_plan(plan, Cloud(cloud.xyz)), plan)
