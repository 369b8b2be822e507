"""Pose-DiT on the 3D-MoE condition: frozen (the LLM's condition cached once) or joint (LoRA trains too)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from threedmoe_ros.data.synthetic import SyntheticPickPlace
from threedmoe_ros.models.mm_llm import MMLLMConfig, ThreeDMoELLM
from threedmoe_ros.models.point_encoder import PointEncoderConfig
from threedmoe_ros.policy import Policy, PolicyConfig
from threedmoe_ros.train import pose_dit


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("stage2") / "checkpoint"
    ThreeDMoELLM(MMLLMConfig(llm="tiny", moe="e2-top2", point_encoder=PointEncoderConfig.tiny(),
                             system_prompt="You see a tabletop.")).save_pretrained(path)
    return path


def _run(out, encoder_dir, regime: str, condition: str = "final_token", **kwargs) -> Policy:
    cfg = pose_dit.TrainConfig(out=str(out), synthetic=12, max_steps=3, batch_size=4, warmup_steps=1, log_every=1,
                               ema_decay=0.0, device="cpu", encoder="3dmoe", encoder_checkpoint=str(encoder_dir),
                               condition=condition, regime=regime)
    head = dataclasses.replace(PolicyConfig().head, hidden_size=32, depth=1, horizon=4)
    return pose_dit.train(cfg, PolicyConfig(head=head), SyntheticPickPlace(12, seed=0), progress=False, **kwargs)


def test_frozen_regime_trains_the_head_on_a_cached_condition(tmp_path, encoder_dir):
    start = ThreeDMoELLM.from_pretrained(encoder_dir).state_dict()
    policy = _run(tmp_path / "run", encoder_dir, "frozen", condition="all_hidden")
    assert all(torch.equal(v, policy.encoder.state_dict()[k]) for k, v in start.items())  # the LLM did not move
    cache = torch.load(tmp_path / "run/condition_cache.pt", weights_only=False)
    assert len(cache["items"]) == 12 and cache["stamp"]["condition"] == "all_hidden"
    # The checkpoint rebuilds the same policy, its encoder from encoder/ with the condition it trained on.
    loaded = Policy.from_pretrained(tmp_path / "run/checkpoint")
    assert loaded.encoder.config.condition == "all_hidden"
    cloud, instruction, _ = SyntheticPickPlace(1, seed=5)[0]
    with torch.no_grad():
        a, b = policy.condition([cloud], [instruction]), loaded.condition([cloud], [instruction])
    assert torch.allclose(a.tokens, b.tokens, atol=1e-5)
    # The cached condition is the live one (up to its float16 storage).
    item = cache["items"][0][0]
    live = policy.encoder([SyntheticPickPlace(12, seed=0)[0][0]], [SyntheticPickPlace(12, seed=0)[0][1]])
    assert torch.allclose(item.tokens.float(), live.tokens[0, : len(item.tokens)], atol=2e-2, rtol=1e-2)


def test_joint_regime_moves_lora_and_routers(tmp_path, encoder_dir):
    start = dict(ThreeDMoELLM.from_pretrained(encoder_dir).named_parameters())
    policy = _run(tmp_path / "run", encoder_dir, "joint")
    moved = {n for n, p in policy.encoder.named_parameters() if not torch.equal(p, start[n])}
    assert any("lora_B" in n for n in moved) and any("router" in n for n in moved)
    assert not any("pointnet" in n or ("base_layer" in n and "lora" not in n) for n in moved)
    assert not (tmp_path / "run/condition_cache.pt").exists()


def test_3dmoe_needs_an_encoder_checkpoint():
    with pytest.raises(ValueError, match="encoder-checkpoint"):
        pose_dit.TrainConfig(out="x", synthetic=4, encoder="3dmoe")
