"""The pretrained object encoder: it names the tabletop's own colours, kinds and sizes, learns them from
labelled objects, comes back from its checkpoint with the same features offline, and a corrupt or
foreign checkpoint is an error that names the file."""

import numpy as np
import pytest
import torch

from threedmoe_ros.data.objects import group_objects
from threedmoe_ros.models.checkpoint import CheckpointError
from threedmoe_ros.models.object_attributes import ATTRIBUTES, ObjectAttributeConfig, ObjectAttributeEncoder
from threedmoe_ros.types import Cloud

TINY = ObjectAttributeConfig(points=32, sa_npoints=(8, 4), sa_nsample=(8, 4), sa_widths=((16,), (16,), (16,)))


def scene(rng) -> Cloud:
    """A grey table and two boxes: a red 3 cm one and a blue 5 cm one."""
    table = np.c_[rng.uniform(0.3, 0.7, (800, 2)), np.zeros(800)]
    red = rng.uniform(-0.015, 0.015, (200, 3)) + [0.4, 0.1, 0.015]
    blue = rng.uniform(-0.025, 0.025, (200, 3)) + [0.6, -0.1, 0.025]
    label = np.repeat([0, 1, 2], [800, 200, 200])
    rgb = np.array([[128, 120, 110], [220, 60, 60], [60, 90, 200]])[label]
    return Cloud(np.vstack([table, red, blue]), rgb, label)


def test_it_names_the_tabletops_own_attributes():
    from threedmoe_ros.sim.assets import BLOCK_SIZES, COLORS

    assert ATTRIBUTES["color"] == tuple(COLORS) and ATTRIBUTES["size"] == ("none", *BLOCK_SIZES)


def test_it_learns_names_from_labelled_objects_and_reloads_offline(tmp_path):
    from threedmoe_ros.train.object_encoder import AttributeLoss, collate

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    encoder = ObjectAttributeEncoder(TINY)
    samples = []
    for _ in range(8):
        cloud = scene(rng)
        groups = group_objects(cloud, "labels")
        xyz, rgb, extent = encoder.crops(cloud, groups)
        labels = [[ATTRIBUTES["color"].index("red"), 0, ATTRIBUTES["size"].index("small")],
                  [ATTRIBUTES["color"].index("blue"), 0, ATTRIBUTES["size"].index("big")]]
        samples += [(xyz[k], rgb[k], extent[k], torch.tensor(labels[k])) for k in range(2)]
    model = AttributeLoss(encoder)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss, _ = model(collate(samples))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    cloud = scene(np.random.default_rng(1))
    groups = group_objects(cloud, "labels")
    assert encoder.eval().predict(cloud, groups) == {"color": ["red", "blue"], "kind": ["block", "block"],
                                                     "size": ["small", "big"]}
    encoder.save_pretrained(tmp_path / "encoder")
    loaded = ObjectAttributeEncoder.from_pretrained(tmp_path / "encoder")
    assert not any(p.requires_grad for p in loaded.parameters())  # loaded frozen
    np.testing.assert_allclose(loaded.features(cloud, groups), encoder.features(cloud, groups), atol=1e-6)


@pytest.mark.parametrize("damage, words", [
    ("truncate", "model.safetensors is corrupt"),
    ("config", "not a valid object encoder config"),
    ("missing", "does not exist"),
])
def test_a_damaged_checkpoint_is_an_error_naming_the_file(tmp_path, damage, words):
    path = ObjectAttributeEncoder(TINY).save_pretrained(tmp_path / "encoder")
    weights = path / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "config":
        (path / "config.json").write_text('{"object_attributes": {"points": -1}, "attributes": {}}')
    else:
        weights.unlink()
    with pytest.raises(CheckpointError, match=words):
        ObjectAttributeEncoder.from_pretrained(path)


def test_a_light_encoder_reads_the_frozen_encoders_features_beside_the_geometry(tmp_path):
    from threedmoe_ros.models.light_encoder import LightEncoderConfig, object_features

    path = ObjectAttributeEncoder(TINY).save_pretrained(tmp_path / "encoder")
    cfg = LightEncoderConfig(object_encoder=str(path))
    cloud = scene(np.random.default_rng(2))
    feats, objs = object_features(cloud, cfg)
    explicit, _ = object_features(cloud, LightEncoderConfig())
    assert feats.shape == (2, cfg.n_object_features) == (2, 9 + TINY.feature_dim)
    np.testing.assert_allclose(feats[:, :6], explicit[:, :6])  # centroid and extent as before
    np.testing.assert_allclose(feats[:, 9:], ObjectAttributeEncoder.from_pretrained(path).features(
        cloud, group_objects(cloud, "labels")), atol=1e-6)
