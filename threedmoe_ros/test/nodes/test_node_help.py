"""Every node executable answers --help with its parameters and defaults, exits 0, and starts nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("node, parameter", [("policy_node", "checkpoint ('')"), ("sim_bridge_node", "mode ('policy')"),
                                             ("recorder_node", "output_dir ('runs/episodes')"),
                                             ("evaluator_node", "expected_episodes (0)")])
def test_help_prints_parameters_and_exits_0(node, parameter):
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": "97"}
    done = subprocess.run([str(BIN / node), "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: {node}") and parameter in done.stdout
    assert "use_sim_time" not in done.stdout and "Traceback" not in done.stderr
