"""`ros2 launch threedmoe_ros collect.launch.py [params_file:=my.yaml] [points:=/camera/points]`

Starts the nodes of config/collect.yaml, each with its parameters from that file: the same set
`threedmoe-bringup collect` starts on a machine without ros2 launch.
"""

from threedmoe_ros.nodes.launch import profile_launch_description


def generate_launch_description():
    return profile_launch_description("collect")
