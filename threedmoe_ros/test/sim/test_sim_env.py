"""The environment's face: determinism per seed, closed-loop oracle success, honest endings, and
bad plans rejected without moving anything."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threedmoe_ros.sim.cameras import default_cameras
from threedmoe_ros.sim.env import EnvConfig, TabletopEnv
from threedmoe_ros.sim.oracle import yaw_quaternion
from threedmoe_ros.sim.tasks import TASKS

SMALL = dict(cameras=default_cameras(64, 48))


def poses(info) -> np.ndarray:
    return np.stack([o["position"] for o in info["objects"]])


def run_oracle(env: TabletopEnv, seed: int):
    env.reset(seed)
    for _ in range(50):
        _, _, terminated, truncated, info = env.step(env.oracle_plan()[:1])
        if terminated or truncated:
            return env.outcome(), info
    raise AssertionError("episode did not end")


@pytest.fixture(scope="module")
def zone_env():
    with TabletopEnv(EnvConfig(task="put-block-in-zone", **SMALL)) as env:
        yield env


def test_same_seed_gives_same_scene_instruction_plan_and_cloud():
    config = EnvConfig(task="stack-blocks-by-color", **SMALL)
    with TabletopEnv(config) as a, TabletopEnv(config) as b:
        obs_a, info_a = a.reset(7)
        a.reset(3)  # a different episode in between must not leak into the next one
        obs_a, info_a = a.reset(7)
        obs_b, info_b = b.reset(7)
        assert obs_a["instruction"] == obs_b["instruction"]
        np.testing.assert_array_equal(poses(info_a), poses(info_b))
        np.testing.assert_array_equal(a.oracle_plan(), b.oracle_plan())
        np.testing.assert_array_equal(obs_a["cloud"].xyz, obs_b["cloud"].xyz)
        np.testing.assert_array_equal(obs_a["cloud"].label, obs_b["cloud"].label)
        # ... and the same after executing the plan.
        a.step(a.oracle_plan())
        b.step(b.oracle_plan())
        np.testing.assert_array_equal(poses(a._info("", "")), poses(b._info("", "")))


def test_different_seeds_give_different_scenes(zone_env):
    _, first = zone_env.reset(1)
    _, second = zone_env.reset(2)
    assert poses(first).shape != poses(second).shape or not np.allclose(poses(first), poses(second))


@pytest.mark.parametrize("task", list(TASKS))
def test_oracle_solves_every_task(task):
    with TabletopEnv(EnvConfig(task=task, observe=False)) as env:
        outcome, info = run_oracle(env, seed=11)
    assert outcome.success, outcome
    assert outcome.reason == "success" and info["reward"] == 1.0
    assert outcome.steps_taken <= info["step_limit"]


def test_info_reports_what_a_user_needs(zone_env):
    obs, info = zone_env.reset(0)
    for key in ("task", "seed", "unseen_colors", "steps_taken", "reason", "objects", "targets", "heightmap",
                "joint_names", "joint_trajectory"):
        assert key in info
    assert info["task"] == "put-block-in-zone" and info["seed"] == 0 and info["steps_taken"] == 0
    assert obs["instruction"] == info["instruction"]
    labels = {o["label"] for o in info["objects"]}
    assert set(info["targets"]) <= labels
    assert len(info["joint_names"]) == 6 and zone_env.joint_positions().shape == (6,)


def _one_step(env, pick_xyz, place_xyz):
    return np.array([[[*pick_xyz, *yaw_quaternion(0)], [*place_xyz, *yaw_quaternion(0)]]])


BAD_PLANS = {
    "nan": lambda env: np.full((1, 2, 7), np.nan),
    "outside the workspace": lambda env: _one_step(env, (0.5, 0.0, 0.05), (1.2, 0.0, 0.05)),
    "out of the arm's reach": lambda env: _one_step(env, (0.5, 0.0, 0.05), (0.75, 0.5, 0.3)),
    "tilted": lambda env: np.concatenate([_one_step(env, (0.5, 0, 0.05), (0.5, 0.1, 0.05))[:, :, :3],
                                          np.tile([1.0, 0, 0, 0], (1, 2, 1))], axis=-1),
    "wrong shape": lambda env: np.zeros((2, 3)),
}


@pytest.mark.parametrize("kind", list(BAD_PLANS))
def test_bad_plan_is_rejected_without_moving_anything_and_the_episode_goes_on(zone_env, kind):
    _, before = zone_env.reset(4)
    good = zone_env.oracle_plan()
    bad = BAD_PLANS[kind](zone_env)
    _, reward, terminated, truncated, info = zone_env.step(np.concatenate([good[:1], bad]) if bad.ndim == 3 else bad)
    assert info["reason"] == "invalid_plan" and info["detail"]
    assert not terminated and not truncated
    assert info["steps_taken"] == 0
    np.testing.assert_allclose(poses(info), poses(before), atol=1e-6)
    # The episode goes on: the oracle still finishes it.
    _, _, terminated, _, info = zone_env.step(zone_env.oracle_plan())
    assert terminated and info["reason"] == "success"


def test_reasons_name_the_problem(zone_env):
    zone_env.reset(4)
    _, _, _, _, info = zone_env.step(BAD_PLANS["out of the arm's reach"](zone_env))
    assert "reach" in info["detail"]
    _, _, _, _, info = zone_env.step(BAD_PLANS["nan"](zone_env))
    assert "non-finite" in info["detail"]


def test_picking_at_an_empty_spot_is_a_failure_with_a_reason(zone_env):
    zone_env.reset(4)
    occupied = poses(zone_env._info("", ""))[:, :2]
    spot = next(np.array([x, y]) for x in np.linspace(0.3, 0.7, 9) for y in np.linspace(-0.4, 0.4, 9)
                if np.min(np.linalg.norm(occupied - [x, y], axis=1)) > 0.12)
    _, reward, terminated, truncated, info = zone_env.step(_one_step(zone_env, (*spot, 0.03), (0.5, 0.0, 0.05)))
    assert terminated and info["reason"] == "primitive_failed"
    assert "pick pose" in info["detail"]
    outcome = zone_env.outcome()
    assert not outcome.success and outcome.reason == "primitive_failed"
    with pytest.raises(RuntimeError, match="ended"):
        zone_env.step(zone_env.oracle_plan())


def test_step_limit_truncates(zone_env):
    zone_env.reset(5)
    first = zone_env.oracle_plan()[0]
    there = first.copy()
    back = np.stack([first[1], first[0]])  # put it back where it came from, forever
    steps = np.stack([there, back] * 10)
    _, _, terminated, truncated, info = zone_env.step(steps)
    assert truncated and not terminated
    assert info["reason"] == "step_limit" and info["steps_taken"] == info["step_limit"]
    assert not zone_env.outcome().success


def test_empty_plan_ends_the_episode_and_is_scored_honestly(zone_env):
    zone_env.reset(6)
    _, reward, terminated, _, info = zone_env.step(np.zeros((0, 2, 7)))
    assert terminated and info["reason"] == "aborted" and not zone_env.outcome().success


def test_step_runs_only_the_prefix_it_is_given(zone_env):
    zone_env.reset(8)
    plan = zone_env.oracle_plan()
    _, _, terminated, _, info = zone_env.step(plan[:1])
    assert info["steps_taken"] == 1 and not terminated
    assert len(zone_env.oracle_plan()) == len(plan) - 1


def test_unseen_colour_split_uses_held_out_colours():
    from threedmoe_ros.sim.assets import EVAL_COLORS, TRAIN_COLORS

    for unseen, palette in ((False, TRAIN_COLORS), (True, EVAL_COLORS)):
        with TabletopEnv(EnvConfig(task="put-block-in-matching-bowl", unseen_colors=unseen, observe=False)) as env:
            for seed in range(3):
                _, info = env.reset(seed)
                assert info["unseen_colors"] is unseen
                assert {o["color"] for o in info["objects"]} <= set(palette)


def test_config_rejects_nonsense():
    with pytest.raises(KeyError, match="known tasks"):
        EnvConfig(task="juggle")
    with pytest.raises(ValueError, match="camera"):
        EnvConfig(cameras=[])


def test_plans_are_checked_against_the_one_workspace_box_whatever_the_camera_crop():
    """The cameras' crop box only crops the cloud: a narrower crop neither refuses a plan inside
    workspace.WORKSPACE nor a wider one lets through a plan outside it."""
    from threedmoe_ros.sim.cameras import FusionConfig
    from threedmoe_ros.workspace import WORKSPACE

    inside = np.array([[[0.3, -0.45, 0.02, *yaw_quaternion(0.0)], [0.7, 0.45, 0.05, *yaw_quaternion(0.0)]]])
    outside = inside.copy()
    outside[0, 1, 1] = WORKSPACE[1, 1] + 0.05
    for crop in ([[0.4, 0.6], [-0.2, 0.2], [0.0, 0.1]], [[0.0, 1.0], [-1.0, 1.0], [0.0, 0.5]]):
        with TabletopEnv(EnvConfig(task="put-block-in-zone", observe=False, fusion=FusionConfig(bounds=crop))) as env:
            env.reset(seed=0)
            assert env.validate(inside) == ""
            assert "outside the workspace" in env.validate(outside)


def test_a_primitive_that_runs_out_of_simulated_time_is_a_failure_not_a_success():
    from threedmoe_ros.sim.primitive import PrimitiveConfig

    # No slack: the tool, pulled by a constraint, always lags its path a little, so every motion times out.
    config = EnvConfig(task="put-block-in-zone", observe=False, primitive=PrimitiveConfig(speed=3.0, motion_slack_s=0.0))
    with TabletopEnv(config) as env:
        env.reset(0)
        _, reward, terminated, _, info = env.step(env.oracle_plan())
    assert terminated and info["reason"] == "primitive_failed" and "timed out" in info["detail"]
    assert not info["success"] and not env.outcome().success


finite = st.floats(-2.0, 2.0, allow_nan=False)
bad_value = st.sampled_from([float("nan"), float("inf"), -float("inf"), 5.0, -5.0])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.data())
def test_any_plan_with_a_non_finite_or_far_away_value_is_rejected(zone_env, steps, data):
    if zone_env.scene is None or zone_env._outcome is not None:
        zone_env.reset(9)
    plan = np.array(data.draw(st.lists(finite, min_size=steps * 14, max_size=steps * 14))).reshape(steps, 2, 7)
    plan[:, :, 3:] = [0, 0, 0, 1]
    k, j, i = data.draw(st.integers(0, steps - 1)), data.draw(st.integers(0, 1)), data.draw(st.integers(0, 2))
    plan[k, j, i] = data.draw(bad_value)
    assert zone_env.validate(plan)


def test_a_seed_means_the_same_episode_in_another_process():
    # Data collection runs seeds in worker processes; their episodes must match this process's.
    import subprocess
    import sys

    code = ("from threedmoe_ros.sim.env import EnvConfig, TabletopEnv;"
            "env = TabletopEnv(EnvConfig(task='put-hidden-block-in-matching-bowl', observe=False));"
            "env.reset(5); print(env.instruction); print(env.oracle_plan().tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    with TabletopEnv(EnvConfig(task="put-hidden-block-in-matching-bowl", observe=False)) as env:
        env.reset(5)
        assert out[0] == env.instruction
        assert out[1] == env.oracle_plan().tobytes().hex()
