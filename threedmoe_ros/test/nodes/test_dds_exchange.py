"""Two processes exchange a PickPlacePlan over real DDS, confined to loopback and their own domain."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros


def receive_plan(context, timeout_s: float):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from threedmoe_msgs.msg import PickPlacePlan

    node = rclpy.create_node("plan_listener", context=context)
    got = []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(PickPlacePlan, "pick_place_plan", got.append, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    while not got and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    node.destroy_node()
    return got


def test_plan_crosses_processes(rclpy_context, ros_env):
    talker = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("plan_talker.py")), "stack the blocks"], env=ros_env
    )
    try:
        got = receive_plan(rclpy_context, timeout_s=30)
    finally:
        talker.kill()
        talker.wait()
    assert got, "no PickPlacePlan arrived from the other process"
    plan = got[0]
    assert plan.instruction == "stack the blocks" and plan.model_id == "talker"
    assert [round(s.pick.position.x, 3) for s in plan.steps] == [0.3, 0.4, 0.5]


def test_other_domain_does_not_hear_it(rclpy_context, ros_env):
    """The isolation the fixture promises: a talker in another domain is never heard."""
    other = dict(ros_env, ROS_DOMAIN_ID=str((int(ros_env["ROS_DOMAIN_ID"]) + 50) % 101 + 1))
    talker = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("plan_talker.py")), "not for you"], env=other
    )
    try:
        got = receive_plan(rclpy_context, timeout_s=5)
    finally:
        talker.kill()
        talker.wait()
    assert got == []
