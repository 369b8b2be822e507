"""Shared fixtures. Every test process is confined to loopback DDS before anything imports rclpy."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

from threedmoe_ros.rosenv import MAX_DOMAIN_ID, localhost_env

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
