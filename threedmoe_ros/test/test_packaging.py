"""The repository is two well-formed ROS 2 packages, and what setup.py installs exists."""

import ast
import importlib
import re
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, build_type", [("threedmoe_msgs", "ament_cmake"), ("threedmoe_ros", "ament_python")])
def test_package_xml_is_format_3(name, build_type):
    package = parse_package(REPO / name / "package.xml")
    package.validate()
    assert package.name == name and package.package_format == 3
    assert package.get_build_type() == build_type


def test_msgs_package_is_an_interface_package():
    package = parse_package(REPO / "threedmoe_msgs" / "package.xml")
    assert "rosidl_interface_packages" in [g.name for g in package.member_of_groups]
    assert "rosidl_default_generators" in [d.name for d in package.buildtool_depends]


def interface_files():
    return sorted((REPO / "threedmoe_msgs").glob("*/*.msg")) + sorted((REPO / "threedmoe_msgs").glob("*/*.action"))


@pytest.mark.parametrize("path", interface_files(), ids=lambda p: p.name)
def test_every_interface_field_is_documented(path):
    """Each field or constant line follows a comment line (units, frames, conventions)."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#") and line.strip() != "---":
            above = [l for l in lines[:i] if l.strip() and l.strip() != "---"]
            assert above and (above[-1].startswith("#") or re.match(r"^\w+ [A-Z_]+=", above[-1])), (
                f"{path.name}: field '{line}' has no comment above it"
            )


def test_interfaces_are_listed_in_cmake():
    cmake = (REPO / "threedmoe_msgs" / "CMakeLists.txt").read_text()
    for path in interface_files():
        assert f'"{path.parent.name}/{path.name}"' in cmake, f"{path.name} missing from rosidl_generate_interfaces"


def console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO / "threedmoe_ros" / "setup.py").read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and getattr(node.targets[0], "id", "") in ("NODES", "CLIS"):
            scripts.update(ast.literal_eval(node.value))
        if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Dict) and node.target.id in ("NODES", "CLIS"):
            scripts.update(ast.literal_eval(node.value))
    return scripts


@pytest.mark.parametrize("name, target", sorted(console_scripts().items()))
def test_console_scripts_resolve(name, target):
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func)), f"{name} -> {target} is not callable"
