"""Ctrl-C of a running closed-loop bringup ends every node without an error in their logs."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros


def test_ctrl_c_mid_episode_ends_every_node_without_errors(ros_env, tmp_path):
    bringup = Path(sys.executable).parent / "threedmoe-bringup"
    proc = subprocess.Popen(
        # Episodes enough for minutes: the run must still be going when Ctrl-C comes, however fast
        # the policy plans and however late the children's lines reach this process.
        [str(bringup), "sim_eval", "--domain-id", ros_env["ROS_DOMAIN_ID"], "-p", "sim_bridge.episodes=60",
         "-p", f"evaluator.output_dir={tmp_path / 'eval'}"],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # A test run started in the background (nohup … &) inherits SIGINT ignored, and Python then
        # never turns Ctrl-C into KeyboardInterrupt: give bringup the disposition a terminal gives it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        # Mid-episode: the policy has its instruction and the bridge has executed a plan or is waiting for one.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any("[policy]" in line and "instruction:" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        assert any("instruction:" in line for line in lines), "".join(lines)
        time.sleep(3.0)
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    output = "".join(lines)
    bad = ("[ERROR]", "Traceback", "RCLError", "did not stop", "never retrieved", "Failed to publish")
    errors = [line for line in lines if any(word in line for word in bad)]
    assert not errors, output
    assert "interrupted" in output, output
