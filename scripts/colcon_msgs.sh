#!/usr/bin/env bash
# Build both packages with colcon, the way a workstation does, but against the venv's ROS 2 wheels
# instead of /opt/ros: proves threedmoe_msgs and threedmoe_ros are ordinary colcon packages.
# Output: build/colcon_ws/install (source install/setup.bash there to use it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
ws=$root/build/colcon_ws
rm -rf "$ws" && mkdir -p "$ws/src"
ln -s "$root/threedmoe_msgs" "$root/threedmoe_ros" "$ws/src/"
cd "$ws"
export PATH=$venv/bin:$PATH AMENT_PREFIX_PATH=$venv CMAKE_PREFIX_PATH=$venv
"$venv/bin/python" "$root/scripts/fix_ros_wheel_cmake.py" "$venv"
colcon build --cmake-args -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF
ls install/threedmoe_msgs/lib/python3*/site-packages/threedmoe_msgs/msg/__init__.py install/threedmoe_ros/lib/threedmoe_ros/policy_node
echo "colcon build ok: $ws/install"
