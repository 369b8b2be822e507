"""Test helper run as its own process: publishes one PickPlacePlan (reliable, transient-local) and
waits until a subscriber has matched and the plan has had time to arrive (or the test kills it)."""

import sys
import time

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from threedmoe_msgs.msg import PickPlace, PickPlacePlan


def main() -> int:
    rclpy.init()
    node = rclpy.create_node("plan_talker")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = node.create_publisher(PickPlacePlan, "pick_place_plan", qos)
    msg = PickPlacePlan(instruction=sys.argv[1], model_id="talker")
    for i in range(3):
        step = PickPlace()
        step.pick.position.x, step.place.position.y, step.place.orientation.w = 0.3 + 0.1 * i, -0.2, 1.0
        msg.steps.append(step)
    pub.publish(msg)
    deadline = time.monotonic() + 30
    matched = False
    while not matched and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
        matched = pub.get_subscription_count() > 0
    time.sleep(1.0)  # let the reliable transfer finish before the writer goes away
    node.destroy_node()
    rclpy.shutdown()
    return 0 if matched else 1


if __name__ == "__main__":
    sys.exit(main())
