"""The policy (the model): checkpoints that load back to the same plans, configs that refuse what
cannot work, and the light encoder's tokens. Serving it (validation, seeds, cutting, dtypes) is
tested in test_planner.py."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from threedmoe_ros.models.condition import ConditionEncoder
from threedmoe_ros.models.light_encoder import LightConditionEncoder, LightEncoderConfig, object_features, tokenize
from threedmoe_ros.planner import Planner
from threedmoe_ros.policy import CheckpointError, Policy, PolicyConfig
from threedmoe_ros.data.synthetic import SyntheticPickPlace
from threedmoe_ros.types import Cloud

from _small_policy import INSTRUCTION, SMALL, SMALL_HEAD, small_policy


@pytest.fixture(scope="module")
def scene() -> Cloud:
    return SyntheticPickPlace(1, seed=3)[0][0]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return small_policy()


def test_save_load_gives_identical_plans(policy, scene, tmp_path):
    policy.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"config.json", "model.safetensors"}
    loaded = Policy.from_pretrained(tmp_path / "ckpt")
    before, after = Planner(policy, frozen=False), Planner(loaded, frozen=False)
    for steps in (1, 4):
        assert np.array_equal(before.plan(scene, INSTRUCTION, steps, seed=5).poses, after.plan(scene, INSTRUCTION, steps, seed=5).poses)
    assert loaded.config == policy.config
    assert loaded.model_id == "ckpt"


def test_checkpoint_carries_the_workspace_statistics(policy, tmp_path):
    changed = Policy(PolicyConfig(**SMALL, codec={"low": (0.0, -1.0, 0.0), "high": (1.0, 1.0, 0.5)}))
    changed.save_pretrained(tmp_path)
    # Even weights loaded into a policy built with the default box decode with the saved box.
    other = Policy(PolicyConfig(**SMALL))
    from safetensors.torch import load_file

    other.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    assert torch.equal(other.codec.low, torch.tensor([0.0, -1.0, 0.0]))


def test_missing_or_corrupt_checkpoint_names_the_path(policy, tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "nowhere")):
        Policy.from_pretrained(tmp_path / "nowhere")
    policy.save_pretrained(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="corrupt"):
        Policy.from_pretrained(tmp_path / "a")
    policy.save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        Policy.from_pretrained(tmp_path / "b")
    policy.save_pretrained(tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["head"]["hidden_size"] = 32
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match"):
        Policy.from_pretrained(tmp_path / "c")


def test_head_does_not_care_which_encoder_is_behind_the_interface(scene):
    class ConstantEncoder(ConditionEncoder):
        cond_dim = 32

        def __init__(self):
            super().__init__()
            self.token = torch.nn.Parameter(torch.randn(1, 1, 32))

        def forward(self, clouds, instructions):
            return self.token.expand(len(clouds), 3, -1), torch.ones(len(clouds), 3, dtype=torch.bool)

    policy = Policy(PolicyConfig(**SMALL), encoder=ConstantEncoder())
    assert Planner(policy, frozen=False).plan(scene, INSTRUCTION, seed=0).valid_prob.shape == (4,)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(codec={"rotation": "euler"}), "pose_dim"),
        (dict(encoder="pointnet"), "unknown encoder"),
        (dict(encoder_config={"width": 3}), "encoder_config"),
        (dict(scheduler="ddpm", scheduler_config={"sampler": "heun"}), "sampler"),
        (dict(max_instruction_chars=0), "max_instruction_chars"),
    ],
)
def test_bad_policy_config_is_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        PolicyConfig(**kwargs)


def test_head_sizes_come_from_the_encoder_and_the_codec():
    """The head's condition width is the encoder's cond_dim and its metric scale half the codec's box:
    derived from the parts, so no config can set them out of step."""
    head = dataclasses.replace(SMALL_HEAD, output="pointer")
    policy = Policy(PolicyConfig(head=head, encoder_config={"dim": 64, "layers": 1},
                                 codec={"low": (0.0, -1.0, 0.0), "high": (1.0, 1.0, 0.5)}))
    assert policy.head.cond_proj.in_features == policy.encoder.cond_dim == 64
    assert torch.allclose(policy.head.pointer.unit, torch.tensor([0.5, 1.0, 0.25]))
    assert not {"cond_dim", "unit_m"} & set(policy.config.to_dict()["head"])


def test_light_encoder_tokens_objects_and_words(scene):
    enc = LightConditionEncoder(LightEncoderConfig(dim=32, layers=1))
    n_objects = len(np.unique(scene.label[scene.label > 0]))
    tokens, mask, anchors, boxes, anchor_mask = enc([scene, scene], [INSTRUCTION, "stack"])
    assert anchor_mask[0].sum() == n_objects and not anchor_mask[0, n_objects:].any()  # objects carry anchors, words none
    assert (anchors[0, :n_objects, 2] > 0).all()  # top faces, above the table
    assert tokens.shape == (2, n_objects + 8, 32) and mask.shape == (2, n_objects + 8)
    assert mask[0].all() and mask[1].sum() == n_objects + 1
    assert torch.isfinite(tokens).all()
    # Colour is in the object features; colour words get their own stable buckets.
    feats, _ = object_features(scene, enc.config)
    assert feats.shape == (n_objects, 12) and np.ptp(feats[:, 6:9], axis=0).max() > 0.3
    assert np.abs(feats[:, 10:]).max() <= 1 + 1e-6
    assert tokenize("Red BLOCK", 2048, 32) == tokenize("red block", 2048, 32)
    assert tokenize("red", 2048, 32) != tokenize("green", 2048, 32)


def test_light_encoder_without_labels_segments_the_cloud(scene):
    enc = LightConditionEncoder(LightEncoderConfig(dim=32, layers=1))
    unlabelled = Cloud(scene.xyz, scene.rgb)
    tokens, mask = enc([unlabelled, Cloud(np.zeros((0, 3)))], ["pick", ""])[:2]
    assert 0 < mask[0].sum() <= 64 + 1 and mask[1].any()
    assert torch.isfinite(tokens).all()


def test_orientation_feature_turns_with_four_times_the_yaw():
    """A square turned by θ and by θ + 90° gives the same feature; by −θ, a different one."""
    rng = np.random.default_rng(0)
    local = rng.uniform(-0.02, 0.02, (400, 2))

    def square(theta):
        c, s = np.cos(theta), np.sin(theta)
        xy = local @ np.array([[c, s], [-s, c]]) + [0.5, 0.0]
        return Cloud(np.c_[xy, np.full(400, 0.02)], label=np.ones(400))

    cfg = LightEncoderConfig()
    f = lambda theta: object_features(square(theta), cfg)[0][0, 10:]  # noqa: E731
    assert np.allclose(f(0.3), f(0.3 + np.pi / 2), atol=1e-6)
    assert np.linalg.norm(f(0.3) - f(-0.3)) > 0.1
    angle = lambda v: np.arctan2(v[1], v[0])  # noqa: E731
    assert abs(angle(f(0.2)) - angle(f(0.0)) - 0.8) < 0.15  # phase moves by 4θ
