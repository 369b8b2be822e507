"""Launch files, checked without the launch package (not on PyPI): each parses, names a profile whose
nodes run executables setup.py installs, and sets only parameters its nodes declare."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from threedmoe_ros.profiles import EXECUTABLES, MAIN_NODE, load_profile

PACKAGE = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((PACKAGE / "launch").glob("*.launch.py"))
NODE_MODULES = {
    "sim_bridge_node": "threedmoe_ros.nodes.sim_bridge_node",
    "policy_node": "threedmoe_ros.nodes.policy_node",
    "recorder_node": "threedmoe_ros.nodes.recorder_node",
    "evaluator_node": "threedmoe_ros.nodes.evaluator_node",
}


def declared_parameters(module: str) -> set[str]:
    """Names passed to declare_parameter(...) anywhere in the node's module."""
    tree = ast.parse(Path(importlib.import_module(module).__file__).read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "declare_parameter"
        and node.args and isinstance(node.args[0], ast.Constant)
    }


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
        undeclared = set(params) - declared_parameters(NODE_MODULES[executable])
        assert not undeclared, f"config/{profile}.yaml sets {sorted(undeclared)} that {executable} never declares"


def test_launch_module_builds_from_profiles():
    """nodes/launch.py (imported only under ros2 launch) parses and uses the profile's nodes."""
    source = (PACKAGE / "threedmoe_ros" / "nodes" / "launch.py").read_text()
    ast.parse(source)
    assert "load_profile(profile)" in source and "EXECUTABLES[name]" in source


def test_setup_installs_launch_and_config():
    setup = (PACKAGE / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup
