"""The 3D encoder: sampling primitives, order invariance, and object grouping on tabletop clouds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from threedmoe_ros.models.point_encoder import (
    ObjectEncoder, PointEncoderConfig, PointNet2Encoder, SpatialTransformer, ball_query, cloud_to_objects,
    farthest_point_sample, fps_patches, group_objects, index_points,
)
from threedmoe_ros.types import Cloud


def _box(rng, centre, size, n):
    """Points on the surface of an axis-aligned box (five faces: no bottom, it sits on the table)."""
    c, s = np.asarray(centre), np.asarray(size)
    face = rng.integers(0, 5, n)
    u = rng.uniform(-0.5, 0.5, (n, 3))
    for axis, sign, f in [(0, -1, 0), (0, 1, 1), (1, -1, 2), (1, 1, 3), (2, 1, 4)]:
        u[face == f, axis] = 0.5 * sign
    return (c + u * s).astype(np.float32)


def tabletop(rng, with_labels: bool) -> Cloud:
    """A 1 m × 1 m table at z=0 and three boxes standing on it."""
    table = np.c_[rng.uniform(-0.5, 0.5, (4000, 2)), np.zeros(4000)].astype(np.float32)
    boxes = [_box(rng, (x, y, h / 2), (0.06, 0.06, h), 800) for x, y, h in [(-0.25, 0.1, 0.08), (0.2, 0.2, 0.05),
                                                                              (0.05, -0.3, 0.1)]]
    xyz = np.concatenate([table, *boxes])
    label = np.repeat(np.arange(4), [4000, 800, 800, 800]).astype(np.int32)
    # A table of one colour (as real tables are: flat objects on it are told apart by colour), a box of one each.
    rgb = np.array([[140, 140, 140], [200, 40, 40], [40, 160, 60], [50, 70, 200]], np.uint8)[label]
    return Cloud(xyz, rgb, label if with_labels else None)


def test_fps_is_farthest_and_distinct():
    torch.manual_seed(0)
    xyz = torch.rand(3, 200, 3)
    idx = farthest_point_sample(xyz, 20)
    assert idx.shape == (3, 20)
    for b in range(3):
        assert len(set(idx[b].tolist())) == 20
        # Each new point is the farthest from those chosen before it (brute force).
        for i in range(1, 20):
            chosen = xyz[b, idx[b, :i]]
            d = torch.cdist(xyz[b], chosen).min(1).values
            assert d[idx[b, i]] == pytest.approx(d.max().item(), abs=1e-6)


def test_ball_query_stays_in_the_ball():
    torch.manual_seed(0)
    xyz = torch.rand(2, 300, 3)
    centres = xyz[:, :10]
    idx = ball_query(xyz, centres, radius=0.2, k=16)
    assert idx.shape == (2, 10, 16)
    assert ((index_points(xyz, idx) - centres[:, :, None]).norm(dim=-1) <= 0.2 + 1e-6).all()


def test_pointnet_feature_ignores_point_order():
    cfg = PointEncoderConfig.tiny()
    net = PointNet2Encoder(cfg).eval()
    torch.manual_seed(0)
    xyz, rgb = torch.rand(4, 64, 3), torch.rand(4, 64, 3)
    perm = torch.randperm(64)
    with torch.no_grad():
        a, b = net(xyz, rgb), net(xyz[:, perm], rgb[:, perm])
    assert a.shape == (4, cfg.feature_dim)
    assert torch.allclose(a, b, atol=1e-5)


def test_spatial_transformer_permutes_with_objects_and_ignores_padding():
    torch.manual_seed(0)
    st = SpatialTransformer(feature_dim=16, hidden_dim=32, num_layers=2, num_heads=4).eval()
    feats, centres, sizes = torch.randn(1, 5, 16), torch.rand(1, 5, 3), torch.rand(1, 5, 3)
    mask = torch.ones(1, 5, dtype=torch.bool)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        out = st(feats, centres, sizes, mask)
        out_p = st(feats[:, perm], centres[:, perm], sizes[:, perm], mask)
        assert torch.allclose(out[:, perm], out_p, atol=1e-5)
        # Two padded slots with garbage change nothing for the real objects.
        pad = lambda t: torch.cat([t, 9 * torch.ones(1, 2, t.shape[-1])], 1)  # noqa: E731
        out_pad = st(pad(feats), pad(centres), pad(sizes), torch.tensor([[True] * 5 + [False] * 2]))
        assert torch.allclose(out_pad[:, :5], out, atol=1e-5) and (out_pad[:, 5:] == 0).all()


def test_attention_depends_on_object_distances():
    torch.manual_seed(0)
    st = SpatialTransformer(feature_dim=8, hidden_dim=16, num_layers=1, num_heads=2).eval()
    feats, sizes = torch.randn(1, 3, 8), torch.zeros(1, 3, 3)
    near = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0], [0.5, 0.5, 0]]])
    far = near.clone()
    far[0, 1, 0] = 0.4
    with torch.no_grad():
        assert not torch.allclose(st(feats, near, sizes, torch.ones(1, 3, dtype=torch.bool))[:, 0],
                                  st(feats, far, sizes, torch.ones(1, 3, dtype=torch.bool))[:, 0])


def test_labels_give_one_object_per_instance():
    cloud = tabletop(np.random.default_rng(0), with_labels=True)
    groups, ids, method = group_objects(cloud, PointEncoderConfig.tiny())
    assert method == "labels" and ids == [1, 3, 2]  # in reading order (x, then y), not label order
    assert [len(g) for g in groups] == [800, 800, 800]


def test_open3d_segments_plane_and_three_boxes():
    from threedmoe_ros.data.objects import SegmentConfig, segment

    cloud = tabletop(np.random.default_rng(1), with_labels=False)
    groups = segment(cloud, SegmentConfig(eps=0.02, min_points=10))  # the boxes here are sparse (5 mm spacing)
    assert len(groups) == 3
    truth = np.repeat(np.arange(4), [4000, 800, 800, 800])
    for g in groups:  # each cluster is (mostly) one box, never the table
        values, counts = np.unique(truth[g], return_counts=True)
        assert values[counts.argmax()] > 0 and counts.max() / len(g) > 0.95
    _, _, method = group_objects(cloud, PointEncoderConfig.tiny(dbscan_eps=0.02))
    assert method == "segment"


def test_patches_when_nothing_else_works():
    rng = np.random.default_rng(2)
    cloud = Cloud(rng.uniform(-1, 1, (2000, 3)))  # no labels, no table, one blob
    groups, _, method = group_objects(cloud, PointEncoderConfig.tiny(grouping="patches", num_patches=8))
    assert method == "patches" and len(groups) == 8
    assert sorted(np.concatenate(groups).tolist()) == list(range(2000))
    assert len(fps_patches(cloud.xyz[:5], 8)) == 5


def test_object_encoder_shapes_and_mask():
    cfg = PointEncoderConfig.tiny(out_dim=48)
    enc = ObjectEncoder(cfg).eval()
    rng = np.random.default_rng(3)
    three = tabletop(rng, with_labels=True)
    two = Cloud(three.xyz, three.rgb, np.where(three.label == 3, 0, three.label))
    with torch.no_grad():
        tokens, mask = enc([three, two])
    assert tokens.shape == (2, 3, 48) and mask.tolist() == [[True] * 3, [True, True, False]]
    assert (tokens[1, 2] == 0).all()
    # The same cloud always gives the same tokens (seeded subsampling).
    with torch.no_grad():
        again, _ = enc([three])
    assert torch.allclose(again[0], tokens[0], atol=1e-5)


def test_cloud_to_objects_caps_and_describes_boxes():
    cfg = PointEncoderConfig.tiny(max_objects=2)
    scene = cloud_to_objects(tabletop(np.random.default_rng(4), with_labels=True), cfg)
    assert len(scene) == 2 and scene.xyz.shape == (2, cfg.points_per_object, 3)
    assert np.allclose(scene.sizes[:, :2], 0.06, atol=0.01)
    with pytest.raises(ValueError, match="empty"):
        cloud_to_objects(Cloud(np.zeros((0, 3))), cfg)
    with pytest.raises(ValueError, match="grouping"):
        PointEncoderConfig(grouping="magic")
