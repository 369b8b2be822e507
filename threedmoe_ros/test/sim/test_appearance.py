"""Appearance randomization: every range is honoured, a seed reproduces its scene, `shifted` never
overlaps `train`, and the oracle solves randomized scenes of every task."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from threedmoe_ros.sim import assets
from threedmoe_ros.sim.appearance import APPEARANCE, AppearanceConfig, Ranges, appearance, sample_look
from threedmoe_ros.sim.cameras import default_cameras
from threedmoe_ros.sim.env import EnvConfig, TabletopEnv
from threedmoe_ros.sim.tasks import TASKS

SMALL = dict(cameras=default_cameras(64, 48))
TRAIN, SHIFTED = APPEARANCE["train"], APPEARANCE["shifted"]


def run_oracle(env: TabletopEnv, seed: int):
    env.reset(seed)
    for _ in range(60):
        _, _, terminated, truncated, _ = env.step(env.oracle_plan()[:1])
        if terminated or truncated:
            return env.outcome()
    raise AssertionError("episode did not end")


def test_shifted_ranges_never_overlap_train_ranges():
    train, shifted = TRAIN.ranges(), SHIFTED.ranges()
    assert set(train) == set(shifted) and len(train) >= 15
    for name in train:
        assert not train[name].overlaps(shifted[name]), f"{name}: {train[name].parts} vs {shifted[name].parts}"
    assert SHIFTED.distractors == TRAIN.distractors  # crowded scenes in both: what a policy is trained among


def test_ranges_draw_inside_themselves_and_overlap_is_detected():
    rng = np.random.default_rng(0)
    r = Ranges.of((0.0, 0.1), (0.5, 0.6))
    draws = [r.draw(rng) for _ in range(500)]
    assert all(r.contains(v) for v in draws)
    assert any(v < 0.1 for v in draws) and any(v > 0.5 for v in draws)
    assert not r.contains(0.3)
    assert r.overlaps(Ranges.of((0.55, 0.9))) and not r.overlaps(Ranges.of((0.1, 0.5)))
    with pytest.raises(ValueError, match="lo <= hi"):
        Ranges.of((0.2, 0.1))


def test_config_validates_itself_and_unknown_split_is_named():
    with pytest.raises(ValueError, match="distractors"):
        AppearanceConfig(distractors=(3, 20))
    with pytest.raises(ValueError, match="cameras"):
        AppearanceConfig(cameras=(0, 2))
    with pytest.raises(ValueError, match="known: plain, train, shifted"):
        appearance("foggy")
    with pytest.raises(ValueError, match="known"):
        EnvConfig(task="stack-blocks", appearance="foggy")
    assert AppearanceConfig(shade=(0.0, 0.02)).shade == Ranges.of((0.0, 0.02))  # plain tuples are accepted


@pytest.mark.parametrize("split", ["train", "shifted"])
def test_every_drawn_value_lies_in_its_split_ranges(split):
    cfg = APPEARANCE[split]
    for seed in range(40):
        look = sample_look(cfg, np.random.default_rng(seed))
        assert cfg.block_scale.contains(look.block_scale)
        assert cfg.density.contains(look.density)
        assert cfg.depth_noise.contains(look.depth_noise) and cfg.dropout.contains(look.dropout)
        assert cfg.distractors[0] <= look.distractors <= cfg.distractors[1]
        assert cfg.cameras[0] <= len(look.cameras) <= cfg.cameras[1]
        assert cfg.light_diffuse.contains(look.light.diffuse) and cfg.light_ambient.contains(look.light.ambient)
        elevation = np.degrees(np.arcsin(look.light.direction[2]))
        assert cfg.light_elevation.contains(elevation, eps=1e-6)
        assert cfg.table_shade.contains(np.linalg.norm(np.subtract(look.table_rgb, assets.TABLE_COLOR)), eps=1e-6)
        for eye, target in look.camera_offsets:
            assert cfg.camera_jitter.contains(np.linalg.norm(eye), eps=1e-9)
            assert cfg.camera_jitter.contains(np.linalg.norm(target), eps=1e-9)
        for name in ("red", "white", "brown"):
            assert cfg.shade.contains(np.linalg.norm(np.subtract(look.rgb(name), assets.COLORS[name])), eps=1e-6)
        radius, height, wall = look.bowl()
        assert cfg.bowl_radius.contains(radius) and cfg.bowl_height.contains(height) and cfg.bowl_wall.contains(wall)
        side, line = look.zone()
        assert cfg.zone_size.contains(side) and (line == 0 or cfg.zone_line.contains(line))
        dims = look.block_dims(0.04)
        for d in dims:
            assert cfg.block_aspect.contains(abs(d / (0.04 * look.block_scale) - 1), eps=1e-9)


@pytest.mark.parametrize("split", ["train", "shifted"])
def test_scene_objects_follow_their_split(split):
    """The built scene, not just the draw: bowls, zones, blocks and distractors as the ranges say."""
    cfg = APPEARANCE[split]
    kinds_seen, distractors = set(), []
    for task in ("put-block-in-bowl", "put-block-in-zone", "stack-blocks-by-size"):
        with TabletopEnv(EnvConfig(task=task, appearance=split, observe=False)) as env:
            for seed in range(6):
                env.reset(seed)
                look, objects = env.look, env.scene.objects
                distractors.append(sum(o.distractor for o in objects))
                assert len(env.cameras) == len(look.cameras)
                for o in objects:
                    kinds_seen.add((o.kind, o.distractor))
                    if o.kind == "bowl":
                        assert cfg.bowl_radius.contains(o.extent) and cfg.bowl_height.contains(o.height)
                    elif o.kind == "zone":
                        assert cfg.zone_size.contains(o.extent)
                    else:
                        nominal = assets.BLOCK_SIZES[o.size] * look.block_scale
                        assert abs(o.height / nominal - 1) <= cfg.block_aspect.high + 1e-9
                    if o.distractor:
                        assert o.kind in env.task.distractors
                        task_colors = {t.color for t in objects if not t.distractor}
                        assert o.color not in task_colors  # a distractor never changes what is asked
                # A big block is bigger than a medium one, a medium than a small one, in every look.
                sizes = {o.size: o.height for o in objects if o.kind == "block" and not o.distractor}
                if len(sizes) == 3:
                    assert sizes["big"] > sizes["medium"] > sizes["small"]
    assert max(distractors) <= cfg.distractors[1]
    assert ("block", True) in kinds_seen or ("bowl", True) in kinds_seen


def test_same_seed_reproduces_the_randomized_scene_and_cloud():
    config = EnvConfig(task="put-block-in-bowl", appearance="shifted", phrasing="heldout", **SMALL)
    with TabletopEnv(config) as a, TabletopEnv(config) as b:
        obs_a, info_a = a.reset(11)
        obs_b, info_b = b.reset(11)
        assert obs_a["instruction"] == obs_b["instruction"]
        np.testing.assert_array_equal(obs_a["cloud"].xyz, obs_b["cloud"].xyz)
        np.testing.assert_array_equal(obs_a["cloud"].rgb, obs_b["cloud"].rgb)
        assert [o.extent for o in a.scene.objects] == [o.extent for o in b.scene.objects]
        assert a.look.table_rgb == b.look.table_rgb
        obs_c, _ = a.reset(12)
        assert a.look.table_rgb != b.look.table_rgb
        assert info_a["appearance"] == "shifted" and info_a["phrasing"] == "heldout"


def test_plain_is_the_original_look():
    with TabletopEnv(EnvConfig(task="put-block-in-bowl", **SMALL)) as env:
        env.reset(3)
        assert env.look is None and len(env.cameras) == 3
        for o in env.scene.objects:
            if o.kind == "bowl":
                assert (o.extent, o.height, o.wall) == (assets.BOWL_RADIUS, assets.BOWL_HEIGHT, assets.BOWL_WALL)
            else:
                assert o.height == assets.BLOCK_SIZES[o.size] and not o.distractor


def test_sensing_noise_and_dropout_change_the_cloud_but_not_the_scene():
    quiet = dataclasses.replace(TRAIN, depth_noise=Ranges.of((0.0, 0.0)), dropout=Ranges.of((0.0, 0.0)),
                                cameras=(3, 3), camera_jitter=Ranges.of((0.0, 0.0)))
    noisy = dataclasses.replace(quiet, depth_noise=Ranges.of((0.004, 0.004)), dropout=Ranges.of((0.2, 0.2)))
    with TabletopEnv(EnvConfig(task="stack-blocks", appearance=quiet, **SMALL)) as a, \
            TabletopEnv(EnvConfig(task="stack-blocks", appearance=noisy, **SMALL)) as b:
        ca, cb = a.reset(5)[0]["cloud"], b.reset(5)[0]["cloud"]
    assert len(cb) < len(ca)  # dropped pixels return nothing
    top_a = ca.xyz[ca.label > 0, 2]
    top_b = cb.xyz[cb.label > 0, 2]
    assert np.std(top_b) != pytest.approx(np.std(top_a), abs=1e-6)


def test_one_camera_sees_one_side_of_each_object():
    one = dataclasses.replace(TRAIN, cameras=(1, 1))
    with TabletopEnv(EnvConfig(task="stack-blocks", appearance=one, observe=True)) as env:
        obs, _ = env.reset(2)
        assert len(env.cameras) == 1
        cloud = obs["cloud"]
    with TabletopEnv(EnvConfig(task="stack-blocks", appearance=dataclasses.replace(one, cameras=(3, 3)))) as env:
        full = env.reset(2)[0]["cloud"]
    assert 0 < len(cloud) < 0.7 * len(full)


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "shifted"])
def test_oracle_solves_randomized_scenes_of_every_task(split):
    failures = []
    for task in TASKS:
        with TabletopEnv(EnvConfig(task=task, appearance=split, observe=False)) as env:
            for i in range(4):
                outcome = run_oracle(env, 2_000_000 + i)
                if not outcome.success:
                    failures.append((task, outcome.seed, outcome.reason, outcome.detail))
    assert not failures
