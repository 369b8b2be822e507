"""threedmoe-routing: a 3D-MoE checkpoint and some scenes in, per-layer expert shares and router
entropy out, for all tokens and for the 3D object tokens and text tokens apart (JSON + PNGs)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from threedmoe_ros.data.qa import SceneObject, scene_questions
from threedmoe_ros.eval.routing import main as routing
from threedmoe_ros.models.mm_llm import MMLLMConfig, ThreeDMoELLM

TINY = {"llm": "tiny", "moe": "e4-top2",
        "point_encoder": {"points_per_object": 32, "sa_npoints": [8, 4], "sa_nsample": [4, 4],
                          "sa_widths": [[16], [16], [16]], "hidden_dim": 16, "num_layers": 1, "num_heads": 2}}


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


def test_routing_splits_3d_and_text_tokens(qa_dir, tmp_path):
    checkpoint = ThreeDMoELLM(MMLLMConfig(**TINY)).save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "routing"
    assert routing(["--checkpoint", str(checkpoint), "--data", str(qa_dir), "--items", "2", "--out", str(out)]) == 0
    record = json.loads((out / "routing.json").read_text())
    assert record["items"] == 2
    groups = record["routing"]
    assert set(groups) == {"all", "3d", "text"} and groups["all"], "every MoE layer reports"
    for layer, stats in groups["all"].items():
        assert len(stats["fraction"]) == 4 and sum(stats["fraction"]) == pytest.approx(1.0)
        assert 0.0 <= stats["entropy_relative"] <= 1.0 + 1e-6
        # 3 objects per scene → 3 object tokens per question; the rest of the prompt is text.
        assert groups["3d"][layer]["tokens"] == 2 * 3
        assert groups["3d"][layer]["tokens"] + groups["text"][layer]["tokens"] == stats["tokens"]
    for kind in ("all", "3d", "text"):
        assert (out / f"routing_{kind}.png").stat().st_size > 0


def test_routing_of_a_missing_checkpoint_is_a_message(qa_dir, tmp_path, capsys):
    assert routing(["--checkpoint", str(tmp_path / "nothing"), "--data", str(qa_dir)]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and "Traceback" not in err
