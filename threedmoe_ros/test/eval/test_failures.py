"""Failure attribution: a policy step judged against the oracle's next step from the same state."""

from __future__ import annotations

import numpy as np

from threedmoe_ros.eval.failures import FAILURE_KINDS, breakdown, failure_kind, judge_step
from threedmoe_ros.sim.env import EnvConfig, TabletopEnv
from threedmoe_ros.types import EpisodeOutcome


def outcome(success: bool, reason: str) -> EpisodeOutcome:
    return EpisodeOutcome("put-block-in-zone", 0, "", False, 2, 0.0, success, reason)


def test_oracle_step_is_right_and_other_objects_or_places_are_named():
    with TabletopEnv(EnvConfig(task="put-block-in-bowl", observe=False)) as env:
        env.reset(2_000_001)
        oracle = env.oracle_plan()
        step = oracle[0].copy()
        assert judge_step(env, step, oracle) == ""
        objects, poses = env.scene.objects, env.scene.poses()
        picked = min(range(len(objects)), key=lambda i: np.linalg.norm(poses[i].position[:2] - step[0, :2]))
        other_block = next(i for i, o in enumerate(objects) if o.kind == "block" and o.color != objects[picked].color)
        wrong_pick = step.copy()
        wrong_pick[0, :2] = poses[other_block].position[:2]
        assert judge_step(env, wrong_pick, oracle) == "wrong object"
        target_bowl = min((i for i, o in enumerate(objects) if o.kind == "bowl"),
                          key=lambda i: np.linalg.norm(poses[i].position[:2] - step[1, :2]))
        other_bowl = next(i for i, o in enumerate(objects) if o.kind == "bowl" and o.color != objects[target_bowl].color)
        wrong_place = step.copy()
        wrong_place[1, :2] = poses[other_bowl].position[:2]
        assert judge_step(env, wrong_place, oracle) == "wrong place"


def test_episode_is_named_by_its_first_mistake_then_by_how_it_ended():
    assert failure_kind(["", "wrong place", "wrong object"], outcome(False, "step_limit")) == "wrong place"
    assert failure_kind(["", ""], outcome(False, "step_limit")) == "step limit"
    assert failure_kind([""], outcome(False, "aborted")) == "stopped"
    assert failure_kind(["imprecise"], outcome(False, "primitive_failed")) == "imprecise"
    assert failure_kind(["wrong object"], outcome(True, "success")) == ""
    items = [outcome(False, "aborted"), outcome(True, "success")]
    items[0].extra["failure"] = "stopped"
    assert breakdown(items) == {k: int(k == "stopped") for k in FAILURE_KINDS}
