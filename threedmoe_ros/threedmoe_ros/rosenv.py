"""Environment for anything that starts ROS 2: loopback-only discovery and a domain of its own,
unless the user chose otherwise.

Fast DDS multicasts discovery on every interface by default; our tests, demos and scripts keep all
traffic on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; ROS_LOCALHOST_ONLY is ignored on
Kilted) and do not cross each other (a ROS_DOMAIN_ID each). A ROS_DOMAIN_ID or
ROS_AUTOMATIC_DISCOVERY_RANGE the user exported wins: that is how a ROS 2 user puts nodes in one
domain or on the network. ROS-free: safe to import anywhere.
"""

from __future__ import annotations

import os
import sys
import tempfile

# Domain ids 0..101 are safe on Linux (higher ids collide with the ephemeral port range).
MAX_DOMAIN_ID = 101

# What the user exported, read once at import: later this process (a test session, bringup) sets
# its own values in os.environ and must still tell the user's choice from its own.
USER_DOMAIN_ID = os.environ.get("ROS_DOMAIN_ID") or None
USER_DISCOVERY_RANGE = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") or None


def pick_domain_id(seed: int | None = None) -> int:
    """A domain id in 1..101 derived from `seed` (default: this process id)."""
    return 1 + (os.getpid() if seed is None else seed) % MAX_DOMAIN_ID


def localhost_env(domain_id: int | None = None, base: dict | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) set up for ROS 2: the user's ROS_DOMAIN_ID and discovery
    range when they exported them, else `domain_id` (default: derived from the pid) on loopback only.

    Also fills what the PyPI ROS wheels leave unset: AMENT_PREFIX_PATH (the venv prefix, where
    threedmoe_msgs is installed) and a writable ROS_LOG_DIR when HOME is missing.
    """
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = USER_DISCOVERY_RANGE or "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated on Jazzy, and when set it overrides the range
    if USER_DOMAIN_ID is not None:
        env["ROS_DOMAIN_ID"] = USER_DOMAIN_ID
    else:
        env["ROS_DOMAIN_ID"] = str(pick_domain_id() if domain_id is None else domain_id)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    prefixes = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes:
        env["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *prefixes])
    if "HOME" not in env and "ROS_LOG_DIR" not in env:
        env["ROS_LOG_DIR"] = os.path.join(tempfile.gettempdir(), "threedmoe_ros_logs")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def fill_ament_env() -> None:
    """What a node needs on a Python-only machine (the PyPI wheels set none of it); changes no
    networking, so nodes on a workstation keep the user's discovery settings."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes and os.path.isdir(os.path.join(sys.prefix, "share", "threedmoe_msgs")):
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([*prefixes, sys.prefix])
    if "HOME" not in os.environ and "ROS_LOG_DIR" not in os.environ:
        os.environ["ROS_LOG_DIR"] = os.path.join(tempfile.gettempdir(), "threedmoe_ros_logs")


def apply_localhost_env(domain_id: int | None = None) -> None:
    """Set up this process (before rclpy.init) as localhost_env says."""
    os.environ.update(localhost_env(domain_id))
