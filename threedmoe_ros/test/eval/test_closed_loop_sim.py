"""The closed-loop evaluation command and the report it writes."""

import json

import numpy as np

from threedmoe_ros.data.dataset import thin_cloud
from threedmoe_ros.eval.closed_loop import main as closed_loop
from threedmoe_ros.eval.report import markdown, success_table, wilson_interval
from threedmoe_ros.types import Cloud, EpisodeOutcome


def outcome(task, seed, unseen, success, reason="success"):
    return EpisodeOutcome(task, seed, "x", unseen, 2, 1.0 if success else 0.0, success, reason)


def test_success_table_splits_tasks_and_colours():
    outcomes = [outcome("zone", 0, False, True), outcome("zone", 1, False, False, "step_limit"),
                outcome("zone", 0, True, True), outcome("bowl", 0, False, True)]
    table = success_table(outcomes)
    assert table["zone"]["seen"]["success_rate"] == 0.5 and table["zone"]["unseen"]["success_rate"] == 1.0
    assert table["zone"]["seen"]["reasons"] == {"step_limit": 1, "success": 1}
    lo, hi = table["zone"]["seen"]["ci95"]
    assert lo < 0.5 < hi
    assert "| **all** | | 4 | 0.75 |" in markdown(table)


def test_wilson_interval_matches_a_published_value():
    # 8 of 10: Wilson 95% interval (0.4902, 0.9433) (Newcombe 1998, Table I style check)
    lo, hi = wilson_interval(8, 10)
    assert abs(lo - 0.4902) < 1e-3 and abs(hi - 0.9433) < 1e-3


def test_thin_cloud_keeps_every_object_point():
    rng = np.random.default_rng(0)
    label = np.r_[np.zeros(5000, int), np.ones(300, int), np.full(200, 2)]
    cloud = Cloud(rng.uniform(0, 1, (len(label), 3)), label=label)
    thin = thin_cloud(cloud, 1000, rng)
    assert len(thin) == 1000 and (thin.label > 0).sum() == 500


def test_closed_loop_command_writes_tables(tmp_path, untrained_checkpoint):
    out = tmp_path / "eval"
    assert closed_loop(["--checkpoint", str(untrained_checkpoint), "--tasks", "put-block-in-zone", "--episodes", "1",
                        "--colors", "seen", "--sampling-steps", "1", "4", "--resolution", "96x72",
                        "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["runs"]) == {"1", "4"}
    record = json.loads((out / "steps_4" / "success.json").read_text())
    assert record["episodes"][0]["seed"] == 2_000_000  # the test split
    assert (out / "steps_1" / "success.png").is_file()


def test_closed_loop_command_names_a_bad_checkpoint(tmp_path, capsys):
    assert closed_loop(["--checkpoint", str(tmp_path / "missing"), "--episodes", "1"]) == 1
    assert "missing" in capsys.readouterr().err
