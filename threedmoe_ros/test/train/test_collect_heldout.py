"""Collection never draws a task held out from training, whatever names its --tasks are given."""

from __future__ import annotations

import pytest

from threedmoe_ros.sim.tasks import FAMILIES, HELDOUT_TASKS, TRAINING_TASKS
from threedmoe_ros.train import collect


@pytest.mark.parametrize("names", [["all"], ["training-tasks"], list(FAMILIES), ["long-horizon", "all"]])
def test_collection_draws_only_training_tasks(names, tmp_path):
    args = collect.parse_args(["--tasks", *names, "--episodes", "1", "--out", str(tmp_path)])
    assert args.tasks and not set(args.tasks) & set(HELDOUT_TASKS)
    assert set(args.tasks) <= set(TRAINING_TASKS)
    if "all" in names:
        assert set(args.tasks) == set(TRAINING_TASKS)


def test_default_collection_is_every_training_task(tmp_path):
    assert collect.parse_args(["--episodes", "1", "--out", str(tmp_path)]).tasks == list(TRAINING_TASKS)


@pytest.mark.parametrize("name", ["heldout-tasks", HELDOUT_TASKS[0], HELDOUT_TASKS[-1]])
def test_naming_a_heldout_task_is_refused(name, tmp_path, capsys):
    with pytest.raises(SystemExit):
        collect.parse_args(["--tasks", "stack-blocks", name, "--episodes", "1", "--out", str(tmp_path)])
    assert "held out from training" in capsys.readouterr().err
