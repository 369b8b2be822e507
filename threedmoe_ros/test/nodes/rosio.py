"""Test helper: a node in the test process that publishes inputs and collects what comes back."""

from __future__ import annotations

import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String
from threedmoe_msgs.msg import EpisodeResult, InputStatus, PickPlacePlan

from threedmoe_ros.nodes import conversions as conv
from threedmoe_ros.types import Cloud

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RESULTS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def scene_cloud(stamp_ns: int, n: int = 600, seed: int = 0) -> Cloud:
    """A table with three labelled blocks, in the workspace, like the simulator's clouds."""
    rng = np.random.default_rng(seed)
    table = np.c_[rng.uniform(0.25, 0.75, n), rng.uniform(-0.5, 0.5, n), np.zeros(n)]
    blocks = [np.c_[rng.uniform(-0.02, 0.02, (50, 2)) + c, rng.uniform(0, 0.04, 50)] for c in ((0.4, 0.1), (0.6, -0.2), (0.5, 0.3))]
    xyz = np.vstack([table, *blocks])
    label = np.r_[np.zeros(n, int), np.repeat([1, 2, 3], 50)]
    rgb = np.vstack([np.full((n, 3), 120), np.repeat([[230, 40, 40], [40, 200, 40], [40, 40, 230]], 50, axis=0)])
    return Cloud(xyz, rgb, label, "world", stamp_ns)


class RosIO:
    def __init__(self, context, reliable_points: bool = False):
        self.node = rclpy.create_node("test_io", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.points = self.node.create_publisher(PointCloud2, "points", 10 if reliable_points else qos_profile_sensor_data)
        self.instruction = self.node.create_publisher(String, "instruction", LATCHED)
        self.plans: list[PickPlacePlan] = []
        self.status: list[InputStatus] = []
        self.results: list[EpisodeResult] = []
        self.node.create_subscription(PickPlacePlan, "pick_place_plan", self.plans.append, LATCHED)
        self.node.create_subscription(InputStatus, "status", self.status.append, 50)
        self.node.create_subscription(EpisodeResult, "episode_result", self.results.append, RESULTS)

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def wait_for_subscriber(self, topic: str, timeout: float = 60) -> bool:
        return self.spin_until(lambda: self.node.count_subscribers(topic) > 0, timeout)

    def plans_for(self, stamp_ns: int) -> list[PickPlacePlan]:
        return [p for p in self.plans if conv.stamp_ns(p.header) == stamp_ns]

    def close(self) -> None:
        self.node.destroy_node()
