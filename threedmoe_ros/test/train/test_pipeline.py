"""The pipeline command runs the paper's stages end to end, each from the one before, and resumes."""

from __future__ import annotations

import json

import pytest

from threedmoe_ros.train.pipeline import PRESETS, STAGES, commands, run


@pytest.mark.slow
def test_tiny_pipeline_runs_every_stage_then_skips_what_is_done(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(PRESETS["tiny"], out, launcher=[]) == 0
    for stage in STAGES:
        assert json.loads((out / stage / "done.json").read_text())["seconds"] > 0
    # Pose-DiT trained on the Stage II model: its checkpoint holds that encoder's own checkpoint.
    assert (out / "pose_dit/checkpoint/encoder/adapter/adapter_model.safetensors").is_file()
    assert json.loads((out / "pose_dit/checkpoint/config.json").read_text())["encoder"] == "3dmoe"
    outcomes = json.loads((out / "eval/steps_4/outcomes.json").read_text())  # one test episode per colour split
    assert {o["unseen_colors"] for o in outcomes} == {False, True} and all(o["task"] == "put-block-in-zone" for o in outcomes)
    assert set(json.loads((out / "pipeline.json").read_text())["seconds"]) == set(STAGES)
    capsys.readouterr()
    assert run(PRESETS["tiny"], out, launcher=[]) == 0
    assert capsys.readouterr().out.count("skipped") == len(STAGES)


def test_training_stages_resume_and_take_the_launcher(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "stage2/train_state").mkdir(parents=True)
    (out / "stage2/train_state/state.pt").write_bytes(b"")
    for stage in ("collect", "qa", "stage1"):
        (out / stage).mkdir(parents=True, exist_ok=True)
        (out / stage / "done.json").write_text('{"seconds": 1}')
    launcher = ["accelerate", "launch", "--multi_gpu", "--num_processes", "4"]
    assert run(PRESETS["smollm2-135m"], out, launcher, until="stage2", dry_run=True) == 0
    printed = capsys.readouterr().out
    assert "stage2: accelerate launch --multi_gpu --num_processes 4 -m threedmoe_ros.train.stage2" in printed
    assert "--resume" in printed and "--init " + str(out / "stage1/checkpoint") in printed
    assert "pose_dit" not in printed  # --until stops there
    assert commands(PRESETS["smollm2-135m"], out)["pose_dit"].count("--encoder-checkpoint") == 1
