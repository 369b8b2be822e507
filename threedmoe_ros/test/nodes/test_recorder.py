"""Episodes recorded over ROS (sim bridge in oracle mode → recorder) are real rosbag2 bags: they read
back with rosbags and with mcap-ros2-support, keep /clock, sim-time bag times and the publishers'
offered QoS (latched topics stay latched on `ros2 bag play`), load into the same training dataset as
episodes from the offline collector, and an interrupted recording leaves a readable bag."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

TASK = "put-block-in-zone"


@pytest.fixture
def recorded(start_node, tmp_path):
    out = tmp_path / "ros_episodes"
    recorder = start_node("recorder_node", {"output_dir": str(out), "split": "train", "expected_episodes": 2}, "recorder")
    bridge = start_node("sim_bridge_node", {
        "mode": "oracle", "tasks": [TASK], "colors": ["seen"], "seed_start": 5, "episodes": 2,
        "camera_width": 96, "camera_height": 72, "start_delay_s": 1.0,
        "wait_for_subscribers": ["points", "episode_result", "pick_place_plan"],
    }, "sim_bridge")
    assert recorder.wait(timeout=240) == 0, f"recorder did not finish:\n{recorder.log}\n{bridge.log}"
    return out, bridge


def test_recorded_episodes_read_back_and_train(recorded, tmp_path):
    from mcap_ros2.reader import read_ros2_messages

    from threedmoe_ros.data import bags
    from threedmoe_ros.train.collect import main as collect
    from threedmoe_ros.data.dataset import EpisodeDataset, find_episodes

    out, _ = recorded
    episodes = find_episodes(out)
    assert [e.name for e in episodes] == ["0000005", "0000006"], episodes

    # rosbags: every topic is there and the episode ended in success with the oracle.
    topics, times = {}, {}
    for topic, ns, msg in bags.read_messages(episodes[0]):
        topics.setdefault(topic, []).append(msg)
        times.setdefault(topic, []).append(ns)
    assert set(topics) == set(bags.RECORDED_TOPICS)  # the episode's topics and /clock
    result = topics["/episode_result"][-1]
    assert result.task == TASK and result.seed == 5 and result.success
    assert len(topics["/points"]) == result.steps_taken + 1  # one cloud per observation

    # Bag times are the simulator's time, the stamps the messages carry (not the wall clock).
    assert times["/points"] == [bags.stamp_ns(m.header) for m in topics["/points"]]
    assert times["/clock"] == [m.clock.sec * 10**9 + m.clock.nanosec for m in topics["/clock"]]
    assert times["/instruction"][0] <= min(times["/points"]) and max(max(t) for t in times.values()) < 10**12

    # metadata.yaml: the offered QoS of each topic's publisher, so the latched topics replay latched.
    from rosbags.interfaces import QosDurability
    from rosbags.rosbag2 import Reader

    with Reader(episodes[0]) as reader:
        offered = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert all(offered.values()), offered
    for topic in ("/instruction", "/pick_place_plan", "/episode_result"):
        assert {q.durability for q in offered[topic]} == {QosDurability.TRANSIENT_LOCAL}, topic
    assert {q.durability for q in offered["/points"]} == {QosDurability.VOLATILE}

    # mcap-ros2-support decodes with the schemas embedded in the file, no typestore of ours.
    mcap_file = next(episodes[0].glob("*.mcap"))
    decoded = {m.channel.topic: m.ros_msg for m in read_ros2_messages(str(mcap_file))}
    assert decoded["/episode_result"].seed == 5
    assert decoded["/instruction"].data == result.instruction

    # Offline episodes and ROS episodes load into one dataset, with the same sample structure.
    offline = tmp_path / "offline"
    assert collect(["--tasks", TASK, "--episodes", "1", "--split", "train", "--out", str(offline),
                    "--resolution", "96x72"]) == 0
    ros_samples = EpisodeDataset(out)
    offline_samples = EpisodeDataset(offline)
    assert len(ros_samples) >= 4  # two episodes, each at least one step + the final observation
    a, b = ros_samples[0], offline_samples[0]
    assert type(a) is type(b)
    assert a.plan.shape[1:] == b.plan.shape[1:] == (2, 7)
    assert a.instruction and a.cloud.label is not None and len(a.cloud) > 100
    assert np.isfinite(a.plan).all()


def test_ctrl_c_leaves_a_readable_partial_bag(start_node, tmp_path):
    from threedmoe_ros.data import bags

    out = tmp_path / "interrupted"
    recorder = start_node("recorder_node", {"output_dir": str(out)}, "recorder")
    # Policy mode with no policy: the episode starts (instruction, first cloud) and never ends.
    start_node("sim_bridge_node", {
        "mode": "policy", "tasks": ["stack-blocks"], "colors": ["seen"], "seed_start": 1, "episodes": 1,
        "camera_width": 96, "camera_height": 72, "wait_for_subscribers": ["points"],
    }, "sim_bridge")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("partial/*/*.mcap")):
        time.sleep(0.2)
    time.sleep(1.0)
    assert recorder.stop() == 0, recorder.log
    partial = [p for p in (out / "partial").iterdir()]
    assert partial, recorder.log
    messages = list(bags.read_messages(partial[0]))
    assert any(topic == "/points" for topic, _, _ in messages)
    assert "closed unfinished episode bag" in recorder.log
