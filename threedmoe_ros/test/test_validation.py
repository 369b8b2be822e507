"""The one input validator and the one plan validator: what a user sends is used or refused with a
reason, and no plan that the simulator would refuse (NaN, outside the workspace, tilted, out of
reach) passes."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from threedmoe_ros.types import Cloud
from threedmoe_ros.validation import (
    MAX_INSTRUCTION_CHARS, CloudLimits, InputError, reachable, validate_cloud, validate_plan, validate_text,
)
from threedmoe_ros.workspace import WORKSPACE


def scene(n: int = 400, seed: int = 0, labels: bool = True) -> Cloud:
    """A table with two 4 cm blocks, like the simulator's clouds."""
    rng = np.random.default_rng(seed)
    table = np.c_[rng.uniform(0.3, 0.7, n), rng.uniform(-0.4, 0.4, n), np.zeros(n)]
    blocks = [np.c_[rng.uniform(-0.02, 0.02, (40, 2)) + c, rng.uniform(0.0, 0.04, 40)] for c in ((0.4, 0.1), (0.6, -0.2))]
    label = np.r_[np.zeros(n, int), np.ones(40, int), np.full(40, 2)]
    return Cloud(np.vstack([table, *blocks]), np.full((n + 80, 3), 100), label if labels else None)


# ------------------------------------------------------------------------------------------ text

@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    (" \t\n ", "empty"),
    ("put the red\0 block in the zone", "U+0000"),
    ("put the red\x1b[31m block", "U+001B"),
    ("put the \x7f block", "U+007F"),
    ("put the \ufffd block", "not valid UTF-8"),
    ("x" * (MAX_INSTRUCTION_CHARS + 1), "more than the limit"),
    ("put " * 2_500_000, "more than the limit"),  # 10 MB
    (b"put the red block", "must be text"),
    (None, "must be text"),
])
def test_bad_text_is_refused_with_the_reason(text, words):
    with pytest.raises(InputError, match=re.escape(words)) as info:
        validate_text(text)
    assert info.value.reason == str(info.value) and isinstance(info.value, ValueError)


def test_good_text_is_stripped_and_may_hold_tabs_newlines_and_any_language():
    assert validate_text("  put the red block\tin the green zone\n") == "put the red block\tin the green zone"
    assert validate_text("lege den roten Würfel in die grüne Zone ✓") == "lege den roten Würfel in die grüne Zone ✓"
    assert validate_text("stack", what="question") == "stack"
    with pytest.raises(InputError, match="question is empty"):
        validate_text(" ", what="question")


# ----------------------------------------------------------------------------------------- clouds

def test_a_scene_passes_unchanged():
    cloud = scene()
    out = validate_cloud(cloud)
    np.testing.assert_array_equal(out.xyz, cloud.xyz)
    assert validate_cloud(scene(labels=False)) is not None


def test_non_finite_and_absurd_points_are_dropped_for_a_sensor_and_refused_for_a_caller():
    cloud = scene()
    xyz = cloud.xyz.copy()
    xyz[0] = np.nan
    xyz[1] = [1e30, 0, 0]
    xyz[2] = [0.5, 0.0, -3.4e38]
    xyz[3] = [9.0, 0.0, 0.0]  # 9 m away: a wrong unit, not a scene
    dirty = Cloud(xyz, cloud.rgb, cloud.label)
    assert len(validate_cloud(dirty)) == len(cloud) - 4
    with pytest.raises(InputError, match="1 have NaN or infinite coordinates and 3 lie more than 1 m outside"):
        validate_cloud(dirty, drop=False)
    # The sanity box is configurable.
    assert len(validate_cloud(dirty, CloudLimits(sanity_margin=10.0))) == len(cloud) - 3


@pytest.mark.parametrize("make, words", [
    (lambda: Cloud(np.zeros((0, 3))), "no points"),
    (lambda: Cloud(np.full((5, 3), np.nan)), "none of the 5 points is usable"),
    (lambda: Cloud(np.full((500, 3), 1e30)), "none of the 500 points is usable"),
    (lambda: Cloud([[0.5, 0.0, 0.0]]), "only 1 of 1 points"),
    (lambda: Cloud(np.tile([0.5, 0.0, 0.02], (500, 1)), label=np.ones(500)), "at one place"),
    (lambda: Cloud(scene().xyz, label=np.zeros(len(scene()))), "no objects"),
    (lambda: Cloud(scene().xyz * [1, 1, 0]), "no objects"),  # unlabelled, only table
    (lambda: Cloud(scene().xyz + [1.0, 0, 0]), "inside the workspace"),  # wrong frame
    (lambda: Cloud(scene().xyz * 1000), "none of the"),  # millimetres
    (lambda: Cloud(scene().xyz, label=np.arange(len(scene()))), "distinct labels"),
])
def test_clouds_with_nothing_to_plan_on_are_refused(make, words):
    with pytest.raises(InputError, match=words):
        validate_cloud(make(), CloudLimits(max_labels=256))


