"""Which nodes a profile starts and with which parameters, shared by launch/*.launch.py and the
bringup command.

A profile is config/<profile>.yaml: a ROS 2 parameter file whose top-level keys are node names.
Each node name maps to the console_script that runs it, so `ros2 launch threedmoe_ros sim_eval.launch.py`
and `threedmoe-bringup sim_eval` start the same processes with the same parameters. ROS-free.

Parameters are checked before anything starts: a YAML key or a `-p` override that the node never
declares is an error naming the parameters it does declare (ROS itself would ignore it silently).
What one node's parameters imply for another is derived here (`resolve`): the episodes the recorder
or evaluator waits for are the episodes the sim bridge will run.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from functools import lru_cache
from pathlib import Path

import yaml

# node name (YAML key) → executable (console_script of setup.py). Each executable is the `main` of
# the module threedmoe_ros.nodes.<executable>, which is where its parameters are declared.
EXECUTABLES = {
    "sim_bridge": "sim_bridge_node",
    "policy": "policy_node",
    "recorder": "recorder_node",
    "evaluator": "evaluator_node",
}
# The process whose exit ends a profile run: the others are then stopped.
MAIN_NODE = {"sim_eval": "evaluator", "collect": "recorder", "policy": None}
# Declared by rclpy itself on every node.
BUILTIN_PARAMETERS = {"use_sim_time": False, "start_type_description_service": True}
# Nodes that wait for a number of episodes, and the parameter that says how many.
EPISODE_COUNTERS = {"recorder": "expected_episodes", "evaluator": "expected_episodes"}


class ProfileError(ValueError):
    """A profile or an override that would not run as written."""


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


def rviz_config() -> Path:
    """rviz/threedmoe.rviz, installed beside config/ (share/threedmoe_ros/rviz) or in the source tree."""
    return config_dir().parent / "rviz" / "threedmoe.rviz"


def profile_path(profile: str) -> Path:
    path = Path(profile)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"parameter file {path} does not exist")
        return path
    path = config_dir() / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in config_dir().glob("*.yaml"))
        raise FileNotFoundError(f"no profile '{profile}' (looked for {path}); known profiles: {known}")
    return path


@lru_cache(maxsize=None)
def declared_parameters(node: str) -> dict[str, object]:
    """{parameter: default} that node `node` declares: every declare_parameter("name", default, ...)
    in its module, read from the source (not imported, so this needs no ROS), plus rclpy's own."""
    spec = importlib.util.find_spec(f"threedmoe_ros.nodes.{EXECUTABLES[node]}")
    tree = ast.parse(Path(spec.origin).read_text())
    params = dict(BUILTIN_PARAMETERS)
    for call in ast.walk(tree):
        if (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "declare_parameter"
                and call.args and isinstance(call.args[0], ast.Constant)):
            try:
                params[call.args[0].value] = ast.literal_eval(call.args[1]) if len(call.args) > 1 else None
            except ValueError:  # a default computed at run time: known name, unknown value
                params[call.args[0].value] = None
    return params


def check_parameters(node: str, names, where: str) -> None:
    known = declared_parameters(node)
    unknown = sorted(set(names) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ProfileError(f"{where}: {node} has no parameter {', '.join(unknown)}{hint}; "
                           f"its parameters are: {', '.join(sorted(known))}")


def load_profile(profile: str) -> dict[str, dict]:
    """{node name: parameters} of a profile (a name in config/ or a YAML path), every key checked."""
    path = profile_path(profile)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected one section per node ({', '.join(EXECUTABLES)})")
    nodes = {}
    for name, body in data.items():
        if name not in EXECUTABLES:
            raise ProfileError(f"{path}: unknown node '{name}'; known nodes: {', '.join(EXECUTABLES)}")
        params = (body or {}).get("ros__parameters") if isinstance(body, dict) else None
        if not isinstance(params, dict):
            raise ProfileError(f"{path}: node '{name}' needs a 'ros__parameters' mapping")
        extra = sorted(set(body) - {"ros__parameters"})
        if extra:
            raise ProfileError(f"{path}: node '{name}' has {extra} beside 'ros__parameters'")
        check_parameters(name, params, str(path))
        nodes[name] = params
    return nodes


def parse_overrides(items: list[str], nodes: dict) -> dict[str, dict]:
    """['node.param=value', ...] → {node: {param: value}}, values parsed as YAML (as ROS parses -p)."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, text = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not param:
            raise ProfileError(f"override '{item}' must look like node.param=value")
        if node not in nodes:
            raise ProfileError(f"override '{item}': node '{node}' is not in this profile ({', '.join(nodes)})")
        check_parameters(node, [param], f"override '{item}'")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ProfileError(f"override '{item}': the value is not valid YAML ({exc.problem})") from None
        out.setdefault(node, {})[param] = text if value is None else value
    return out


def bridge_episodes(params: dict) -> int:
    """How many episodes a sim bridge with these parameters runs: tasks × colour splits × episodes."""
    defaults = declared_parameters("sim_bridge")
    get = lambda key: params.get(key, defaults[key])  # noqa: E731
    return len(get("tasks")) * len(get("colors")) * int(get("episodes"))


def resolve(profile: str, overrides: list[str] | None = None) -> dict[str, dict]:
    """A profile's parameters with the overrides applied and what they imply derived:
    {node: parameters}. `derived` values are only set where neither the YAML nor an override does."""
    nodes = load_profile(profile)
    extra = parse_overrides(overrides or [], nodes)
    resolved = {name: {**params, **extra.get(name, {})} for name, params in nodes.items()}
    if "sim_bridge" in resolved:
        for name, param in EPISODE_COUNTERS.items():
            if name in resolved and param not in resolved[name]:
                resolved[name][param] = bridge_episodes(resolved["sim_bridge"])
    return resolved
