#!/usr/bin/env python3
"""Repoint the Python and numpy include paths baked into the ROS 2 wheels' exported CMake files.

The message wheels are built in a manylinux container whose interpreter lives in /opt/python/...;
their `*__rosidl_generator_pyExport.cmake` files still name that interpreter's include directories,
so any package that generates messages against them (threedmoe_msgs) fails to configure with
"Imported target ... includes non-existent path". This rewrites those paths to this interpreter's.
Idempotent: a second run finds nothing to change.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

# Any foreign interpreter prefix of the form /opt/python/cpXY-cpXY (what manylinux images use).
PYTHON_INCLUDE = re.compile(r"/opt/python/cp\d+-cp\d+t?/include/python[\d.]+t?")
NUMPY_INCLUDE = re.compile(r"/opt/python/cp\d+-cp\d+t?/lib/python[\d.]+t?/site-packages/numpy/(_core|core)/include")


def main(prefix: str) -> int:
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for path in Path(prefix, "share").glob("*/cmake/*.cmake"):
        text = path.read_text()
        fixed = NUMPY_INCLUDE.sub(numpy_include, PYTHON_INCLUDE.sub(python_include, text))
        if fixed != text:
            path.write_text(fixed)
            changed += 1
    print(f"fix_ros_wheel_cmake: repointed include paths in {changed} CMake file(s) under {prefix}/share")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else sys.prefix))
