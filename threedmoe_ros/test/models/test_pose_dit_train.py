"""Training entry point: padding, a short run that logs and checkpoints, resuming, and clean errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from threedmoe_ros.planner import Planner
from threedmoe_ros.policy import Policy
from threedmoe_ros.data.synthetic import SyntheticPickPlace
from threedmoe_ros.train.pose_dit import collate_plans, main

TINY = ["--hidden-size", "32", "--depth", "1", "--horizon", "4", "--batch-size", "8", "--warmup-steps", "2",
        "--log-every", "2", "--save-every", "3", "--synthetic", "32"]


def test_collate_pads_plans_and_marks_valid_steps():
    data = SyntheticPickPlace(6, seed=1)
    batch = collate_plans([data[i] for i in range(6)], horizon=4)
    assert batch["plan"].shape == (6, 4, 2, 7) and batch["valid"].shape == (6, 4)
    lengths = [len(data[i][2]) for i in range(6)]
    assert batch["valid"].sum(1).tolist() == lengths
    assert torch.equal(batch["valid"], torch.arange(4) < torch.tensor(lengths)[:, None])  # a prefix
    with pytest.raises(ValueError, match="horizon"):
        collate_plans([data[0]], horizon=0)


def test_collate_takes_episode_samples_and_finished_episodes():
    """data.dataset.Sample objects work, and a plan of 0 steps (episode done) is all padding."""
    from types import SimpleNamespace

    cloud, instruction, plan = SyntheticPickPlace(1)[0]
    done = SimpleNamespace(cloud=cloud, instruction=instruction, plan=np.zeros((0, 2, 7)))
    going = SimpleNamespace(cloud=cloud, instruction=instruction, plan=plan)
    batch = collate_plans([done, going], horizon=4)
    assert batch["valid"].sum(1).tolist() == [0, len(plan)]
    assert batch["clouds"][0] is cloud and batch["instructions"] == [instruction] * 2


def test_synthetic_plans_are_inside_the_workspace():
    for cloud, instruction, plan in SyntheticPickPlace(20, seed=2):
        assert plan.ndim == 3 and plan.shape[1:] == (2, 7) and 1 <= len(plan) <= 3
        assert ((plan[..., :3] >= [0.25, -0.5, 0.0]) & (plan[..., :3] <= [0.75, 0.5, 0.3])).all()
        assert np.allclose(np.linalg.norm(plan[..., 3:], axis=-1), 1)
        assert "zone" in instruction and (cloud.label == 0).any()


def test_short_run_logs_checkpoints_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--out", str(out), "--max-steps", "6", *TINY]) == 0
    policy = Policy.from_pretrained(out / "checkpoint")
    assert policy.config.head.hidden_size == 32
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 4, 6] and all(np.isfinite(float(r["loss"])) for r in rows)
    assert any((out / "tb").iterdir()) and (out / "curves.png").stat().st_size > 0
    assert torch.load(out / "train_state" / "state.pt", weights_only=False)["step"] == 6

    assert main(["--out", str(out), "--max-steps", "8", "--resume", *TINY]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert torch.load(out / "train_state" / "state.pt", weights_only=False)["step"] == 8
    plan = Planner.from_pretrained(out / "checkpoint").plan(*SyntheticPickPlace(1)[0][:2], seed=0)
    assert plan.poses.shape[1:] == (2, 7)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--out", "{tmp}"], "give --data"),
        (["--out", "{tmp}", "--data", "{tmp}/missing"], "not a directory"),
        (["--out", "{tmp}", "--synthetic", "4", "--resume"], "does not exist"),
        (["--out", "{tmp}", "--synthetic", "4", "--batch-size", "0"], "batch-size"),
        (["--out", "{tmp}", "--synthetic", "4", "--hidden-size", "30"], "divisible"),
        (["--out", "{tmp}", "--data", "{tmp}", "--dataset-factory", "nowhere.mod:Data"], "dataset factory"),
    ],
)
def test_bad_arguments_exit_with_a_message_not_a_traceback(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) as exc:
        main([a.format(tmp=tmp_path) for a in argv])
    assert exc.value.code != 0
    message = capsys.readouterr().err + str(exc.value.code)
    assert words in message and "Traceback" not in message


def test_init_from_a_checkpoint_widened_by_top_color_plans_as_the_source_did(tmp_path):
    """Fine-tuning starts where the source policy is: with --top-color the encoder gains three input
    features whose weights start at zero, so before any step the widened policy plans the same poses."""
    from threedmoe_ros.train.pose_dit import TrainConfig, build_policy, load_widened

    source_dir = tmp_path / "source"
    assert main(["--out", str(source_dir), "--max-steps", "3", *TINY]) == 0
    source = Policy.from_pretrained(source_dir / "checkpoint")
    cfg = TrainConfig(out=str(tmp_path / "ft"), synthetic=8, init_from=str(source_dir / "checkpoint"), top_color=True)
    widened = build_policy(cfg, source.config)
    assert widened.encoder.config.top_color and widened.encoder.config.n_object_features == 15
    load_widened(widened, source.state_dict())
    cloud, instruction, _ = SyntheticPickPlace(1, seed=4)[0]
    a = Planner(source).plan(cloud, instruction, seed=0).poses
    b = Planner(widened).plan(cloud, instruction, seed=0).poses
    np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        load_widened(source, widened.state_dict())  # narrowing would drop what was learned: refused

    out = tmp_path / "ft_run"
    assert main(["--out", str(out), "--max-steps", "2", "--init-from", str(source_dir / "checkpoint"), "--top-color",
                 *TINY]) == 0
    tuned = Policy.from_pretrained(out / "checkpoint")
    assert tuned.config.encoder_config["top_color"] and tuned.config.head.hidden_size == 32
