"""The policy facade: plans a user can execute, clear errors on bad input, and checkpoints that
load back to the same plans."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from threedmoe_ros.models.condition import ConditionEncoder
from threedmoe_ros.models.light_encoder import LightConditionEncoder, LightEncoderConfig, object_features, tokenize
from threedmoe_ros.models.pose_dit import PoseDiTConfig
from threedmoe_ros.policy import CheckpointError, PlanResult, Policy, PolicyConfig
from threedmoe_ros.data.synthetic import SyntheticPickPlace
from threedmoe_ros.types import Cloud

SMALL_HEAD = PoseDiTConfig(hidden_size=64, depth=2, num_heads=4, horizon=4, cond_dim=32)
SMALL = dict(head=SMALL_HEAD, encoder_config={"dim": 32, "layers": 1})
INSTRUCTION = "put the red block in the green zone"


def _randomise(policy: Policy, seed: int = 0) -> Policy:
    """Random weights everywhere (zero-initialised output layers would make every plan alike)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        policy.head.final_layer.validity.bias.fill_(5.0)  # every step valid, so plans are not empty
    return policy.eval()


@pytest.fixture(scope="module")
def scene() -> Cloud:
    return SyntheticPickPlace(1, seed=3)[0][0]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return _randomise(Policy(PolicyConfig(**SMALL)))


def test_plan_is_executable(policy, scene):
    result = policy.plan(scene, INSTRUCTION, seed=0)
    assert isinstance(result, PlanResult)
    assert result.poses.shape == (4, 2, 7) and result.poses.dtype == np.float64
    low, high = np.array(policy.config.codec.low), np.array(policy.config.codec.high)
    assert (result.poses[..., :3] >= low - 1e-6).all() and (result.poses[..., :3] <= high + 1e-6).all()
    assert np.allclose(np.linalg.norm(result.poses[..., 3:], axis=-1), 1, atol=1e-5)
    assert result.valid_prob.shape == (4,)
    assert result.steps == 4 and result.encoder_ms > 0 and result.head_ms > 0
    assert result.total_ms >= result.encoder_ms + result.head_ms - 1e-6


def test_validity_truncates_at_the_first_invalid_step(scene):
    policy = _randomise(Policy(PolicyConfig(**SMALL)))
    with torch.no_grad():
        policy.head.final_layer.validity.weight.zero_()
        policy.head.final_layer.validity.bias.fill_(-5.0)
    assert policy.plan(scene, INSTRUCTION, seed=0).poses.shape == (0, 2, 7)


def test_seed_reproduces_and_reset_rewinds(policy, scene):
    a = policy.plan(scene, INSTRUCTION, seed=1).poses
    assert np.array_equal(a, policy.plan(scene, INSTRUCTION, seed=1).poses)
    assert not np.allclose(a, policy.plan(scene, INSTRUCTION, seed=2).poses)
    policy.reset()
    first = [policy.plan(scene, INSTRUCTION).poses for _ in range(2)]
    policy.reset()
    again = [policy.plan(scene, INSTRUCTION).poses for _ in range(2)]
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not np.allclose(first[0], first[1])


def test_save_load_gives_identical_plans(policy, scene, tmp_path):
    policy.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"config.json", "model.safetensors"}
    loaded = Policy.from_pretrained(tmp_path / "ckpt")
    for steps in (1, 4):
        assert np.array_equal(policy.plan(scene, INSTRUCTION, steps, seed=5).poses, loaded.plan(scene, INSTRUCTION, steps, seed=5).poses)
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


@pytest.mark.parametrize(
    "cloud_kind, text, words",
    [
        ("ok", "", "empty"),
        ("ok", "   ", "empty"),
        ("ok", "put " * 200, "limit"),
        ("nan", INSTRUCTION, "NaN"),
        ("empty", INSTRUCTION, "no points"),
    ],
)
def test_bad_input_raises_value_error_with_a_reason(policy, scene, cloud_kind, text, words):
    cloud = scene
    if cloud_kind == "nan":
        xyz = scene.xyz.copy()
        xyz[3] = np.nan
        cloud = Cloud(xyz, scene.rgb, scene.label)
    elif cloud_kind == "empty":
        cloud = Cloud(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=words):
        policy.plan(cloud, text)


def test_answer_says_what_is_missing(policy, scene):
    with pytest.raises(NotImplementedError, match="answerer"):
        policy.answer(scene, "what colour is the block?")
    policy.answerer = lambda cloud, question: "red"
    try:
        assert policy.answer(scene, "what colour is the block?") == "red"
    finally:
        policy.answerer = None


def test_head_does_not_care_which_encoder_is_behind_the_interface(scene):
    class ConstantEncoder(ConditionEncoder):
        cond_dim = 32

        def __init__(self):
            super().__init__()
            self.token = torch.nn.Parameter(torch.randn(1, 1, 32))

        def forward(self, clouds, instructions):
            return self.token.expand(len(clouds), 3, -1), torch.ones(len(clouds), 3, dtype=torch.bool)

    policy = Policy(PolicyConfig(**SMALL), encoder=ConstantEncoder())
    assert policy.plan(scene, INSTRUCTION, seed=0).valid_prob.shape == (4,)


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


def test_encoder_width_must_match_the_head():
    with pytest.raises(ValueError, match="cond_dim"):
        Policy(PolicyConfig(head=SMALL_HEAD, encoder_config={"dim": 64}))


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


def test_frozen_head_plans_like_the_eager_one(scene):
    from threedmoe_ros.models.schedulers import DDPM

    policy = _randomise(Policy(PolicyConfig(**SMALL)))
    for scheduler in (policy.scheduler, DDPM(sampler="ddim")):
        policy.scheduler = scheduler
        for text in (INSTRUCTION, "stack the blocks"):  # condition lengths differ
            policy._frozen_head = None
            eager = policy.plan(scene, text, seed=3).poses
            fast = policy.optimize_for_inference().plan(scene, text, seed=3).poses
            assert policy._frozen_head is not None
            assert np.allclose(eager, fast, atol=1e-5)
    policy.train()
    assert policy._frozen_head is None


def test_3dmoe_policy_saves_loads_and_answers(tmp_path):
    """A policy whose condition comes from the (tiny) 3D-MoE LLM round-trips through its checkpoint,
    though the LLM's experts share one frozen weight, and answers questions through the facade."""
    import numpy as np

    from threedmoe_ros.models.pose_dit import PoseDiTConfig
    from threedmoe_ros.policy import Policy, PolicyConfig
    from threedmoe_ros.types import Cloud

    from threedmoe_ros.models.mm_llm import MMLLMConfig, ThreeDMoELLM

    encoder_config = {"llm": "tiny", "moe": "e2-top2"}
    dim = ThreeDMoELLM(MMLLMConfig(**encoder_config)).cond_dim
    policy = Policy(PolicyConfig(encoder="3dmoe", encoder_config=encoder_config, head=PoseDiTConfig(cond_dim=dim)))
    rng = np.random.default_rng(0)
    label = np.repeat([0, 1, 2], 200)
    cloud = Cloud(rng.uniform(0, 1, (600, 3)) * [0.5, 1, 0.05] + [0.25, -0.5, 0], rng.integers(0, 255, (600, 3)), label)
    before = policy.plan(cloud, "stack the blocks", seed=3).valid_prob
    loaded = Policy.from_pretrained(policy.save_pretrained(tmp_path / "ckpt"))
    np.testing.assert_allclose(loaded.plan(cloud, "stack the blocks", seed=3).valid_prob, before, atol=1e-5)
    assert isinstance(loaded.answer(cloud, "how many blocks are there?"), str)
