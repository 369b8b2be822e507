"""One cloud → objects grouping for every consumer: instance labels when the cloud has them, the
region-growing segmentation when it does not — and both find the same objects in the same places."""

import numpy as np
import pytest

from threedmoe_ros.data.objects import TABLE_RGB, group_objects, objects_of
from threedmoe_ros.sim.env import EnvConfig, TabletopEnv
from threedmoe_ros.types import Cloud


def box(centre, size, label, rng, n=400):
    return rng.uniform(-0.5, 0.5, (n, 3)) * size + centre, np.full(n, label)


def test_labelled_objects_have_their_top_face_box_and_colour():
    rng = np.random.default_rng(0)
    parts = [box((0.5, 0.0, 0.0), (0.5, 1.0, 0.0), 0, rng, 2000), box((0.40, 0.10, 0.02), (0.04, 0.04, 0.04), 1, rng),
             box((0.60, -0.20, 0.025), (0.05, 0.05, 0.05), 2, rng), box((0.45, -0.30, 0.001), (0.12, 0.12, 0.002), 3, rng)]
    xyz = np.concatenate([p[0] for p in parts])
    label = np.concatenate([p[1] for p in parts])
    rgb = np.where(label[:, None] == 2, [200, 30, 30], [120, 120, 120])
    objs = objects_of(Cloud(xyz, rgb, label))
    assert objs.ids == [1, 3, 2]  # reading order (x, then y), not label order
    np.testing.assert_allclose(objs.top[0, :2], [0.40, 0.10], atol=0.005)
    assert abs(objs.top[2, 2] - 0.05) < 0.002 and objs.hi[1, 2] - objs.lo[1, 2] < 0.01  # the zone is flat
    np.testing.assert_allclose(objects_of(Cloud(xyz, rgb, label), balance=False).rgb[2], np.array([200, 30, 30]) / 255,
                               atol=1e-6)
    # Balanced, colours are as where the table looks as it does in the training looks.
    np.testing.assert_allclose(objs.rgb[2], np.array([200, 30, 30]) / 120 * TABLE_RGB, atol=1e-6)
    with pytest.raises(ValueError, match="no instance labels"):
        group_objects(Cloud(xyz), method="labels")


def test_object_colours_hold_under_another_light():
    """A dimmer, bluer light (and the table under it) leaves the objects' balanced colours where they were."""
    with TabletopEnv(EnvConfig(task="put-block-in-bowl", appearance="train")) as env:
        cloud = env.reset(2_000_000)[0]["cloud"]
    light = np.array([0.75, 0.8, 0.95])
    other = Cloud(cloud.xyz, np.round(cloud.rgb * light).astype(np.uint8), cloud.label)
    np.testing.assert_allclose(objects_of(other).top_rgb, objects_of(cloud).top_rgb, atol=0.02)
    assert np.abs(objects_of(other, balance=False).top_rgb - objects_of(cloud).top_rgb).max() > 0.05


@pytest.mark.parametrize("task", ["put-block-in-zone", "stack-blocks-by-size", "put-block-in-matching-bowl"])
def test_segmentation_finds_every_labelled_object_of_a_simulated_scene(task):
    with TabletopEnv(EnvConfig(task=task)) as env:
        for seed in range(2):
            cloud = env.reset(2_000_000 + seed)[0]["cloud"]
            labelled = objects_of(cloud)
            segmented = objects_of(Cloud(cloud.xyz, cloud.rgb))  # what a real sensor gives: no labels
            assert group_objects(Cloud(cloud.xyz, cloud.rgb)).method == "segment"
            assert len(segmented) == len(labelled)  # a bowl's floor joins its walls; no block rim becomes an object
            # Every labelled object — blocks, bowls and the flat zones — has a segment whose top face is within 1 cm.
            d = np.linalg.norm(labelled.top[:, None] - segmented.top[None], axis=-1).min(axis=1)
            assert (d < 0.01).all(), (task, seed, d)


def _recovered(cloud: Cloud, groups) -> tuple[int, int]:
    """(objects, objects some group covers at IoU ≥ 0.7) of a labelled cloud segmented without its labels."""
    ids = [i for i in np.unique(cloud.label) if i > 0 and (cloud.label == i).sum() >= 20]
    found = 0
    for i in ids:
        mask = cloud.label == i
        found += any((mask[g].sum() / (len(g) + mask.sum() - mask[g].sum())) >= 0.7 for g in groups.indices)
    return len(ids), found


@pytest.mark.parametrize("task, seed, what", [
    ("put-block-in-matching-bowl", 0, "three blocks, each in the bowl of its own colour"),
    ("stack-blocks-by-size", 0, "a tower of three blocks"),
])
def test_what_touches_segments_apart(task, seed, what):
    """Objects that touch (a block in a bowl of its colour, blocks in a tower) come out as one segment each."""
    with TabletopEnv(EnvConfig(task=task, appearance="train")) as env:
        env.reset(seed)
        obs, *_ = env.step(env.oracle_plan())
        assert env.outcome().success
    cloud = obs["cloud"]
    groups = group_objects(Cloud(cloud.xyz, cloud.rgb))
    objects, found = _recovered(cloud, groups)
    assert groups.method == "segment" and len(groups) == objects and found == objects, what


def test_object_order_does_not_tell_which_objects_the_task_is_about():
    """The simulator numbers a task's objects first; renumbering the labels leaves the objects, their
    order and their features as they were, and a segmented cloud lists the objects in that same order."""
    with TabletopEnv(EnvConfig(task="put-block-in-zone", appearance="train")) as env:
        cloud = env.reset(2_000_001)[0]["cloud"]
    renumbered = cloud.label.copy()
    ids = np.unique(cloud.label[cloud.label > 0])
    for old, new in zip(ids, np.random.default_rng(0).permutation(ids)):
        renumbered[cloud.label == old] = new
    a, b = objects_of(cloud), objects_of(Cloud(cloud.xyz, cloud.rgb, renumbered))
    np.testing.assert_array_equal(a.top, b.top)
    np.testing.assert_allclose(a.rgb, b.rgb)
    segmented = objects_of(Cloud(cloud.xyz, cloud.rgb))
    assert len(segmented) == len(a)
    np.testing.assert_allclose(segmented.top, a.top, atol=0.01)
