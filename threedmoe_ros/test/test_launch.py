"""Launch files and profiles, checked without the launch package (not on PyPI): each launch file
parses, names a profile whose nodes run executables setup.py installs and set only parameters they
declare, and ends when the profile's main node exits; bringup refuses what a node would ignore and
derives what the profiles imply."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from threedmoe_ros.bringup import main as bringup, node_commands
from threedmoe_ros.profiles import EXECUTABLES, MAIN_NODE, ProfileError, declared_parameters, load_profile, resolve

PACKAGE = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((PACKAGE / "launch").glob("*.launch.py"))
LAUNCH_MODULE = PACKAGE / "threedmoe_ros" / "nodes" / "launch.py"


def launch_profile(path: Path) -> str:
    """The profile a launch file hands to profile_launch_description(...)."""
    tree = ast.parse(path.read_text())
    names = {"generate_launch_description"} & {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert names, f"{path.name} has no generate_launch_description()"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "profile_launch_description":
            return node.args[0].value
    raise AssertionError(f"{path.name} does not call profile_launch_description")


def installed_scripts() -> set[str]:
    from test_packaging import console_scripts

    return set(console_scripts())


def test_there_are_launch_files():
    assert {p.name for p in LAUNCH_FILES} >= {"sim_eval.launch.py", "collect.launch.py", "policy.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_is_consistent(path):
    profile = launch_profile(path)
    assert profile in MAIN_NODE, f"{path.name}: profile {profile} has no entry in profiles.MAIN_NODE"
    nodes = load_profile(profile)
    assert nodes, f"config/{profile}.yaml starts no node"
    scripts = installed_scripts()
    for name, params in nodes.items():
        executable = EXECUTABLES[name]
        assert executable in scripts, f"{path.name}: {executable} is not a console_script of setup.py"
        undeclared = set(params) - set(declared_parameters(name))
        assert not undeclared, f"config/{profile}.yaml sets {sorted(undeclared)} that {executable} never declares"


def test_declared_parameters_are_read_from_the_node_source():
    params = declared_parameters("policy")
    assert params["checkpoint"] == "" and params["sampling_steps"] == 0 and "use_sim_time" in params
    assert declared_parameters("sim_bridge")["tasks"] == ["put-block-in-zone"]


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == name]


def test_launch_ends_when_the_main_node_exits():
    """ros2 launch returns once the evaluator (sim_eval) or recorder (collect) exits: an OnProcessExit
    handler on that node emits Shutdown. Checked on the source, as `launch` is not installed here."""
    tree = ast.parse(LAUNCH_MODULE.read_text())
    handlers = _calls(tree, "OnProcessExit")
    assert len(handlers) == 1, "one OnProcessExit handler, on the main node"
    kwargs = {k.arg: k.value for k in handlers[0].keywords}
    assert isinstance(kwargs["target_action"], ast.Name) and kwargs["target_action"].id == "node"
    assert _calls(kwargs["on_exit"], "Shutdown"), "the handler must emit a Shutdown event"
    register = _calls(tree, "RegisterEventHandler")[0]
    guard = next(n for n in ast.walk(tree) if isinstance(n, ast.If) and register in list(ast.walk(n)))
    assert "MAIN_NODE" in ast.unparse(guard.test), "registered only for the profile's main node"
    assert MAIN_NODE["sim_eval"] == "evaluator" and MAIN_NODE["collect"] == "recorder"


def test_launch_reads_params_file_at_launch_time_and_can_start_rviz():
    source = LAUNCH_MODULE.read_text()
    tree = ast.parse(source)
    assert _calls(tree, "OpaqueFunction"), "a params_file:= of the user's must be resolved like the profile's"
    assert "resolve(params_file)" in source
    arguments = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    assert arguments == {"params_file", "points", "rviz"}
    rviz = next(c for c in _calls(tree, "Node") if any(k.arg == "executable" and getattr(k.value, "value", "") == "rviz2"
                                                        for k in c.keywords))
    assert "IfCondition" in ast.unparse(rviz)


def test_rviz_config_shows_cloud_plan_and_markers():
    config = yaml.safe_load((PACKAGE / "rviz" / "threedmoe.rviz").read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "world"
    displays = {d["Class"]: d for d in manager["Displays"]}
    cloud = displays["rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == "/points" and cloud["Color Transformer"] == "RGB8"
    assert displays["rviz_default_plugins/PoseArray"]["Topic"]["Value"] == "/pick_place_poses"
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == "/pick_place_markers"


def test_setup_installs_launch_config_and_rviz():
    setup = (PACKAGE / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup and 'glob("rviz/*.rviz")' in setup


# ------------------------------------------------------------------ profiles and bringup


@pytest.mark.parametrize("profile", ["sim_eval", "collect"])
def test_episode_counts_follow_the_sim_bridge(profile):
    """The recorder / evaluator waits for as many episodes as the bridge runs, whatever -p says."""
    waiter = MAIN_NODE[profile]
    assert "expected_episodes" not in load_profile(profile)[waiter], "derived, not written in the YAML"
    bridge = load_profile(profile)["sim_bridge"]
    assert resolve(profile)[waiter]["expected_episodes"] == len(bridge["tasks"]) * len(bridge["colors"]) * bridge["episodes"]
    params = resolve(profile, ["sim_bridge.episodes=50", "sim_bridge.colors=[seen, unseen]"])
    assert params[waiter]["expected_episodes"] == len(bridge["tasks"]) * 2 * 50
    assert resolve(profile, [f"{waiter}.expected_episodes=4"])[waiter]["expected_episodes"] == 4  # an explicit value wins


def test_bringup_passes_overrides_and_derived_values_to_the_nodes():
    commands = node_commands("collect", ["sim_bridge.episodes=50", "recorder.output_dir=data_out/ros"])
    recorder = commands["recorder"]
    assert recorder[recorder.index("--params-file") + 1].endswith("config/collect.yaml")
    assert "expected_episodes:=150" in recorder and 'output_dir:="data_out/ros"' in recorder
    assert "episodes:=50" in commands["sim_bridge"]


@pytest.mark.parametrize("override, message", [
    ("policy.chekpoint=runs/x", "policy has no parameter chekpoint (did you mean checkpoint?)"),
    ("recorder.output_dir=x", "node 'recorder' is not in this profile"),
    ("policy.checkpoint", "must look like node.param=value"),
])
def test_bringup_refuses_an_override_no_node_declares(override, message, capsys):
    assert bringup(["policy", "-p", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if "chekpoint" in override:
        assert "its parameters are: " in err and "checkpoint" in err.split("its parameters are: ")[1]


def test_a_yaml_key_no_node_declares_is_an_error(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"policy": {"ros__parameters": {"checkpoint": "", "sampling_stepz": 2}}}))
    with pytest.raises(ProfileError, match="policy has no parameter sampling_stepz"):
        load_profile(str(path))
    assert bringup([str(path)]) == 2
    assert "sampling_steps" in capsys.readouterr().err


# ------------------------------------------------------------------ the environment


def _ros_env_of_a_fresh_process(env: dict) -> dict:
    code = ("import json; from threedmoe_ros.rosenv import localhost_env; e = localhost_env(7); "
            "print(json.dumps({k: e[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_users_ros_domain_and_discovery_range_are_honoured():
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    assert _ros_env_of_a_fresh_process(base) == {"ROS_DOMAIN_ID": "7", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    assert _ros_env_of_a_fresh_process({**base, "ROS_DOMAIN_ID": "42"})["ROS_DOMAIN_ID"] == "42"
    chosen = _ros_env_of_a_fresh_process({**base, "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert chosen == {"ROS_DOMAIN_ID": "7", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
