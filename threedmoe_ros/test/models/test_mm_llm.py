"""The 3D multimodal LLM: object tokens in the prompt, loss on answers only, a condition for Pose-DiT."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _llm_cache import smollm2
from test_point_encoder import tabletop

from threedmoe_ros.models.condition import ConditionEncoder
from threedmoe_ros.models.mm_llm import MMLLMConfig, ThreeDMoELLM
from threedmoe_ros.models.moe import moe_layers
from threedmoe_ros.models.point_encoder import PointEncoderConfig
from threedmoe_ros.types import Cloud

SHORT_SYSTEM = "You see a tabletop."


def tiny_model(**overrides) -> ThreeDMoELLM:
    cfg = MMLLMConfig(llm="tiny", point_encoder=PointEncoderConfig.tiny(), system_prompt=SHORT_SYSTEM, **overrides)
    return ThreeDMoELLM(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(0)
    three = tabletop(rng, with_labels=True)
    two = Cloud(three.xyz, three.rgb, np.where(three.label == 2, 0, three.label))
    return three, two


def test_condition_is_the_final_token_state_and_ignores_batchmates(scenes):
    """The paper's condition (no object anchors): the last prompt token's state, (B, 1, D)."""
    model = tiny_model(object_anchors=False)
    assert isinstance(model, ConditionEncoder) and model.cond_dim == 64
    with torch.no_grad():
        tokens, mask, anchors, *_ = model(list(scenes), ["put the red block in the bowl", "stack"])
        alone = model([scenes[1]], ["stack"]).tokens
    assert tokens.shape == (2, 1, 64) and mask.all() and anchors is None
    # Left padding with explicit positions: the short sample batched equals it alone.
    assert torch.allclose(tokens[1], alone[0], atol=1e-5)


def test_object_anchors_ride_along_with_the_final_token(model, scenes):
    """With object anchors (the default, for the pointer head) slot 0 is still the final token and the
    object tokens' states follow, each with its object's top-face centre and xy box."""
    from threedmoe_ros.data.objects import objects_of

    with torch.no_grad():
        cond = model(list(scenes), ["put the red block in the bowl", "stack"])
        paper = tiny_model(object_anchors=False)(list(scenes), ["put the red block in the bowl", "stack"])
    assert cond.tokens.shape == (2, 1 + 3, 64)
    assert torch.allclose(cond.tokens[:, 0], paper.tokens[:, 0], atol=1e-5)
    assert cond.anchor_mask.tolist() == [[False, True, True, True], [False, True, True, False]]
    assert cond.mask.tolist() == [[True] * 4, [True, True, True, False]]  # the second scene has 2 objects
    top = objects_of(scenes[0]).top
    assert np.allclose(cond.anchors[0, 1:].numpy(), top, atol=1e-5)
    box = cond.boxes[0, 1:].numpy()
    assert ((box[:, :2] <= top[:, :2]) & (top[:, :2] <= box[:, 2:])).all()


def test_all_hidden_condition_masks_padding(scenes):
    m = tiny_model(condition="all_hidden")
    with torch.no_grad():
        cond = m(list(scenes), ["a much longer instruction than the other one", "go"])
    tokens, mask = cond.tokens, cond.mask
    assert tokens.shape[:2] == mask.shape and mask[0].all() and not mask[1].all()
    assert (tokens[~mask] == 0).all()
    # The objects come first (anchors), the system turn is left out.
    assert cond.anchor_mask[0, :3].all() and not cond.anchor_mask[0, 3:].any()
    n_text = len(m.prompt_ids("a much longer instruction than the other one")[1])
    assert tokens.shape[1] == 3 + n_text


def test_objects_fill_the_placeholder_and_loss_sees_answers_only(model, scenes):
    before, after = model.prompt_ids("how many boxes?")
    inputs = model.build_inputs([scenes[0]], ["how many boxes?"], ["three"])
    n_answer = len(model.answer_ids("three"))
    assert inputs["inputs_embeds"].shape[1] == len(before) + 3 + len(after) + n_answer
    objects, _ = model.encoder([scenes[0]])
    assert torch.allclose(inputs["inputs_embeds"][0, len(before): len(before) + 3], objects[0])
    labels = inputs["labels"][0]
    assert model.tokenizer.decode(labels[labels >= 0]) == "three" + model.tokenizer.eos_token
    text = model.tokenizer.decode(before + [0] + after)
    assert text.startswith("<|im_start|>system\n" + SHORT_SYSTEM) and text.endswith("<|im_start|>assistant\n")


def test_stage2_gradients_reach_router_lora_projection_and_never_frozen_weights(scenes):
    m = tiny_model()
    m.configure_stage(2)
    with torch.no_grad():  # LoRA B starts at zero (so A gets no gradient yet): take one step's worth
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.01)
    loss, info = m.loss(list(scenes), ["how many boxes?", "which is tallest?"], ["three", "the left one"])
    assert info["aux_loss"] > 0 and info["lm_loss"] > 0
    loss.backward()
    trained = {n for n, p in m.named_parameters() if p.requires_grad}
    for kind in ("router", "lora_A", "lora_B", "encoder.proj"):
        assert any(kind in n for n in trained), kind
    for n, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n


def test_stage1_trains_spatial_transformer_and_projection_only(scenes):
    m = tiny_model()
    m.configure_stage(1)
    loss, _ = m.loss([scenes[0]], ["describe the scene"], ["three boxes on a table"])
    loss.backward()
    with_grad = {n.split(".")[1] for n, p in m.named_parameters() if p.grad is not None}
    assert with_grad == {"spatial", "proj"}


def test_answer_is_text(model, scenes):
    out = model.answer(scenes[0], "how many boxes?", max_new_tokens=4)
    assert isinstance(out, str)


def test_config_validates():
    with pytest.raises(ValueError, match="condition"):
        MMLLMConfig(llm="tiny", condition="mean")
    with pytest.raises(ValueError, match="moe"):
        MMLLMConfig(llm="tiny", moe="e8-top1")
    cfg = MMLLMConfig(llm="tiny", point_encoder={"points_per_object": 64, "sa_npoints": (16, 4)})
    assert cfg.point_encoder.points_per_object == 64 and cfg.lora == "tiny"


def test_smollm2_condition_and_answer(scenes):
    llm, tok = smollm2()
    m = ThreeDMoELLM(MMLLMConfig(llm="smollm2-135m", point_encoder=PointEncoderConfig.tiny()),
                     llm=copy.deepcopy(llm), tokenizer=tok).eval()
    with torch.no_grad():
        tokens = m([scenes[0]], ["put the red block in the green bowl"]).tokens
    assert tokens.shape == (1, 1 + 3, 576) and torch.isfinite(tokens).all()
    answer = m.answer(scenes[0], "Say hello.", max_new_tokens=6)
    assert isinstance(answer, str) and answer


@pytest.mark.parametrize("merge", [False, True])
def test_checkpoint_round_trip(tmp_path, scenes, merge):
    m = tiny_model()
    with torch.no_grad():  # trained-looking adapters and routers, so a lost weight would show
        for n, p in m.named_parameters():
            if "lora_B" in n or "router" in n or "encoder.proj" in n:
                p.add_(torch.randn_like(p) * 0.05)
        before = m([scenes[0]], ["put the red block in the bowl"]).tokens
    m.save_pretrained(tmp_path / "ckpt", merge=merge)
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert files >= {"mm_llm_config.json", "encoder.safetensors", "llm" if merge else "adapter"}
    loaded = ThreeDMoELLM.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        after = loaded([scenes[0]], ["put the red block in the bowl"]).tokens
    assert torch.allclose(before, after, atol=1e-5)
    # Saving (merged or not) leaves the live model's experts sharing one frozen weight.
    _, moe = next(moe_layers(m.llm))
    assert moe.experts[0].up_proj.base_layer.weight is moe.experts[1].up_proj.base_layer.weight


def test_missing_checkpoint_names_the_path(tmp_path):
    from threedmoe_ros.models.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=str(tmp_path)):
        ThreeDMoELLM.from_pretrained(tmp_path)


def test_drives_the_policy_through_the_planner(scenes):
    """The 3D-MoE LLM is a drop-in condition encoder for the Pose-DiT policy, and answers through the planner."""
    from threedmoe_ros.models.pose_dit import PoseDiTConfig
    from threedmoe_ros.planner import Planner
    from threedmoe_ros.policy import Policy, PolicyConfig

    encoder = tiny_model()
    planner = Planner(Policy(PolicyConfig(head=PoseDiTConfig()), encoder=encoder), frozen=False)
    result = planner.plan(scenes[0], "put the red block on the blue block", seed=0)
    assert result.poses.ndim == 3 and result.poses.shape[1:] == (2, 7)
    assert isinstance(planner.answer(scenes[0], "how many blocks?"), str)


def test_policy_checkpoint_holds_the_encoders_own_checkpoint_not_the_base_llm(tmp_path, scenes):
    """One checkpoint format: a 3D-MoE policy directory is config.json + model.safetensors (head, codec)
    + encoder/ (the LLM's adapters, routers, point encoder, projection); the base LLM is rebuilt."""
    import dataclasses

    from safetensors.torch import load_file

    from threedmoe_ros.models.pose_dit import PoseDiTConfig
    from threedmoe_ros.planner import Planner
    from threedmoe_ros.policy import CheckpointError, Policy, PolicyConfig

    encoder = tiny_model()
    with torch.no_grad():  # trained-looking adapters and routers, so a lost weight would show
        for n, p in encoder.named_parameters():
            if "lora_B" in n or "router" in n:
                p.add_(torch.randn_like(p) * 0.05)
    config = PolicyConfig(encoder="3dmoe", encoder_config=dataclasses.asdict(encoder.config),
                          head=PoseDiTConfig(output="pointer", hidden_size=32, depth=1))
    policy = Policy(config, encoder=encoder).eval()
    policy.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt/encoder/adapter/adapter_model.safetensors").is_file()
    assert not any(k.startswith("encoder.") for k in load_file(tmp_path / "ckpt/model.safetensors"))
    loaded = Policy.from_pretrained(tmp_path / "ckpt")
    instruction = "put the red block in the bowl"
    a = Planner(policy, frozen=False).plan(scenes[0], instruction, seed=3)
    b = Planner(loaded, frozen=False).plan(scenes[0], instruction, seed=3)
    assert np.allclose(a.poses, b.poses, atol=1e-5) and np.allclose(a.valid_prob, b.valid_prob, atol=1e-5)

    (tmp_path / "ckpt/encoder/adapter/adapter_model.safetensors").write_bytes(b"torn")
    with pytest.raises(CheckpointError, match="encoder"):
        Policy.from_pretrained(tmp_path / "ckpt")
    import shutil

    shutil.rmtree(tmp_path / "ckpt/encoder")
    with pytest.raises(CheckpointError, match="no encoder/"):
        Policy.from_pretrained(tmp_path / "ckpt")
