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


# Keys that resolve in the Jazzy rosdep database for Ubuntu 24.04, as scripts/check_rosdep.sh
# reported them (ros/rosdistro, Aug 2026). A new dependency must be checked there and added here;
# e.g. `rclpy_lifecycle` is no key (lifecycle nodes are part of rclpy).
JAZZY_ROSDEP_KEYS = {
    "action_msgs", "ament_cmake", "ament_index_python", "builtin_interfaces", "geometry_msgs", "launch",
    "launch_ros", "lifecycle_msgs", "python3-matplotlib", "python3-numpy", "python3-pytest", "python3-tqdm",
    "python3-transforms3d", "python3-yaml", "rcl_interfaces", "rclpy", "rosgraph_msgs",
    "rosidl_default_generators", "rosidl_default_runtime", "rviz2", "sensor_msgs", "std_msgs", "tf2_msgs", "tf2_ros",
    "visualization_msgs",
}
WORKSPACE_PACKAGES = {"threedmoe_msgs", "threedmoe_ros"}


@pytest.mark.parametrize("name", ["threedmoe_msgs", "threedmoe_ros"])
def test_every_dependency_is_a_checked_rosdep_key(name):
    package = parse_package(REPO / name / "package.xml")
    deps = {d.name for d in package.build_depends + package.buildtool_depends + package.exec_depends
            + package.test_depends + package.build_export_depends}
    unknown = deps - JAZZY_ROSDEP_KEYS - WORKSPACE_PACKAGES
    assert not unknown, f"{name}/package.xml: {sorted(unknown)} not checked against rosdep (scripts/check_rosdep.sh)"


def test_python_dependencies_of_the_nodes_are_declared():
    """Every ROS package a node or the launch module imports is an exec_depend (rosdep installs it)."""
    package = parse_package(REPO / "threedmoe_ros" / "package.xml")
    declared = {d.name for d in package.exec_depends}
    imported = set()
    for path in (REPO / "threedmoe_ros" / "threedmoe_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                imported |= {n.split(".")[0] for n in names}
    ros = {n for n in imported if n.endswith(("_msgs", "_interfaces")) or n in ("rclpy", "launch", "launch_ros",
                                                                              "ament_index_python")}
    assert ros <= declared, f"imported but not declared in package.xml: {sorted(ros - declared)}"


@pytest.mark.parametrize("name", ["threedmoe-bringup", "threedmoe-demo", "threedmoe-selfcheck", "threedmoe-routing",
                                  "threedmoe-train-stage2"])
def test_help_names_the_command_and_does_nothing_else(name, capsys):
    module, func = console_scripts()[name].split(":")
    with pytest.raises(SystemExit) as exit_:
        getattr(importlib.import_module(module), func)(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith(f"usage: {name} ")
    if name == "threedmoe-train-stage2":
        assert "Stage II" in out.split("options:")[0] and "Stage I of 3D-MoE" not in out


@pytest.mark.parametrize("name", ["threedmoe-render", "threedmoe-collect", "threedmoe-eval-closed-loop"])
def test_simulator_commands_print_only_their_usage(name):
    """pybullet prints its build time when imported; a command's --help shows its usage and nothing else."""
    import subprocess
    import sys
    from pathlib import Path

    run = subprocess.run([str(Path(sys.executable).parent / name), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith(f"usage: {name} ")
    assert "pybullet" not in run.stdout + run.stderr, run.stderr


def test_readme_planner_example_runs_as_written():
    """The README's Python example of the Planner, copied out of README.md and run on a fresh checkout."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "Planner.from_pretrained" in b)
    code = "\n".join(line[2:] if line.startswith("  ") else line for line in block.splitlines())
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own documentation
    result = scope["result"]
    assert result.poses.ndim == 3 and result.poses.shape[1:] == (2, 7) and len(result.poses) >= 1
    assert result.problem == ""