def test_limits_on_size_and_frame():
    with pytest.raises(InputError, match="more than the limit 100"):
        validate_cloud(scene(), CloudLimits(max_points=100))
    cloud = scene()
    cloud.frame_id = "camera_color_optical_frame"
    with pytest.raises(InputError, match="camera_color_optical_frame"):
        validate_cloud(cloud, CloudLimits(frames=("world",)))
    cloud.frame_id = ""
    with pytest.raises(InputError, match="empty frame_id"):
        validate_cloud(cloud)
    with pytest.raises(InputError, match="must be a threedmoe_ros.types.Cloud"):
        validate_cloud(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="sanity_margin"):
        CloudLimits(sanity_margin=float("nan"))


def test_cloud_construction_refuses_shapes_with_an_input_error():
    with pytest.raises(InputError, match="not a multiple of 3"):
        Cloud(np.zeros(10))
    with pytest.raises(InputError, match="rgb has 2 rows"):
        Cloud(np.zeros((3, 3)), rgb=np.zeros((2, 3)))
    with pytest.raises(InputError, match="label has 4 entries"):
        Cloud(np.zeros((3, 3)), label=np.zeros(4))
    with pytest.raises(InputError, match="must be numbers"):
        Cloud([["a", "b", "c"]])


# ------------------------------------------------------------------------------------------ plans

DOWN = [0.0, 0.0, 0.0, 1.0]


def pose(x=0.5, y=0.0, z=0.05, q=DOWN):
    return [x, y, z, *q]


def test_a_reachable_plan_passes_and_an_empty_plan_means_done():
    assert validate_plan([[pose(), pose(0.6, 0.2)]]) == ""
    assert validate_plan(np.zeros((0, 2, 7))) == ""
    yaw = [0, 0, math.sin(0.6), math.cos(0.6)]
    assert validate_plan([[pose(q=yaw), pose(0.3, -0.4, 0.2, yaw)]]) == ""


@pytest.mark.parametrize("bad, words", [
    (pose(x=float("nan")), "non-finite"),
    (pose(q=[0, 0, 0, float("inf")]), "non-finite"),
    (pose(q=[0, 0, 0, 0.5]), "norm 0.500"),
    (pose(x=0.9), "outside the workspace"),
    (pose(z=-0.2), "outside the workspace"),
    (pose(q=[math.sin(0.5), 0, 0, math.cos(0.5)]), "tilted 57°"),
    (pose(0.75, 0.5, 0.3), "out of the arm's reach"),
])
def test_plans_the_simulator_would_refuse_are_refused(bad, words):
    plan = [[pose(), pose()], [pose(), bad]]
    problem = validate_plan(plan)
    assert problem.startswith("step 1 place") and words in problem, problem


def test_plan_shape_is_checked():
    assert "shape" in validate_plan(np.zeros((3, 7)))


def test_reach_envelope_agrees_with_the_arm_ik():
    """The envelope the node applies without pybullet matches the simulator's IK check on the workspace."""
    from threedmoe_ros.sim.robot import Arm

    arm = Arm()
    try:
        rng = np.random.default_rng(1)
        points = rng.uniform(WORKSPACE[:, 0] - 0.01, WORKSPACE[:, 1] + 0.01, (300, 3))
        ik_ok = np.array([arm.reach_error(p, DOWN)[0] <= 0.01 for p in points])
    finally:
        arm.close()
    approx = reachable(points)
    # Never lets through what the IK refuses by more than the envelope's fitting margin, and agrees on ≥ 95 %.
    assert (approx == ik_ok).mean() >= 0.95
    assert (approx & ~ik_ok).sum() <= 3


def test_simulator_applies_the_shared_rules():
    from threedmoe_ros.sim.env import EnvConfig, TabletopEnv

    with TabletopEnv(EnvConfig(task="put-block-in-zone", observe=False)) as env:
        env.reset(seed=0)
        for bad in ([[pose(), pose(x=float("nan"))]], [[pose(), pose(x=0.9)]],
                    [[pose(), pose(q=[math.sin(0.5), 0, 0, math.cos(0.5)])]]):
            assert env.validate(np.asarray(bad)) == validate_plan(bad, reach=False)
        assert env.validate(np.asarray([[pose(), pose(0.6, 0.2)]])) == ""
