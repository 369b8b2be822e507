"""Shared fixtures. Every test process is confined to loopback DDS before anything imports rclpy."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

# One torch thread in this process and in every node it starts: the models under test are small,
# and on a 2-core machine OpenMP threads spin against each other and against the DDS nodes.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from threedmoe_ros.rosenv import MAX_DOMAIN_ID, localhost_env  # noqa: E402

# Module level, so even a test that forgets the fixture cannot multicast on a real interface.
os.environ.update(localhost_env(1 + os.getpid() % MAX_DOMAIN_ID))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[2]
_domains = itertools.count(os.getpid())


@pytest.fixture
def ros_env(monkeypatch) -> dict[str, str]:
    """Loopback-only ROS 2 in a domain of this test's own; returns the env for subprocesses too."""
    env = localhost_env(1 + next(_domains) % MAX_DOMAIN_ID)
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "AMENT_PREFIX_PATH", "RMW_IMPLEMENTATION"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)
    return env


@pytest.fixture
def rclpy_context(ros_env):
    """An initialised rclpy context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


@pytest.fixture
def python() -> str:
    return sys.executable


class NodeProcess:
    """A node started as its own process (as launch would), with its output kept for assertions."""

    def __init__(self, executable: str, params: dict, env: dict, log_path: Path, name: str | None = None,
                 remaps: dict | None = None):
        import subprocess

        cmd = [str(Path(sys.executable).parent / executable), "--ros-args"]
        if name:
            cmd += ["-r", f"__node:={name}"]
        for source, target in (remaps or {}).items():  # for every node of the process, as launch remappings are
            cmd += ["-r", f"{source}:={target}"]
        for key, value in params.items():
            cmd += ["-p", f"{key}:={_ros_param(value)}"]
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def _ros_param(value) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


@pytest.fixture
def start_node(ros_env, tmp_path):
    """start_node(executable, params, name=None, remaps=None) → NodeProcess; every node is stopped after the test."""
    started: list[NodeProcess] = []

    def start(executable: str, params: dict | None = None, name: str | None = None,
              remaps: dict | None = None) -> NodeProcess:
        node = NodeProcess(executable, params or {}, ros_env, tmp_path / f"{name or executable}_{len(started)}.log", name,
                           remaps)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """A small, untrained policy checkpoint: enough for plumbing tests (plans are not meant to succeed)."""
    from threedmoe_ros.policy import Policy

    return Policy().save_pretrained(tmp_path_factory.mktemp("ckpt") / "untrained")
