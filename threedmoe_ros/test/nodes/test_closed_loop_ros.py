"""The closed loop over ROS: sim bridge, policy node and evaluator as separate processes (started by
threedmoe-bringup, as the main command does) complete episodes and report a success table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros


def test_bringup_sim_eval_completes_episodes_and_reports(ros_env, tmp_path):
    from threedmoe_ros.checkpoints import DEFAULT_POLICY

    out = tmp_path / "eval"
    tasks = ["put-block-in-zone", "put-block-in-bowl", "stack-blocks"]
    cmd = [str(Path(sys.executable).parent / "threedmoe-bringup"), "sim_eval",
           "--domain-id", ros_env["ROS_DOMAIN_ID"], "--timeout", "540",
           "-p", f"policy.checkpoint={DEFAULT_POLICY}", "-p", "policy.seed=0",
           "-p", f"sim_bridge.tasks=[{','.join(tasks)}]", "-p", "sim_bridge.episodes=1",
           "-p", "sim_bridge.appearance=shifted", "-p", "sim_bridge.phrasing=heldout",
           "-p", "evaluator.expected_episodes=3", "-p", f"evaluator.output_dir={out}"]
    run = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    for node in ("[sim_bridge]", "[policy]", "[evaluator]"):
        assert node in log, f"no output forwarded from {node}"

    record = json.loads((out / "success.json").read_text())
    episodes = record["episodes"]
    assert sorted(e["task"] for e in episodes) == sorted(tasks)
    assert all(e["seed"] >= 2_000_000 for e in episodes)  # held-out (test-split) seeds
    from threedmoe_ros.sim.phrasing import HELDOUT_WORDS  # the bridge ran the shifted + held-out split

    assert all(set(re.findall(r"[a-z]+", e["instruction"].lower())) & HELDOUT_WORDS for e in episodes), episodes
    assert all(e["reason"] in {"success", "step_limit", "primitive_failed", "invalid_plan", "timeout", "aborted"}
               for e in episodes)
    # Plans crossed DDS and were executed in the simulator.
    assert sum(e["steps_taken"] for e in episodes) > 0, log[-4000:]
    assert set(record["table"]) == set(tasks)
    table = (out / "success.md").read_text()
    assert all(table.count(f"| {task} | seen |") == 1 for task in tasks), table
    assert (out / "success.png").stat().st_size > 0
    assert "Closed-loop success" in run.stdout  # the table is printed at the end
