"""Plumbing every node shares: QoS profiles, parameter descriptions, and the run-until-done loop."""

from __future__ import annotations

import signal
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
        args: list[str] | None = None) -> None:
    """rclpy.init, build the node, spin until `done(node)`, Ctrl-C or shutdown; then `on_exit` and clean up."""
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
