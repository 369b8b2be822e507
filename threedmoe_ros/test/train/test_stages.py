"""Stage I then Stage II on a tiny model: each stage trains what the paper trains and leaves a checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from threedmoe_ros.models.mm_llm import MMLLMConfig, ThreeDMoELLM
from threedmoe_ros.train.stage1 import StageConfig, train

from qa_scenes import TINY, write_qa_scenes


@pytest.fixture
def qa_dir(tmp_path):
    """Two synthetic scenes (a box of points per object) with captions and questions."""
    return write_qa_scenes(tmp_path)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_stage1_then_stage2(qa_dir, tmp_path):
    s1 = StageConfig(out=str(tmp_path / "s1"), data=str(qa_dir), stage=1, model=TINY, max_steps=2, batch_size=2,
                     lr=1e-3, warmup_steps=1, eval_data=str(qa_dir), eval_items=2)
    fresh = ThreeDMoELLM(MMLLMConfig(**TINY))  # the same config builds the same initial weights
    before = _snapshot(fresh)
    m1 = train(s1, progress=False)
    changed = {n.split(".")[1] for n, p in m1.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"spatial", "proj"}  # Stage I: only the alignment layers move
    assert (tmp_path / "s1/checkpoint/mm_llm_config.json").is_file()
    assert set(json.loads((tmp_path / "s1/eval.json").read_text())) >= {"EM@1", "CIDEr"}
    rows = (tmp_path / "s1/metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and np.isfinite(float(rows[1].split(",")[1]))

    s2 = StageConfig(out=str(tmp_path / "s2"), data=str(qa_dir), stage=2, init=str(tmp_path / "s1/checkpoint"),
                     max_steps=2, batch_size=2, lr=1e-3, warmup_steps=1)
    start = _snapshot(ThreeDMoELLM.from_pretrained(tmp_path / "s1/checkpoint"))
    m2 = train(s2, progress=False)
    moved = [n for n, p in m2.named_parameters() if not torch.equal(p, start[n])]
    assert any("lora_B" in n for n in moved) and any("router" in n for n in moved)
    assert not any("pointnet" in n or ("base_layer" in n and "lora" not in n) for n in moved)


def test_stage2_of_another_moe_preset_starts_from_stage1_encoder(qa_dir, tmp_path):
    """One Stage I run starts Stage II for dense and MoE alike (bench/bench_table1.py relies on it)."""
    s1 = StageConfig(out=str(tmp_path / "s1"), data=str(qa_dir), stage=1, model={**TINY, "moe": None}, max_steps=1,
                     batch_size=2, lr=1e-3, warmup_steps=1)
    encoder = {k: v.clone() for k, v in train(s1, progress=False).encoder.state_dict().items()}
    s2 = StageConfig(out=str(tmp_path / "s2"), data=str(qa_dir), stage=2, model={**TINY, "moe": "e2-top2"},
                     init_encoder=str(tmp_path / "s1/checkpoint"), max_steps=1, batch_size=2, lr=1e-3, warmup_steps=1)
    from threedmoe_ros.train.stage1 import build_model

    model = build_model(s2)
    assert all(torch.equal(v, encoder[k]) for k, v in model.encoder.state_dict().items())
    assert any("router" in n for n, _ in model.named_parameters())
    with pytest.raises(ValueError, match="init_encoder"):
        StageConfig(out="x", data="y", init="a", init_encoder="b")


def test_stage_cli_names_a_bad_data_directory(tmp_path, capsys):
    from threedmoe_ros.train.stage2 import main

    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "missing has no qa.jsonl" in err and "threedmoe-qa-data" in err
    assert "Traceback" not in err


def test_no_3d_ablation_answers_without_the_scene(qa_dir, tmp_path):
    """--no-3d: the LLM never sees 3D tokens, so the 3D encoder learns nothing and an answer cannot
    depend on the scene; the LoRA still trains."""
    s2 = StageConfig(out=str(tmp_path / "s2"), data=str(qa_dir), stage=2, model={**TINY, "moe": "e2-top2"},
                     max_steps=2, batch_size=2, lr=1e-2, warmup_steps=1, scene_input="none")
    start = _snapshot(ThreeDMoELLM(MMLLMConfig(**{**TINY, "moe": "e2-top2"})))
    model = train(s2, progress=False)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
    assert any("lora_B" in n for n in moved) and not any(n.startswith("encoder.") for n in moved)
    assert json.loads((tmp_path / "s2/train.json").read_text())["scene_input"] == "none"

    from threedmoe_ros.data.qa import QADataset
    from threedmoe_ros.train.stage1 import BatchBuilder, evaluate, scene_tokens

    ds = QADataset(qa_dir)
    first = ds.items[0]["scene"]
    clouds = [ds.cloud(first), ds.cloud(next(it["scene"] for it in ds.items if it["scene"] != first))]

    def loss_on(cloud, scene_input):
        with torch.no_grad(), scene_tokens(model, BatchBuilder(scene_input).clouds([cloud]), 1) as scene:
            return model.loss(scene, ["What is on the table?"], ["three blocks"])[1]["lm_loss"]

    # Two different scenes: the same loss without 3D tokens, different ones with them.
    assert loss_on(clouds[0], "none") == loss_on(clouds[1], "none")
    assert loss_on(clouds[0], "scene") != loss_on(clouds[1], "scene")
    assert model.encoder.__class__.__name__ == "ObjectEncoder"  # the ablation leaves the model whole
    metrics = evaluate(model, ds, 2, max_new_tokens=4, progress=False, scene_input="none")
    assert metrics["count"] == 2


def test_shuffle_3d_gives_every_question_another_scenes_cloud():
    from threedmoe_ros.train.stage1 import BatchBuilder

    a, b, c = object(), object(), object()
    builder = BatchBuilder("shuffled", seed=0)
    for _ in range(20):
        clouds, questions, answers = builder([(a, "q1", "x"), (a, "q2", "y"), (b, "q3", "z"), (c, "q4", "w")])
        assert questions == ["q1", "q2", "q3", "q4"] and answers == ["x", "y", "z", "w"]
        assert clouds[0] is clouds[1]  # a scene's questions move together
        assert all(new is not old for new, old in zip(clouds, (a, a, b, c)))
    # A batch of one scene borrows a scene of the batch before.
    clouds, _, _ = builder([(a, "q", "x"), (a, "q", "x")])
    assert clouds[0] in (b, c) and clouds[1] is clouds[0]
    assert BatchBuilder("none")([(a, "q", "x")])[0] is None
    assert BatchBuilder("scene")([(a, "q", "x")])[0] == [a]


def test_stage2_cli_ablation_flags(qa_dir, tmp_path, capsys):
    from threedmoe_ros.train.stage1 import parse_args as parse
    from threedmoe_ros.train.stage2 import main

    common = ["--data", str(qa_dir), "--out", str(tmp_path / "o")]
    assert parse(2, common + ["--no-3d"])[0].scene_input == "none"
    assert parse(2, common + ["--shuffle-3d"])[0].scene_input == "shuffled"
    assert parse(2, common)[0].scene_input == "scene"
    with pytest.raises(SystemExit) as exit_:
        main(common + ["--no-3d", "--shuffle-3d"])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # Stage I aligns the encoder: there is nothing to ablate
        parse(1, common + ["--no-3d"])
