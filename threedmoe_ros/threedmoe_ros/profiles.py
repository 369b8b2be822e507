"""Which nodes a profile starts, shared by launch/*.launch.py and the bringup command.

A profile is config/<profile>.yaml: a ROS 2 parameter file whose top-level keys are node names.
Each node name maps to the console_script that runs it, so `ros2 launch threedmoe_ros sim_eval.launch.py`
and `threedmoe-bringup sim_eval` start the same processes with the same parameters. ROS-free.
"""

from __future__ import annotations

from pathlib import Path

import yaml

# node name (YAML key) → executable (console_script of setup.py)
EXECUTABLES = {
    "sim_bridge": "sim_bridge_node",
    "policy": "policy_node",
    "recorder": "recorder_node",
    "evaluator": "evaluator_node",
}
# The process whose exit ends a profile run: the others are then stopped.
MAIN_NODE = {"sim_eval": "evaluator", "collect": "recorder", "policy": None}


def config_dir() -> Path:
    """config/ of the package: the installed share/ directory, else the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("threedmoe_ros")) / "config"
        if share.is_dir():
            return share
    except Exception:  # noqa: BLE001 - not installed with colcon: use the source tree
        pass
    return Path(__file__).resolve().parents[1] / "config"


def profile_path(profile: str) -> Path:
    path = Path(profile)
    if path.suffix in (".yaml", ".yml"):
        return path
    path = config_dir() / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in config_dir().glob("*.yaml"))
        raise FileNotFoundError(f"no profile '{profile}' (looked for {path}); known profiles: {known}")
    return path


def load_profile(profile: str) -> dict[str, dict]:
    """{node name: parameters} of a profile, checked against EXECUTABLES."""
    path = profile_path(profile)
    data = yaml.safe_load(path.read_text()) or {}
    nodes = {}
    for name, body in data.items():
        if name not in EXECUTABLES:
            raise ValueError(f"{path}: unknown node '{name}'; known nodes: {sorted(EXECUTABLES)}")
        params = (body or {}).get("ros__parameters")
        if not isinstance(params, dict):
            raise ValueError(f"{path}: node '{name}' needs a 'ros__parameters' mapping")
        nodes[name] = params
    return nodes
