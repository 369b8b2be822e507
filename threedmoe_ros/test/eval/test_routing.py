"""threedmoe-routing: a 3D-MoE with a trained top (a Stage II checkpoint, or a policy's) and some questions in,
per-layer expert shares and router entropy out, for all tokens and for the 3D object tokens and text tokens
apart (JSON + PNGs); a model without experts, or no checkpoint, is a message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from threedmoe_ros.data.qa import SceneObject, scene_questions
from threedmoe_ros.eval.routing import main as routing
from threedmoe_ros.models.lm_condition import LMConditionConfig, LMConditionEncoder
from threedmoe_ros.policy import Policy, PolicyConfig

TOP = {"llm": "tiny", "layer": 2, "tune_layers": 1, "moe": "e2-top2", "lora": "tiny"}


def encoder(**fields) -> LMConditionEncoder:
    torch.manual_seed(0)
    enc = LMConditionEncoder(LMConditionConfig(**{**TOP, **fields}))
    enc.align.normal_(0, 1.0)  # distinct object tokens, as a fitted alignment gives
    return enc.eval()


@pytest.fixture
def qa_dir(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "scenes").mkdir()
    objects = [SceneObject(i + 1, "block", c, "medium", np.array([0.4 + 0.1 * i, 0.1 * i, 0.02]), 0.04)
               for i, c in enumerate(["red", "blue", "green"])]
    xyz = np.concatenate([o.position + rng.uniform(-0.02, 0.02, (60, 3)) for o in objects]).astype(np.float32)
    np.savez(tmp_path / "scenes/0.npz", xyz=xyz, rgb=rng.integers(0, 255, (len(xyz), 3), dtype=np.uint8),
             label=np.repeat([o.label for o in objects], 60).astype(np.int32))
    lines = [{"scene": "scenes/0.npz", "question": q.question, "answer": q.answer, "kind": q.kind}
             for q in scene_questions(objects, rng, 3)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return tmp_path


def test_routing_of_a_stage2_checkpoint_splits_3d_and_text_tokens(qa_dir, tmp_path):
    checkpoint = encoder().save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "routing"
    assert routing(["--checkpoint", str(checkpoint), "--data", str(qa_dir), "--items", "2", "--batch-size", "1",
                    "--out", str(out)]) == 0
    record = json.loads((out / "routing.json").read_text())
    assert record["items"] == 2 and record["top_layers"] == [1]
    groups = record["routing"]
    assert set(groups) == {"all", "3d", "text"} and set(groups["all"]) == {"1"}, "the top's one layer, by its LM index"
    for layer, stats in groups["all"].items():
        assert len(stats["fraction"]) == 2 and sum(stats["fraction"]) == pytest.approx(1.0)
        assert 0.0 <= stats["entropy_relative"] <= 1.0 + 1e-6
        # 3 objects per scene → 3 object tokens per question; the rest (prompt and answer) is text.
        assert groups["3d"][layer]["tokens"] == 2 * 3
        assert groups["3d"][layer]["tokens"] + groups["text"][layer]["tokens"] == stats["tokens"]
    for kind in ("all", "3d", "text"):
        assert (out / f"routing_{kind}.png").stat().st_size > 0
    # Batched, the padding stays out: the same counts as one question at a time.
    again = tmp_path / "batched"
    assert routing(["--checkpoint", str(checkpoint), "--data", str(qa_dir), "--items", "2", "--out", str(again)]) == 0
    batched = json.loads((again / "routing.json").read_text())["routing"]
    assert {k: v["1"]["tokens"] for k, v in batched.items()} == {k: v["1"]["tokens"] for k, v in groups.items()}
    np.testing.assert_allclose(batched["all"]["1"]["mean_prob"], groups["all"]["1"]["mean_prob"], atol=1e-5)


def test_a_policy_with_a_trained_top_routes_as_its_encoder_does(qa_dir, tmp_path):
    enc = encoder()
    enc.save_pretrained(tmp_path / "ckpt")
    Policy(PolicyConfig(encoder="lm", encoder_config=TOP), encoder=enc).save_pretrained(tmp_path / "policy")
    for name in ("ckpt", "policy"):
        assert routing(["--checkpoint", str(tmp_path / name), "--data", str(qa_dir), "--items", "3",
                        "--out", str(tmp_path / f"out_{name}")]) == 0
    a, b = (json.loads((tmp_path / f"out_{name}/routing.json").read_text())["routing"] for name in ("ckpt", "policy"))
    for kind in ("all", "3d", "text"):
        assert a[kind]["1"]["tokens"] == b[kind]["1"]["tokens"]
        np.testing.assert_allclose(a[kind]["1"]["mean_prob"], b[kind]["1"]["mean_prob"], atol=1e-6)


def test_a_model_without_experts_or_a_missing_checkpoint_is_a_message(qa_dir, tmp_path, capsys):
    encoder(moe=None).save_pretrained(tmp_path / "dense")
    frozen = {"llm": "tiny", "layer": 2}
    Policy(PolicyConfig(encoder="lm", encoder_config=frozen),
           encoder=LMConditionEncoder(LMConditionConfig(**frozen))).save_pretrained(tmp_path / "frozen")
    for name, words in [("dense", "dense top"), ("frozen", "frozen LM"), ("nothing", "not a directory")]:
        assert routing(["--checkpoint", str(tmp_path / name), "--data", str(qa_dir)]) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / name) in err and words in err and "Traceback" not in err
