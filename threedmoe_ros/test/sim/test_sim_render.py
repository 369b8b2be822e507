"""The render command: a person gets a PNG of the scene and the plan, or a clear message."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from threedmoe_ros.sim import render


def test_render_writes_a_png_of_scene_and_oracle_plan(tmp_path, capsys):
    out = tmp_path / "zone.png"
    assert render.main(["--task", "put-block-in-zone", "--seed", "1", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "reward 1.00" in capsys.readouterr().out


def test_render_takes_a_plan_file(tmp_path):
    plan = tmp_path / "plan.npy"
    np.save(plan, np.full((1, 2, 7), np.nan))
    out = tmp_path / "bad.png"
    assert render.main(["--task", "stack-blocks", "--out", str(out), "--plan", str(plan)]) == 0
    assert out.is_file()


def test_unknown_task_is_a_message_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "threedmoe_ros.sim.render", "--task", "juggle", "--out",
                             str(tmp_path / "x.png")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "unknown task 'juggle'" in result.stderr and "Traceback" not in result.stderr
