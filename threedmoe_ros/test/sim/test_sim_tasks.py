"""Task registry, instructions and the success predicates (Ravens' tolerances)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from threedmoe_ros.sim.assets import Object
from threedmoe_ros.sim.env import EnvConfig, TabletopEnv
from threedmoe_ros.sim.scene import Pose2, Region, fraction_inside, in_region, on_top
from threedmoe_ros.sim.tasks import FAMILIES, TASKS, get_task, tasks_in_family


def test_registry_covers_the_paper_families_and_eight_long_horizon_tasks():
    for name, task in TASKS.items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", name), name
        assert task.family in FAMILIES
        assert len(task.templates) >= 3, f"{name} needs paraphrases"
    for family in ("zone", "bowl", "stacking"):
        assert tasks_in_family(family)
    assert len(tasks_in_family("long-horizon")) >= 8
    with pytest.raises(KeyError, match="known tasks"):
        get_task("put-block-in-box")


@pytest.mark.parametrize("task", ["put-block-in-zone", "stack-blocks-by-color"])
def test_instructions_are_paraphrased_and_name_what_is_in_the_scene(task):
    seen = set()
    with TabletopEnv(EnvConfig(task=task, observe=False)) as env:
        for seed in range(12):
            _, info = env.reset(seed)
            colors = {o["color"] for o in info["objects"]}
            named = {c for c in colors if c in info["instruction"]}
            assert named, info["instruction"]
            seen.add(re.sub(r"\b(" + "|".join(colors) + r")\b", "_", info["instruction"]))
    assert len(seen) >= 2


def block(edge=0.04) -> Object:
    return Object(body=-1, kind="block", color="red", size="medium", extent=edge)


def at(x, y, z, yaw=0.0) -> Pose2:
    return Pose2(np.array([x, y, z]), yaw)


def test_stacking_uses_ravens_tolerances():
    a, b = block(), block()
    base = at(0.5, 0.0, 0.02)
    assert on_top(b, at(0.5, 0.005, 0.06), a, base)  # 5 mm off: stacked
    assert not on_top(b, at(0.5, 0.015, 0.06), a, base)  # 1.5 cm off: not
    assert not on_top(b, at(0.5, 0.0, 0.08), a, base)  # 2 cm too high: not
    assert on_top(b, at(0.5, 0.0, 0.06, math.radians(10)), a, base)
    assert not on_top(b, at(0.5, 0.0, 0.06, math.radians(25)), a, base)
    assert on_top(b, at(0.5, 0.0, 0.06, math.radians(90)), a, base)  # a cube turned by 90° looks the same


def test_zone_membership_is_the_share_of_the_footprint_inside():
    zone = Region((0.5, 0.0), (0.075, 0.075))
    b = block()
    assert fraction_inside(b, at(0.5, 0.0, 0.02), zone) == 1.0
    assert fraction_inside(b, at(0.5, 0.075, 0.02), zone) == pytest.approx(0.6)  # 3 of 5 columns inside
    assert in_region(b, at(0.5, 0.06, 0.02), zone)
    assert not in_region(b, at(0.5, 0.075, 0.02), zone)


def test_reward_counts_progress_and_success_needs_everything():
    with TabletopEnv(EnvConfig(task="put-block-in-zone", observe=False)) as env:
        _, info = env.reset(3)
        assert info["reward"] == 0.0
        _, reward, terminated, _, info = env.step(env.oracle_plan()[:1])
        assert reward == pytest.approx(1 / 3) and not terminated and not info["success"]
