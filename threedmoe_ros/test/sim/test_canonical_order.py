"""Canonical demonstrations: where objects are interchangeable, the oracle takes them in reading
order (left to right in the top-down image), so every state has one right next step and that step
follows from the positions the cloud shows, never from the order the scene created objects in."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from threedmoe_ros.sim.env import EnvConfig, TabletopEnv
from threedmoe_ros.sim.scene import Pose2
from threedmoe_ros.sim.tasks import TASKS, reading_order

INTERCHANGEABLE = ["put-block-in-zone", "put-block-in-bowl", "stack-blocks", "stack-same-color-on-zone",
                   "put-even-blocks-in-zone", "stack-alternating-colors"]


def test_reading_order_goes_left_to_right_and_ignores_the_index_order():
    poses = [Pose2(np.array([x, y, 0.02]), 0.0) for x, y in [(0.5, -0.2), (0.4, 0.3), (0.6, 0.0), (0.35, 0.0)]]
    assert reading_order([0, 1, 2, 3], poses) == [1, 3, 2, 0]  # +y is left; a tie in y goes nearer the robot first
    assert reading_order([2, 0, 3, 1], poses) == [1, 3, 2, 0]


@pytest.mark.parametrize("task", list(TASKS))
def test_same_scene_gives_the_same_demonstration(task):
    with TabletopEnv(EnvConfig(task=task, observe=False)) as env:
        plans = []
        for _ in range(2):
            env.reset(2_000_017)
            plans.append(env.oracle_plan())
    np.testing.assert_array_equal(plans[0], plans[1])


def _first_pick(env) -> np.ndarray:
    return env.oracle_plan()[0, 0, :2]


@pytest.mark.parametrize("task", ["put-block-in-zone", "put-even-blocks-in-zone", "put-block-in-bowl",
                                  "put-block-in-matching-bowl", "put-block-in-mismatching-bowl"])
def test_the_first_pick_is_the_leftmost_target(task):
    with TabletopEnv(EnvConfig(task=task, observe=False)) as env:
        for seed in range(8):
            _, info = env.reset(seed)
            objects = {o["label"]: o for o in info["objects"]}
            targets = [objects[label] for label in info["targets"] if objects[label]["kind"] == "block"]
            leftmost = max(targets, key=lambda o: o["position"][1])
            np.testing.assert_allclose(_first_pick(env), leftmost["position"][:2], atol=1e-6)


def test_a_free_tower_is_built_on_the_leftmost_block():
    with TabletopEnv(EnvConfig(task="stack-blocks", observe=False)) as env:
        for seed in range(8):
            _, info = env.reset(seed)
            base = max(info["objects"], key=lambda o: o["position"][1])
            np.testing.assert_allclose(env.oracle_plan()[0, 1, :2], base["position"][:2], atol=1e-6)


@pytest.mark.parametrize("task", INTERCHANGEABLE)
def test_the_next_step_depends_on_where_objects_are_not_on_which_was_made_first(task):
    """Swap the poses of two interchangeable objects (same colour and size): the scene looks the
    same, so the demonstrated next step (where to pick, where to place) must not change."""
    with TabletopEnv(EnvConfig(task=task, observe=False)) as env:
        swapped_any = False
        for seed in range(6):
            env.reset(seed)
            objects, poses = env.scene.objects, env.scene.poses()
            look = lambda o: (o.kind, o.color, o.size)  # noqa: E731
            pairs = [(i, j) for i in range(len(objects)) for j in range(i + 1, len(objects))
                     if look(objects[i]) == look(objects[j])]
            if not pairs:
                continue
            i, j = pairs[0]
            swapped = copy.deepcopy(poses)
            swapped[i], swapped[j] = poses[j], poses[i]
            first = env.episode.goals_now(objects, poses)
            second = env.episode.goals_now(objects, swapped)
            # The first goal moves an object from the same place to the same kind of target in both.
            assert np.allclose(poses[first[0].obj].position, swapped[second[0].obj].position)
            swapped_any = True
        assert swapped_any, f"{task}: no scene with two interchangeable objects in 6 seeds"


def test_the_oracle_recovers_when_another_block_sits_where_a_tower_must_stand():
    """A state only a policy makes (recovery data): a block of the other colour put in a zone's centre.
    The oracle parks it and still builds both towers."""
    with TabletopEnv(EnvConfig(task="stack-same-color-on-zone", observe=False)) as env:
        for seed in range(3):
            env.reset(seed)
            objects = env.scene.objects
            zone = next(i for i, o in enumerate(objects) if o.kind == "zone")
            other = next(i for i, o in enumerate(objects) if o.kind == "block" and o.color != objects[zone].color)
            at, centre = env.scene.pose(other).position, env.scene.pose(zone).position
            h = objects[other].height
            env.step(np.array([[[at[0], at[1], at[2] + h / 2, 0, 0, 0, 1], [centre[0], centre[1], h, 0, 0, 0, 1]]]))
            while True:
                *_, terminated, truncated, _ = env.step(env.oracle_plan()[:1])
                if terminated or truncated:
                    break
            assert env.outcome().success, env.outcome()


def test_the_oracle_clears_a_zone_filled_with_blocks_that_do_not_belong():
    """Another state only a policy makes: the zone crowded with blocks of the wrong colours."""
    with TabletopEnv(EnvConfig(task="put-even-blocks-in-zone", observe=False)) as env:
        for seed in range(3):
            _, info = env.reset(seed)
            objects = env.scene.objects
            zone = next(i for i, o in enumerate(objects) if o.kind == "zone")
            centre = env.scene.pose(zone).position
            env.step_limit = 20  # the moves that crowd the zone are the test's, not the oracle's
            targets = set(info["targets"])
            intruders = [i for i, o in enumerate(objects) if o.kind == "block" and o.label not in targets]
            corners = [(-0.04, -0.04), (-0.04, 0.04), (0.04, -0.04), (0.04, 0.04)]
            for k, (dx, dy) in zip(intruders, corners):
                at, h = env.scene.pose(k).position, objects[k].height
                env.step(np.array([[[at[0], at[1], at[2] + h / 2, 0, 0, 0, 1], [centre[0] + dx, centre[1] + dy, h, 0, 0, 0, 1]]]))
            while env.outcome().reason == "":
                env.step(env.oracle_plan()[:1])
            assert env.outcome().success, env.outcome()
