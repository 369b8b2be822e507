"""The one launch description behind launch/*.launch.py: the nodes of a profile (config/<profile>.yaml).

Imports the `launch` packages, which exist on a ROS 2 workstation (not on PyPI); nothing else in the
package imports this module.
"""

from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from threedmoe_ros.profiles import EXECUTABLES, load_profile, profile_path


def profile_launch_description(profile: str) -> LaunchDescription:
    """Arguments: params_file (default config/<profile>.yaml), points (the cloud topic)."""
    params_file = LaunchConfiguration("params_file")
    nodes = [
        Node(package="threedmoe_ros", executable=EXECUTABLES[name], name=name, parameters=[params_file],
             remappings=[("points", LaunchConfiguration("points"))], output="screen", emulate_tty=True)
        for name in load_profile(profile)
    ]
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(profile_path(profile)),
                              description="ROS 2 parameter file with one section per node"),
        DeclareLaunchArgument("points", default_value="points", description="point cloud topic"),
        *nodes,
    ])
