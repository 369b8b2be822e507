"""One set of message builders for bags and nodes: a message written to a bag without ROS is the
message a node publishes, and every message reads back into what it was built from."""

import numpy as np
import pytest

from threedmoe_ros.data import bags, messages
from threedmoe_ros.nodes.conversions import RCLPY
from threedmoe_ros.types import Cloud, EpisodeOutcome

RNG = np.random.default_rng(3)
CLOUD = Cloud(RNG.uniform(0, 1, (64, 3)), RNG.integers(0, 256, (64, 3)), RNG.integers(0, 4, 64), stamp_ns=3_000_000_007)
PLAN = RNG.uniform(-1, 1, (3, 2, 7))
OUTCOME = EpisodeOutcome("stack-blocks", 11, "stack the blocks", True, 4, 0.5, False, "step_limit", "two of three stacked")

BUILDS = {  # builder name → its arguments
    "time": (1_500_000_002,),
    "header": (7, "camera"),
    "cloud": (CLOUD,),
    "string": ("put the red block in the green zone",),
    "pose": (PLAN[0, 0],),
    "plan": (PLAN, "stack the blocks", 5, 2.5, "oracle", "table"),
    "joint_state": (["shoulder", "elbow"], np.array([0.25, -1.5]), 9),
    "episode_result": (OUTCOME, 9),
    "input_status": ("points", False, "cloud has 0 points", 4),
}


@pytest.mark.parametrize("name", BUILDS)
def test_a_bag_holds_what_a_node_publishes(name):
    """The bag's CDR deserialises in rclpy to the very message the node builds from the same values
    (compared as messages: rclpy leaves CDR padding bytes unset, so the raw bytes may differ there)."""
    from rclpy.serialization import deserialize_message

    bag_msg = getattr(bags.ROSBAGS, name)(*BUILDS[name])
    node_msg = getattr(RCLPY, name)(*BUILDS[name])
    cdr = bytes(bags.typestore().serialize_cdr(bag_msg, bag_msg.__msgtype__))
    assert deserialize_message(cdr, type(node_msg)) == node_msg


@pytest.mark.parametrize("build", [bags.ROSBAGS, RCLPY], ids=["rosbags", "rclpy"])
def test_messages_read_back_into_what_built_them(build):
    plan = build.plan(PLAN, "stack the blocks", 5)
    np.testing.assert_allclose(messages.plan_from_msg(plan), PLAN)
    assert messages.stamp_ns(plan.header) == 5
    assert messages.plan_from_msg(build.plan(np.zeros((0, 2, 7)), "", 5)).shape == (0, 2, 7)
    assert messages.outcome_from_msg(build.episode_result(OUTCOME, 9)) == OUTCOME
    cloud = messages.msg_to_cloud(build.cloud(CLOUD))
    np.testing.assert_allclose(cloud.xyz, CLOUD.xyz, rtol=1e-6)
    np.testing.assert_array_equal(cloud.rgb, CLOUD.rgb)
    np.testing.assert_array_equal(cloud.label, CLOUD.label)
    assert cloud.stamp_ns == CLOUD.stamp_ns
