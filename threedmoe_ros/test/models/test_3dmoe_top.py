"""The 3D-MoE's trained top: the upcycled, LoRA-tuned top layers start as the frozen LM, plan from cached lower
states exactly as from the cloud, learn to answer questions (Stage II), and travel in the policy's checkpoint
without any LM weight."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from threedmoe_ros.models.light_encoder import object_inputs
from threedmoe_ros.models.lm_condition import LMConditionConfig, LMStates, LowerStates
from threedmoe_ros.planner import Planner
from threedmoe_ros.policy import Policy, PolicyConfig

from test_lm_condition import TINY, scenes, tiny_encoder  # noqa: I001  (same directory)

TOP = {"tune_layers": 1, "moe": "e2-top2", "lora": "tiny"}


def aligned(enc, clouds):
    feats = np.concatenate([object_inputs(c, enc.light.config).features for c in clouds])
    enc.fit_alignment(feats, ["red block"] * len(feats))
    return enc


def test_an_upcycled_top_starts_as_the_frozen_lm_and_the_cached_path_equals_the_direct_one():
    clouds, texts = scenes()
    frozen = aligned(tiny_encoder(), clouds)
    for top in (TOP, {**TOP, "moe": None}):
        enc = tiny_encoder(**top)
        enc.align.copy_(frozen.align)
        lower = enc.precompute(clouds, texts)
        assert all(isinstance(s, LowerStates) for s in lower)
        direct = [enc.precompute([c], [t])[0] for c, t in zip(clouds, texts)]  # batch 1: prefix cache, whole model
        for want, cached, one in zip(frozen.precompute(clouds, texts), enc.top_states(lower), direct):
            assert isinstance(one, LMStates)
            for got in (cached, one):
                torch.testing.assert_close(got.object_states, want.object_states, atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(got.instruction_states, want.instruction_states, atol=1e-5, rtol=1e-4)


def test_only_lora_routers_and_the_answer_norm_train_and_only_they_are_the_encoder_s_lm_weights():
    enc = tiny_encoder(**TOP)
    names = [n for n, p in enc.named_parameters() if p.requires_grad and n.startswith("tuned.")]
    assert names and all("lora_" in n or "router" in n or n.startswith("tuned.norm") for n in names)
    assert any("experts" in n for n in names) and any("router" in n for n in names)
    assert not any("embed_tokens" in n or "base_layer" in n for n, _ in enc.named_parameters())


def test_stage2_learns_to_answer_from_cached_states():
    """Two hundred steps on one question about two scenes: the loss falls, and greedy answers say what was taught."""
    torch.manual_seed(0)
    clouds, _ = scenes(2)
    enc = tiny_encoder(**TOP)
    enc.align.normal_(0, 1.0)  # distinct tokens for distinct objects (an alignment onto one word would merge them)
    qs, answers = ["what is it?", "what is it?"], ["red", "blue"]
    lower = enc.precompute(clouds, qs, answers)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(200):
        loss, info = enc.qa_loss(lower)
        first = first or info["lm_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert info["lm_loss"] < 0.7 * first and "aux_loss" in info
    assert enc.answer_batch(clouds, qs, max_new_tokens=6) == [enc.tokenizer.decode(enc._ids(a)) for a in answers]
    with pytest.raises(ValueError, match="tune_layers"):
        tiny_encoder().qa_loss(lower)


def test_config_refuses_a_top_that_cannot_train():
    for fields, words in [({"tune_layers": 3, "layer": 2, "lora": "tiny"}, "tune_layers"),
                          ({"tune_layers": 1}, "needs lora"), ({"moe": "e4-top2"}, "tune_layers > 0"),
                          ({"tune_layers": 1, "lora": "huge"}, "lora"), ({"tune_layers": 1, "lora": "tiny", "moe": "e9"}, "moe")]:
        with pytest.raises(ValueError, match=words):
            LMConditionConfig(**{"llm": "tiny", "layer": 2, **fields})


def test_a_policy_with_a_trained_top_saves_lora_and_routers_and_reloads_to_the_same_plan(tmp_path):
    from threedmoe_ros.train.pose_dit import main

    inputs = tmp_path / "inputs.pt"
    assert main(["--out", str(tmp_path / "export"), "--synthetic", "24", "--export-inputs", str(inputs),
                 "--align-scenes", "14"]) == 0
    out = tmp_path / "moe"
    assert main(["--out", str(out), "--max-steps", "3", "--data", str(inputs), "--encoder", "lm", "--lm-llm", "tiny",
                 "--lm-layer", "2", "--lm-tune-layers", "1", "--lm-moe", "e2-top2", "--lm-lora", "tiny", *TINY]) == 0
    saved = json.loads((out / "checkpoint" / "config.json").read_text())["encoder_config"]
    assert (saved["tune_layers"], saved["moe"], saved["lora"]) == (1, "e2-top2", "tiny")
    from safetensors import safe_open

    with safe_open(str(out / "checkpoint" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("router" in k for k in keys) and any("experts" in k and "lora_B" in k for k in keys)
    assert not any("base_layer" in k or "embed_tokens" in k for k in keys)
    metrics = (out / "metrics.csv").read_text()
    assert "aux_loss" in metrics.splitlines()[0]
    a, b = Policy.from_pretrained(out / "checkpoint"), Policy.from_pretrained(out / "checkpoint")
    router = next(v for k, v in a.state_dict().items() if "router" in k)
    assert router.abs().sum() > 0
    clouds, texts = scenes(1)
    np.testing.assert_allclose(Planner(a).plan(clouds[0], texts[0], seed=1).poses,
                               Planner(b).plan(clouds[0], texts[0], seed=1).poses, atol=1e-6)
    assert isinstance(Planner(a).answer(clouds[0], "what colour is the block?"), str)


def test_stage2_cli_trains_saves_and_scores(tmp_path):
    """threedmoe-train-stage2 on simulator questions, from an lm policy checkpoint: a checkpoint that reloads
    with the same answers, and EM@1 on held-out questions in eval.json."""
    from threedmoe_ros.data.qa import generate
    from threedmoe_ros.models.lm_condition import LMConditionEncoder
    from threedmoe_ros.train.stage2 import Questions, main as stage2, score

    clouds, _ = scenes(1)
    enc = aligned(tiny_encoder(), clouds)
    policy = Policy(PolicyConfig(encoder="lm", encoder_config={"llm": "tiny", "layer": 2}), encoder=enc)
    policy.save_pretrained(tmp_path / "policy")
    generate(tmp_path / "qa", ["put-block-in-bowl"], [0, 1], progress=False)
    assert stage2(["--out", str(tmp_path / "s2"), "--data", str(tmp_path / "qa"), "--init-from", str(tmp_path / "policy"),
                   "--tune-layers", "1", "--moe", "e2-top2", "--lora", "tiny", "--max-steps", "2", "--batch-size", "4",
                   "--warmup-steps", "0", "--eval-data", str(tmp_path / "qa")]) == 0
    result = json.loads((tmp_path / "s2" / "eval.json").read_text())
    assert result["eval"]["n"] > 0 and set(result["eval"]["per_kind"]) <= {
        "exists", "count", "color", "size", "relation", "on_top", "inside", "position", "refer"}
    encoder = LMConditionEncoder.from_pretrained(tmp_path / "s2" / "checkpoint")
    again = score(encoder, Questions(tmp_path / "qa", encoder.light.config), progress=False)
    assert [p["prediction"] for p in again["predictions"]] == [p["prediction"] for p in result["eval"]["predictions"]]
    # The compact file a GPU host reads: the same questions and objects, no clouds, the same answers.
    assert stage2(["--export-inputs", str(tmp_path / "qa"), str(tmp_path / "qa.pt"),
                   "--init-from", str(tmp_path / "policy")]) == 0
    compact = score(encoder, Questions(tmp_path / "qa.pt", encoder.light.config), progress=False)
    assert compact["predictions"] == again["predictions"]
    (tmp_path / "s2" / "checkpoint" / "encoder.safetensors").write_bytes(b"not a checkpoint")
    assert stage2(["--out", str(tmp_path / "s3"), "--data", str(tmp_path / "qa"), "--init-from", str(tmp_path / "nowhere")]) == 2
    from threedmoe_ros.models.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="encoder.safetensors"):
        LMConditionEncoder.from_pretrained(tmp_path / "s2" / "checkpoint")
