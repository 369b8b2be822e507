"""The planner as its callers meet it: bad input refused with the reason, plans cut at their first
invalid step and judged by the plan validator, seeds that reproduce, a frozen head that plans like
the eager one, half-precision heads that plan like float32, and devices or dtypes it cannot use
refused by name."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from threedmoe_ros.checkpoints import DEFAULT_POLICY
from threedmoe_ros.data.synthetic import SyntheticPickPlace
from threedmoe_ros.models.refine import refine_plan
from threedmoe_ros.models.schedulers import DDPM
from threedmoe_ros.planner import Planner, PlanResult
from threedmoe_ros.policy import CheckpointError
from threedmoe_ros.types import Cloud
from threedmoe_ros.validation import InputError

from _small_policy import INSTRUCTION, small_policy


@pytest.fixture(scope="module")
def scene() -> Cloud:
    return SyntheticPickPlace(1, seed=3)[0][0]


@pytest.fixture(scope="module")
def planner() -> Planner:
    return Planner(small_policy(), frozen=False)


def sampling_returns(planner: Planner, poses: np.ndarray, valid_prob: list[float]) -> Planner:
    """Make the planner sample exactly `poses` (T, 2, 7) with `valid_prob` (T,)."""
    planner.sample = lambda cond, steps=None, generator=None: (
        torch.as_tensor(poses, dtype=torch.float32)[None], torch.tensor(valid_prob)[None])
    return planner


def test_plan_is_executable(planner, scene):
    result = planner.plan(scene, INSTRUCTION, seed=0)
    assert isinstance(result, PlanResult)
    assert result.poses.shape == (4, 2, 7) and result.poses.dtype == np.float64
    low, high = np.array(planner.policy.config.codec.low), np.array(planner.policy.config.codec.high)
    assert (result.poses[..., :3] >= low - 1e-6).all() and (result.poses[..., :3] <= high + 1e-6).all()
    assert np.allclose(np.linalg.norm(result.poses[..., 3:], axis=-1), 1, atol=1e-5)
    assert result.valid_prob.shape == (4,) and result.problem == ""
    assert result.steps == 4 and result.encoder_ms > 0 and result.head_ms > 0
    assert result.total_ms >= result.encoder_ms + result.head_ms - 1e-6


@pytest.mark.parametrize(
    "cloud_kind, text, extra, words",
    [
        ("ok", "", {}, "instruction is empty"),
        ("ok", "   ", {}, "instruction is empty"),
        ("ok", "put " * 200, {}, "limit of 512"),
        ("ok", "put the red\x00 block", {}, "control characters"),
        ("nan", INSTRUCTION, {}, "NaN"),
        ("empty", INSTRUCTION, {}, "no points"),
        ("table", INSTRUCTION, {}, "no objects"),
        ("ok", INSTRUCTION, {"steps": -1}, "steps must be a positive int"),
        ("ok", INSTRUCTION, {"steps": 2.0}, "steps must be a positive int"),
        ("ok", INSTRUCTION, {"seed": -1}, "seed must be an int >= 0"),
    ],
)
def test_bad_input_is_refused_with_the_reason(planner, scene, cloud_kind, text, extra, words):
    cloud = scene
    if cloud_kind == "nan":
        xyz = scene.xyz.copy()
        xyz[3] = np.nan
        cloud = Cloud(xyz, scene.rgb, scene.label)
    elif cloud_kind == "empty":
        cloud = Cloud(np.zeros((0, 3)))
    elif cloud_kind == "table":
        cloud = Cloud(scene.xyz, scene.rgb, np.zeros(len(scene), int))
    with pytest.raises(InputError, match=words):
        planner.plan(cloud, text, **extra)


def test_a_plan_is_cut_at_its_first_invalid_step(scene):
    planner = Planner(small_policy(), frozen=False)
    poses = planner.plan(scene, INSTRUCTION, seed=0).poses
    result = sampling_returns(planner, poses, [0.9, 0.2, 0.9, 0.9]).plan(scene, INSTRUCTION, seed=0)
    np.testing.assert_allclose(result.poses, poses[:1], atol=1e-6)  # never a plan with a hole in it
    np.testing.assert_allclose(result.valid_prob, [0.9, 0.2, 0.9, 0.9], atol=1e-6)
    assert sampling_returns(planner, poses, [0.1, 0.9, 0.9, 0.9]).plan(scene, INSTRUCTION).poses.shape == (0, 2, 7)


def test_no_steps_or_zero_plan_with_the_checkpoints_own(scene):
    """The planner passes what its caller gave to the scheduler, the one resolver: None or 0 is the
    checkpoint's own count (RF 4; a DDPM checkpoint's 100, which refuses any other count but DDIM's)."""
    planner = Planner(small_policy(), frozen=False)
    none, zero = planner.plan(scene, INSTRUCTION, seed=2), planner.plan(scene, INSTRUCTION, steps=0, seed=2)
    assert none.steps == zero.steps == 4 and np.array_equal(none.poses, zero.poses)
    assert planner.plan(scene, INSTRUCTION, steps=2, seed=2).steps == 2
    policy = small_policy()
    policy.scheduler = DDPM()
    ddpm = Planner(policy, frozen=False)
    assert ddpm.plan(scene, INSTRUCTION, steps=0, seed=0).steps == 100
    with pytest.raises(InputError, match="ddim"):
        ddpm.plan(scene, INSTRUCTION, steps=4, seed=0)


