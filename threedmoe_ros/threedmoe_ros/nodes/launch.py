"""The one launch description behind launch/*.launch.py: the nodes of a profile (config/<profile>.yaml).

Imports the `launch` packages, which exist on a ROS 2 workstation (not on PyPI); nothing else in the
package imports this module.

    ros2 launch threedmoe_ros sim_eval.launch.py [params_file:=my.yaml] [points:=/camera/points] [rviz:=true]

The parameter file is read when the launch runs (an OpaqueFunction), so a params_file:= of the
user's is checked and resolved like the profile's own (profiles.resolve: unknown keys are errors,
the episodes the evaluator or recorder waits for follow the sim bridge's). When the profile's main
node exits (the evaluator once its table is written, the recorder once its bags are), the whole
launch shuts down, as `threedmoe-bringup` does.
"""

from __future__ import annotations

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from threedmoe_ros.profiles import EXECUTABLES, MAIN_NODE, load_profile, profile_path, resolve, rviz_config


def _nodes(context: LaunchContext, profile: str) -> list:
    """The profile's nodes, built once the launch arguments are known."""
    params_file = LaunchConfiguration("params_file").perform(context)
    written, resolved = load_profile(params_file), resolve(params_file)
    actions = []
    for name, params in resolved.items():
        derived = {k: v for k, v in params.items() if k not in written[name]}
        node = Node(package="threedmoe_ros", executable=EXECUTABLES[name], name=name,
                    parameters=[params_file, derived] if derived else [params_file], remappings=[("points", LaunchConfiguration("points"))],
                    output="screen", emulate_tty=True)
        actions.append(node)
        if name == MAIN_NODE.get(profile):
            # The main node's exit ends the run: without this `ros2 launch` waits for Ctrl-C.
            actions.append(RegisterEventHandler(OnProcessExit(
                target_action=node, on_exit=[EmitEvent(event=Shutdown(reason=f"{name} finished"))])))
    sim_time = any(params.get("use_sim_time", False) for params in resolved.values())
    actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", str(rviz_config())],
                        parameters=[{"use_sim_time": sim_time}], condition=IfCondition(LaunchConfiguration("rviz"))))
    return actions


def profile_launch_description(profile: str) -> LaunchDescription:
    """Arguments: params_file (default config/<profile>.yaml), points (the cloud topic), rviz (start RViz)."""
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(profile_path(profile)),
                              description="ROS 2 parameter file with one section per node"),
        DeclareLaunchArgument("points", default_value="points", description="point cloud topic"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="also start RViz with rviz/threedmoe.rviz (cloud, plan, markers)"),
        OpaqueFunction(function=_nodes, args=[profile]),
    ])
