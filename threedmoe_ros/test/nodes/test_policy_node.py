"""The policy node against bad input: every malformed cloud or instruction is rejected with a clear
message in its log and on `status`, no plan is made for it, the node keeps running, and the next
good input gets its plan."""

from __future__ import annotations

import numpy as np
import pytest

from threedmoe_ros.data import pointcloud2
from threedmoe_ros.data.pointcloud2 import Field
from threedmoe_ros.nodes import conversions as conv

pytestmark = pytest.mark.ros


def good_cloud_msg(stamp: int):
    from rosio import scene_cloud

    return conv.cloud_to_msg(scene_cloud(stamp))


def bad_clouds():
    """(name, build(stamp) → PointCloud2, expected words in the error)."""
    from sensor_msgs.msg import PointField

    def without_z(stamp):
        m = good_cloud_msg(stamp)
        m.fields = [f for f in m.fields if f.name != "z"]
        return m

    def wrong_point_step(stamp):
        m = good_cloud_msg(stamp)
        m.point_step = 8
        return m

    def truncated(stamp):
        m = good_cloud_msg(stamp)
        m.data = bytes(m.data)[: len(m.data) // 2]
        return m

    def non_finite(stamp):
        from rosio import scene_cloud

        c = scene_cloud(stamp)
        c.xyz[:] = np.nan
        c.xyz[::2] = np.inf
        return conv.cloud_to_msg(c)

    def empty(stamp):
        m = good_cloud_msg(stamp)
        m.width, m.row_step, m.data = 0, 0, b""
        return m

    def ten_million(stamp):
        m = good_cloud_msg(stamp)
        n = 10_000_000
        m.fields = [PointField(name=c, offset=4 * i, datatype=7, count=1) for i, c in enumerate("xyz")]
        m.point_step, m.width, m.row_step = 12, n, 12 * n
        m.data = bytes(12 * n)
        return m

    def unknown_frame(stamp):
        m = good_cloud_msg(stamp)
        m.header.frame_id = "camera_color_optical_frame"
        return m

    return [
        ("missing z", without_z, "no field(s) z"),
        ("wrong point_step", wrong_point_step, "does not fit in point_step 8"),
        ("truncated data", truncated, "truncated"),
        ("NaN/inf", non_finite, "no finite points"),
        ("empty", empty, "empty"),
        ("10 million points", ten_million, "more than the limit"),
        ("unknown frame", unknown_frame, "camera_color_optical_frame"),
    ]


BAD_INSTRUCTIONS = [
    ("empty", "   ", "empty"),
    ("100 kB", "put the red block in the green zone " * 2800, "more than the limit"),
    ("control characters", "put the red\x1b[31m block\x00 away", "control characters"),
]


def test_policy_node_rejects_bad_input_and_keeps_planning(rclpy_context, start_node, untrained_checkpoint):
    from rosio import RosIO
    from std_msgs.msg import String

    # Reliable points: a 10-million-point cloud (120 MB) never arrives best-effort over UDP.
    node = start_node("policy_node", {"checkpoint": str(untrained_checkpoint), "points_qos": "reliable"}, name="policy")
    io = RosIO(rclpy_context, reliable_points=True)
    try:
        assert io.wait_for_subscriber("points"), f"policy node never subscribed to points:\n{node.log}"
        io.instruction.publish(String(data="put the red block in the green zone"))
        stamp = 1_000_000_000

        def expect_plan():
            nonlocal stamp
            stamp += 1_000_000_000
            s = stamp
            io.points.publish(good_cloud_msg(s))
            assert io.spin_until(lambda: io.plans_for(s), 90), f"no plan for a good cloud:\n{node.log}"

        expect_plan()
        for name, build, words in bad_clouds():
            stamp += 1_000_000_000
            before = len(io.status)
            io.points.publish(build(stamp))
            assert io.spin_until(lambda: len(io.status) > before, 90), f"{name}: no status"
            report = io.status[-1]
            assert report.topic == "points" and not report.ok and words in report.message, (name, report.message)
            assert not io.plans_for(stamp), f"{name}: a plan was made for a bad cloud"
            assert node.alive(), f"policy node died on {name}:\n{node.log}"
            assert words in node.log, f"{name}: the error is not in the node's log"
            expect_plan()

        for name, text, words in BAD_INSTRUCTIONS:
            before = len(io.status)
            io.instruction.publish(String(data=text))
            assert io.spin_until(lambda: len(io.status) > before, 90), f"{name}: no status"
            report = io.status[-1]
            assert report.topic == "instruction" and not report.ok and words in report.message, (name, report.message)
            assert node.alive()
            expect_plan()
        # The last good instruction is still the one planned for.
        assert io.plans[-1].instruction == "put the red block in the green zone"
    finally:
        io.close()
