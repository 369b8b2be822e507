"""Plumbing every node shares: QoS profiles, parameter descriptions, and the run-until-done loop."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from threedmoe_ros.rosenv import fill_ament_env

# Instruction and plans: a late joiner gets the last one.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Episode results are few and must all arrive, also at an evaluator or recorder that starts late.
RESULTS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def doc(text: str) -> ParameterDescriptor:
    """A parameter description (shown by `ros2 param describe`)."""
    return ParameterDescriptor(description=text)


def run(make_node: Callable[[], Node], done: Callable[[Node], bool] = lambda node: False,
        executor: Callable[[], Executor] = SingleThreadedExecutor, on_exit: Callable[[Node], None] | None = None,
        args: list[str] | None = None, node_class: type[Node] | None = None) -> None:
    """rclpy.init, build the node, spin until `done(node)`, Ctrl-C or shutdown; then `on_exit` and clean up.
    With -h or --help before any --ros-args: print `node_class`'s parameters and exit 0 (nothing starts)."""
    argv = sys.argv[1:] if args is None else list(args)
    ours = argv[: argv.index("--ros-args")] if "--ros-args" in argv else argv
    if node_class is not None and ("-h" in ours or "--help" in ours):
        print_usage(node_class)
        sys.exit(0)
    fill_ament_env()
    rclpy.init(args=args)
    node = make_node()
    executor = executor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not done(node):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Clean-up (closing a bag, writing a table) must not be cut short: when the main node exits,
        # bringup and ros2 launch send SIGINT to every node, also to one already finishing by itself.
        # A node stuck here still ends by SIGTERM/SIGKILL, which both send next.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if on_exit is not None:
            on_exit(node)
        node.destroy_node()
        rclpy.try_shutdown()


class _Declared(Exception):
    """Raised where a node starts reading its parameters: --help has what it needs by then."""


def print_usage(node_class: type[Node]) -> None:
    """Usage and every parameter `node_class` declares, with its default and description. The node is
    constructed with parameter reading cut short, so nothing it would start (a simulator, a model) starts."""
    import os

    declared: list[tuple[str, object, str]] = []
    original = Node.declare_parameter

    def record(self, name, value=None, descriptor=None, ignore_override=False):
        declared.append((name, value, descriptor.description if descriptor is not None else ""))
        return original(self, name, value, descriptor, ignore_override)

    def stop(self, prefix):
        raise _Declared

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    fill_ament_env()
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    Node.declare_parameter, Node.get_parameters_by_prefix, saved = record, stop, Node.get_parameters_by_prefix
    node = None
    try:
        node = node_class(context=context, start_parameter_services=False)
    except _Declared:
        pass
    finally:
        Node.declare_parameter, Node.get_parameters_by_prefix = original, saved
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=context)
    name = node_class.__module__.rsplit(".", 1)[-1]
    doc_line = (sys.modules[node_class.__module__].__doc__ or "").strip().split("\n")[0]
    print(f"usage: {name} [--ros-args -p NAME:=VALUE ...]\n\n{doc_line}\n\nparameters (default):")
    for pname, value, text in declared:
        if pname in ("use_sim_time", "start_type_description_service"):  # every rclpy node's own
            continue
        print(f"  {pname} ({value!r})\n      {text}")