def test_horizon_keeps_at_most_that_many_steps(scene):
    assert Planner(small_policy(), frozen=False, horizon=2).plan(scene, INSTRUCTION, seed=0).poses.shape == (2, 2, 7)
    with pytest.raises(ValueError, match="horizon"):
        Planner(small_policy(), horizon=0)


def test_a_plan_the_validator_refuses_says_why(scene):
    planner = Planner(small_policy(), frozen=False)
    poses = planner.plan(scene, INSTRUCTION, seed=0).poses.copy()
    poses[1, 0, 0] = np.nan
    result = sampling_returns(planner, poses, [0.9] * 4).plan(scene, INSTRUCTION, seed=0)
    assert "step 1 pick pose has non-finite values" in result.problem


def test_refine_snaps_the_sampled_plan_onto_the_cloud(scene):
    policy = small_policy()
    sampled = Planner(policy, frozen=False).plan(scene, INSTRUCTION, seed=4).poses
    refined = Planner(policy, frozen=False, refine=True).plan(scene, INSTRUCTION, seed=4).poses
    np.testing.assert_allclose(refined, refine_plan(sampled, scene))


def test_seed_reproduces_and_reset_rewinds(planner, scene):
    a = planner.plan(scene, INSTRUCTION, seed=1).poses
    assert np.array_equal(a, planner.plan(scene, INSTRUCTION, seed=1).poses)
    assert not np.allclose(a, planner.plan(scene, INSTRUCTION, seed=2).poses)
    planner.reset()
    first = [planner.plan(scene, INSTRUCTION).poses for _ in range(2)]
    planner.reset()
    again = [planner.plan(scene, INSTRUCTION).poses for _ in range(2)]
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not np.allclose(first[0], first[1])


def test_frozen_head_plans_like_the_eager_one(scene):
    for scheduler in (None, DDPM(sampler="ddim")):
        policy = small_policy()
        policy.scheduler = scheduler or policy.scheduler
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # freezing falls back to the eager head with a warning: that is a failure here
            frozen = Planner(policy)
        eager = Planner(policy, frozen=False)
        assert frozen.frozen and not eager.frozen
        for text in (INSTRUCTION, "stack the blocks"):  # condition lengths differ
            np.testing.assert_allclose(frozen.plan(scene, text, seed=3).poses, eager.plan(scene, text, seed=3).poses, atol=1e-5)


@pytest.fixture(scope="module")
def trained() -> Planner:
    return Planner.from_pretrained(DEFAULT_POLICY, frozen=False)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_head_plans_like_float32(trained, scene, dtype):
    """The encoder stays float32 and the head runs in half precision, on the CPU: the plans pass the
    plan validator and their first step (the one executed next) agrees with float32's within a
    centimetre; later steps of an uncertain plan may point at another object, as another seed's
    would. The policy's own head stays float32."""
    half = Planner.from_pretrained(DEFAULT_POLICY, dtype=dtype)
    assert not half.frozen  # the frozen head is float32 only
    low, high = np.array(half.policy.config.codec.low), np.array(half.policy.config.codec.high)
    for text in (INSTRUCTION, "stack the blocks"):
        a, b = half.plan(scene, text, seed=0), trained.plan(scene, text, seed=0)
        assert len(a.poses) > 0 and len(b.poses) > 0
        assert a.problem == "" and np.isfinite(a.poses).all()
        assert (a.poses[..., :3] >= low - 1e-6).all() and (a.poses[..., :3] <= high + 1e-6).all()
        assert np.abs(a.poses[0] - b.poses[0]).max() < 0.01
        assert not np.array_equal(a.poses[0], b.poses[0])  # the head did run in half precision
    assert all(p.dtype == torch.float32 for p in half.policy.head.parameters())


@pytest.mark.parametrize("kwargs, words", [
    ({"dtype": "float8"}, "dtype 'float8' is not one of float32, float16, bfloat16"),
    ({"dtype": "torch.half"}, "dtype 'torch.half'"),
    ({"device": "tpu:0"}, "device 'tpu:0'"),
    ({"device": "cuda:7"}, "device 'cuda:7'"),
    ({"device": "meta"}, "device 'meta': the planner runs on cpu or cuda"),
])
def test_a_device_or_dtype_it_cannot_use_is_refused_by_name(tmp_path, kwargs, words):
    with pytest.raises(ValueError, match=words):
        Planner(small_policy(), **kwargs)
    # Checked before the checkpoint is read: the error is about the setting, not the (missing) directory.
    with pytest.raises(ValueError, match=words):
        Planner.from_pretrained(tmp_path / "missing", **kwargs)
    with pytest.raises(CheckpointError, match="missing"):
        Planner.from_pretrained(tmp_path / "missing")


def test_warm_up_names_the_dtype_and_device_when_plans_are_not_finite(scene):
    planner = Planner(small_policy(), frozen=False)
    planner.warm_up()
    sampling_returns(planner, np.full((4, 2, 7), np.nan), [0.9] * 4)
    with pytest.raises(ValueError, match="does not run with dtype float32 on cpu"):
        planner.warm_up()


def test_answer_validates_the_question_and_says_what_is_missing(scene):
    planner = Planner(small_policy(), frozen=False)
    with pytest.raises(NotImplementedError, match="answerer"):
        planner.answer(scene, "what colour is the block?")
    planner.policy.answerer = lambda cloud, question: f"red ({question})"
    assert planner.answer(scene, "  what colour is the block? ") == "red (what colour is the block?)"
    with pytest.raises(InputError, match="question is empty"):
        planner.answer(scene, " ")
    with pytest.raises(InputError, match="no points"):
        planner.answer(Cloud(np.zeros((0, 3))), "what colour is the block?")
