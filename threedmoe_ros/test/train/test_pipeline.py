"""The pipeline command runs the paper's stages end to end, each from the one before, and resumes."""

from __future__ import annotations

import json

import pytest

from threedmoe_ros.checkpoints import LIGHT_POLICY
from threedmoe_ros.train.pipeline import PRESETS, STAGES, commands, run


@pytest.mark.slow
def test_tiny_pipeline_runs_every_stage_then_skips_what_is_done(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(PRESETS["tiny"], out, launcher=[]) == 0
    assert STAGES == ("collect", "qa", "pose_dit", "stage2", "eval")
    for stage in STAGES:
        assert json.loads((out / stage / "done.json").read_text())["seconds"] > 0
    # Pose-DiT trained the lm policy (its alignment fitted, the tiny LM cut at layer 2) from the light policy;
    # Stage II tuned that policy's top on the questions.
    policy = json.loads((out / "pose_dit/checkpoint/config.json").read_text())
    assert policy["encoder"] == "lm" and policy["encoder_config"]["layer"] == 2
    assert policy["head"] == json.loads((LIGHT_POLICY / "config.json").read_text())["head"]
    stage2 = json.loads((out / "stage2/checkpoint/encoder_config.json").read_text())
    assert (stage2["tune_layers"], stage2["moe"], stage2["lora"], stage2["layer"]) == (1, "e2-top2", "tiny", 2)
    assert (out / "stage2/checkpoint/encoder.safetensors").is_file()
    (outcomes_file,) = (out / "eval").glob("steps_*/outcomes.json")
    outcomes = json.loads(outcomes_file.read_text())  # one test episode per colour split
    assert {o["unseen_colors"] for o in outcomes} == {False, True} and all(o["task"] == "put-block-in-zone" for o in outcomes)
    assert set(json.loads((out / "pipeline.json").read_text())["seconds"]) == set(STAGES)
    capsys.readouterr()
    assert run(PRESETS["tiny"], out, launcher=[]) == 0
    assert capsys.readouterr().out.count("skipped") == len(STAGES)


def test_training_stages_resume_and_take_the_launcher(tmp_path, capsys):
    out = tmp_path / "run"
    for stage in ("pose_dit", "stage2"):  # both cut short
        (out / stage / "train_state").mkdir(parents=True)
        (out / stage / "train_state/state.pt").write_bytes(b"")
    for stage in ("collect", "qa"):
        (out / stage).mkdir(parents=True, exist_ok=True)
        (out / stage / "done.json").write_text('{"seconds": 1}')
    launcher = ["accelerate", "launch", "--multi_gpu", "--num_processes", "4"]
    assert run(PRESETS["smollm2-135m"], out, launcher, until="stage2", dry_run=True) == 0
    lines = {line.split(":")[0].removeprefix("[pipeline] "): line for line in capsys.readouterr().out.splitlines()}
    assert lines["pose_dit"].startswith("[pipeline] pose_dit: accelerate launch --multi_gpu --num_processes 4 "
                                        "-m threedmoe_ros.train.pose_dit")
    assert lines["pose_dit"].endswith("--resume") and f"--init-from {LIGHT_POLICY} " in lines["pose_dit"]
    assert "--encoder lm " in lines["pose_dit"]
    # Stage II has no --resume: it starts again (from its cached lower states), under the launcher too.
    assert lines["stage2"].startswith("[pipeline] stage2: accelerate launch --multi_gpu --num_processes 4 "
                                      "-m threedmoe_ros.train.stage2")
    assert "--resume" not in lines["stage2"] and f"--init-from {out / 'pose_dit/checkpoint'} " in lines["stage2"]
    assert "eval" not in lines  # --until stops there
    stage2 = commands(PRESETS["smollm2-135m"], out)["stage2"]
    assert stage2[stage2.index("--tune-layers") + 1] == "4" and stage2[stage2.index("--moe") + 1] == "e4-top2"
