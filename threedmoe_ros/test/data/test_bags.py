"""Episode bags written without ROS are real rosbag2 bags: rosbags reads them back, and rclpy
deserialises their payloads into the generated threedmoe_msgs / sensor_msgs classes."""

import numpy as np
import pytest

from threedmoe_ros.data import bags, pointcloud2
from threedmoe_ros.types import Cloud, EpisodeOutcome


@pytest.fixture
def episode(tmp_path):
    rng = np.random.default_rng(1)
    cloud = Cloud(rng.uniform(0, 1, (200, 3)), rng.integers(0, 256, (200, 3)), rng.integers(0, 4, 200), stamp_ns=5)
    plan = rng.uniform(-1, 1, (3, 2, 7))
    outcome = EpisodeOutcome("put-block-in-zone", 7, "put the red block in the green zone", False, 3, 1.0, True, "success")
    path = tmp_path / "episode"
    with bags.EpisodeWriter(path) as writer:
        writer.write("/points", bags.cloud_msg(cloud), 5)
        writer.write("/instruction", bags.string_msg(outcome.instruction), 5)
        writer.write("/pick_place_plan", bags.plan_msg(plan, outcome.instruction, 5, inference_ms=2.5, model_id="oracle"), 6)
        writer.write("/episode_result", bags.result_msg(outcome, 9), 9)
    return path, cloud, plan, outcome


def test_bag_is_rosbag2_mcap(episode):
    path = episode[0]
    assert (path / "metadata.yaml").is_file()
    assert list(path.glob("*.mcap")), "storage should be mcap"
    assert "storage_identifier: mcap" in (path / "metadata.yaml").read_text()


def test_bag_reads_back_with_rosbags(episode):
    path, cloud, plan, outcome = episode
    messages = {topic: (ns, msg) for topic, ns, msg in bags.read_messages(path)}
    assert set(messages) == {"/points", "/instruction", "/pick_place_plan", "/episode_result"}
    np.testing.assert_array_equal(pointcloud2.decode(messages["/points"][1]).xyz, cloud.xyz)
    np.testing.assert_allclose(bags.plan_from_msg(messages["/pick_place_plan"][1]), plan)
    assert bags.outcome_from_msg(messages["/episode_result"][1]) == outcome
    assert messages["/episode_result"][0] == 9


def test_bag_payloads_deserialise_with_rclpy(episode):
    """The CDR in the bag is what a ROS 2 node would have published: rclpy's own classes read it."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import PointCloud2
    from threedmoe_msgs.msg import EpisodeResult, PickPlacePlan

    path, cloud, plan, outcome = episode
    classes = {"/points": PointCloud2, "/pick_place_plan": PickPlacePlan, "/episode_result": EpisodeResult}
    seen = {}
    with Reader(path) as reader:
        for conn, _, raw in reader.messages():
            if conn.topic in classes:
                seen[conn.topic] = deserialize_message(raw, classes[conn.topic])
    np.testing.assert_array_equal(pointcloud2.decode(seen["/points"]).label, cloud.label)
    msg = seen["/pick_place_plan"]
    assert msg.instruction == outcome.instruction and msg.model_id == "oracle"
    assert msg.inference_ms == pytest.approx(2.5)
    np.testing.assert_allclose(bags.plan_from_msg(msg), plan)
    assert seen["/episode_result"].success and seen["/episode_result"].reason == EpisodeResult.REASON_SUCCESS


def test_writer_refuses_to_overwrite(episode):
    with pytest.raises(FileExistsError, match="already exists"):
        bags.EpisodeWriter(episode[0])


def test_interrupted_writer_leaves_a_readable_bag(tmp_path):
    path = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        with bags.EpisodeWriter(path) as writer:
            writer.write("/instruction", bags.string_msg("stack the blocks"), 1)
            raise KeyboardInterrupt
    assert [m.data for _, _, m in bags.read_messages(path)] == ["stack the blocks"]
    # An interrupted episode has no result: asking for it yields nothing, not the other topics' messages.
    assert list(bags.read_messages(path, ["/episode_result"])) == []


def test_reading_a_directory_that_is_not_a_bag_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a rosbag2 directory"):
        list(bags.read_messages(tmp_path))


def test_metadata_carries_offered_qos_so_latched_topics_stay_latched(episode):
    """`ros2 bag play` republishes a topic with the offered QoS in metadata.yaml: without it the
    latched instruction and plan would be played volatile and a late subscriber would miss them."""
    from rosbags.interfaces import QosDurability, QosReliability
    from rosbags.rosbag2 import Reader

    with Reader(episode[0]) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert all(len(profiles) == 1 for profiles in qos.values()), qos
    for topic in ("/instruction", "/pick_place_plan", "/episode_result"):
        assert qos[topic][0].durability == QosDurability.TRANSIENT_LOCAL, topic
        assert qos[topic][0].reliability == QosReliability.RELIABLE, topic
    assert qos["/points"][0].durability == QosDurability.VOLATILE
    assert "transient_local" in (episode[0] / "metadata.yaml").read_text()


def test_stamps_are_read_from_serialised_messages():
    """The recorder times each message by its own stamp, read from the CDR without decoding a cloud."""
    store = bags.typestore()
    cloud = Cloud(np.zeros((10, 3)), stamp_ns=3_250_000_001)
    clock = store.types["rosgraph_msgs/msg/Clock"](clock=bags.ROSBAGS.time(7_000_000_002))
    assert bags.leading_stamp_ns("sensor_msgs/msg/PointCloud2",
                                 store.serialize_cdr(bags.cloud_msg(cloud), "sensor_msgs/msg/PointCloud2")) == 3_250_000_001
    assert bags.leading_stamp_ns("rosgraph_msgs/msg/Clock", store.serialize_cdr(clock, "rosgraph_msgs/msg/Clock")) == 7_000_000_002
    big_endian = store.serialize_cdr(clock, "rosgraph_msgs/msg/Clock", little_endian=False)
    assert bags.leading_stamp_ns("rosgraph_msgs/msg/Clock", big_endian) == 7_000_000_002
    assert bags.leading_stamp_ns("std_msgs/msg/String", store.serialize_cdr(bags.string_msg("hi"), "std_msgs/msg/String")) is None
