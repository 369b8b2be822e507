"""`ros2 launch threedmoe_ros collect.launch.py [params_file:=my.yaml] [points:=/camera/points]`

Starts the nodes of config/collect.yaml (the same set `threedmoe-bringup collect` starts on a machine
without ros2 launch), each with its parameters from that file.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from threedmoe_ros.profiles import EXECUTABLES, load_profile, profile_path

PROFILE = "collect"


def generate_launch_description() -> LaunchDescription:
    params_file = LaunchConfiguration("params_file")
    nodes = [
        Node(
            package="threedmoe_ros",
            executable=EXECUTABLES[name],
            name=name,
            parameters=[params_file],
            remappings=[("points", LaunchConfiguration("points"))],
            output="screen",
            emulate_tty=True,
        )
        for name in load_profile(PROFILE)
    ]
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(profile_path(PROFILE)),
                              description="ROS 2 parameter file with one section per node"),
        DeclareLaunchArgument("points", default_value="points", description="point cloud topic"),
        *nodes,
    ])
