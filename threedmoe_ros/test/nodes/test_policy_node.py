"""The policy node's lifecycle and settings as an operator meets them: a configure that cannot
succeed ends the process with status 1 and the reason (and bringup with it), a bfloat16 node plans,
a publisher whose QoS the points subscription cannot hear is reported, and the status topic counts
the clouds. Malformed input is tested in test_fuzz_inputs.py; the planner's half precision in
test/models/test_planner.py."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from threedmoe_ros.nodes import conversions as conv
from threedmoe_ros.validation import validate_plan

pytestmark = pytest.mark.ros

GOOD = "put the red block in the green zone"


def broken_checkpoint(tmp_path: Path, kind: str) -> Path:
    from threedmoe_ros.checkpoints import DEFAULT_POLICY

    out = tmp_path / kind
    out.mkdir()
    for f in DEFAULT_POLICY.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    if kind == "truncated_weights":
        weights = out / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    elif kind == "garbage_config":
        (out / "config.json").write_text("{ this is not json")
    elif kind == "head_null":
        config = json.loads((out / "config.json").read_text())
        config["head"] = None
        (out / "config.json").write_text(json.dumps(config))
    elif kind == "no_weights":
        (out / "model.safetensors").unlink()
    return out


@pytest.mark.parametrize("params, words", [
    ({"checkpoint": "truncated_weights"}, "model.safetensors is corrupt"),
    ({"checkpoint": "garbage_config"}, "config.json is not a valid policy config"),
    ({"checkpoint": "head_null"}, "config.json is not a valid policy config"),
    ({"checkpoint": "no_weights"}, "has no model.safetensors"),
    ({"dtype": "float8"}, "dtype 'float8' is not one of"),
    ({"device": "tpu:0"}, "device 'tpu:0'"),
    ({"device": "cuda:7"}, "device 'cuda:7'"),
    ({"points_qos": "fast"}, "points_qos 'fast'"),
])
def test_a_configure_that_fails_ends_the_process_with_the_reason(start_node, tmp_path, params, words):
    if "checkpoint" in params:
        params = {"checkpoint": str(broken_checkpoint(tmp_path, params["checkpoint"]))}
    node = start_node("policy_node", params, name="policy")
    assert node.wait(timeout=120) == 1, node.log
    assert words in node.log and "cannot start" in node.log, node.log
    assert "Traceback" not in node.log, node.log


def test_bringup_of_the_policy_profile_with_a_corrupt_checkpoint_ends_with_an_error(ros_env, tmp_path):
    checkpoint = broken_checkpoint(tmp_path, "truncated_weights")
    bringup = Path(sys.executable).parent / "threedmoe-bringup"
    # A hang guard only: the process is expected to end by itself, in seconds.
    done = subprocess.run([str(bringup), "policy", "-p", f"policy.checkpoint={checkpoint}",
                           "--domain-id", ros_env["ROS_DOMAIN_ID"]],
                          env=ros_env, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "model.safetensors is corrupt" in output, output
    assert "Traceback" not in output, output


def test_bfloat16_node_reports_qos_it_cannot_hear_and_counts_clouds(rclpy_context, start_node):
    from rclpy.qos import qos_profile_sensor_data
    from rosio import RosIO, scene_cloud
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    from threedmoe_ros.checkpoints import DEFAULT_POLICY

    node = start_node("policy_node", {"checkpoint": str(DEFAULT_POLICY), "dtype": "bfloat16", "seed": 0,
                                      "status_period_s": 0.5}, name="policy")
    io = RosIO(rclpy_context, reliable_points=True)
    try:
        assert io.wait_for_subscriber("points"), node.log
        # The first count report shows the node's status reaches this test before anything is judged.
        assert io.spin_until(lambda: io.status, 60), node.log
        # A best-effort publisher (as some drivers use) cannot reach the default reliable subscription: said so.
        best_effort = io.node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
        assert io.spin_until(lambda: any("QoS" in s.message and not s.ok for s in io.status), 60), node.log
        report = next(s for s in io.status if "QoS" in s.message)
        assert "points_qos:=sensor_data" in report.message, report.message
        io.node.destroy_publisher(best_effort)

        io.instruction.publish(String(data=GOOD))
        stamps = [10**9 * k for k in range(1, 4)]
        for stamp in stamps:
            io.points.publish(conv.cloud_to_msg(scene_cloud(stamp)))
            assert io.spin_until(lambda: io.plans_for(stamp), 60), node.log
            assert validate_plan(conv.plan_from_msg(io.plans_for(stamp)[0])) == ""
        assert io.spin_until(lambda: any(s.ok and "planned 3" in s.message for s in io.status), 30), \
            [s.message for s in io.status]
        assert node.alive()
    finally:
        io.close()


def test_a_camera_frame_cloud_is_planned_in_world_and_stage_timings_are_written(rclpy_context, start_node, tmp_path):
    """A cloud in a camera's optical frame, with world → camera on /tf_static, gets the plan its world-frame
    twin gets, published in world; a frame TF cannot reach is refused naming it; Ctrl-C leaves the timings file."""
    import numpy as np
    from rosio import RosIO, scene_cloud
    from std_msgs.msg import String
    from tf2_msgs.msg import TFMessage

    from threedmoe_ros.checkpoints import LIGHT_POLICY
    from threedmoe_ros.nodes import frames
    from threedmoe_ros.nodes.timings import STAGES
    from threedmoe_ros.sim.cameras import default_cameras

    timings = tmp_path / "timings.json"
    node = start_node("policy_node", {"checkpoint": str(LIGHT_POLICY), "seed": 0, "timings_path": str(timings),
                                      "status_period_s": 0.5}, name="policy")
    io = RosIO(rclpy_context, reliable_points=True)
    front = default_cameras()[0]
    camera = np.eye(4)
    camera[:3, :3], camera[:3, 3] = front.rotation(), front.eye
    tf_static = io.node.create_publisher(TFMessage, "/tf_static", frames.TF_STATIC_QOS)
    tf_static.publish(TFMessage(transforms=[frames.transform_msg("world", "front_camera_optical_frame", camera)]))
    try:
        assert io.wait_for_subscriber("points"), node.log
        io.instruction.publish(String(data=GOOD))
        world = scene_cloud(10**9)
        in_camera = frames.transform_cloud(scene_cloud(2 * 10**9), np.linalg.inv(camera), "front_camera_optical_frame")
        assert np.abs(in_camera.xyz[:, 2]).min() > 0.3  # really in the camera's frame: z is the distance ahead
        plans = []
        for cloud in (world, in_camera):
            io.points.publish(conv.cloud_to_msg(cloud))
            assert io.spin_until(lambda: io.plans_for(cloud.stamp_ns), 60), node.log
            plans.append(io.plans_for(cloud.stamp_ns)[0])
        assert [p.header.frame_id for p in plans] == ["world", "world"]
        np.testing.assert_allclose(conv.plan_from_msg(plans[1]), conv.plan_from_msg(plans[0]), atol=1e-3)

        lidar = scene_cloud(3 * 10**9)
        lidar.frame_id = "lidar"
        io.points.publish(conv.cloud_to_msg(lidar))
        assert io.spin_until(lambda: any(not s.ok and "'lidar'" in s.message for s in io.status), 30), node.log
        refusal = next(s.message for s in io.status if not s.ok and "'lidar'" in s.message)
        assert "no transform from 'lidar' to 'world'" in refusal and "front_camera_optical_frame" in refusal, refusal
        assert not io.plans_for(lidar.stamp_ns)
    finally:
        io.close()
    assert node.stop() == 0, node.log
    assert node.log.count("policy ready: ") == 1 and "world frame 'world'" in node.log, node.log
    record = json.loads(timings.read_text())
    assert record["stages"] == list(STAGES)
    assert [p["stamp_ns"] for p in record["plans"]] == [10**9, 2 * 10**9]
    for plan in record["plans"]:
        assert all(plan[f"{stage}_ms"] >= 0 for stage in STAGES) and plan["callback_wall_ns"] > 0, plan
    assert record["plans"][0]["transform_ms"] < record["plans"][1]["transform_ms"]  # the world cloud needs no TF


@pytest.mark.parametrize("params, remaps", [
    ({}, {"points": "/camera/points"}),  # a remap for every node of the process, as launch remappings are
    ({}, {"policy:points": "/camera/points"}),  # a remap for the policy node alone
    ({"points_topic": "/camera/points"}, {}),
])
def test_the_clouds_topic_reaches_the_helper_node_however_it_is_set(rclpy_context, start_node, params, remaps):
    """Clouds come in on the helper node `policy_points` (an executor of their own). Whether the topic is
    remapped for the process, remapped for the policy node alone, or set by `points_topic`, the helper
    takes it, and both nodes keep their own names although the launcher renamed the process's node
    (`__node:=policy`)."""
    import time

    from rosio import RosIO, scene_cloud
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    from threedmoe_ros.checkpoints import LIGHT_POLICY

    node = start_node("policy_node", {"checkpoint": str(LIGHT_POLICY), "seed": 0, **params}, name="policy",
                      remaps=remaps)
    io = RosIO(rclpy_context, reliable_points=True)
    camera = io.node.create_publisher(PointCloud2, "/camera/points", 10)
    try:
        assert io.spin_until(lambda: io.node.count_subscribers("/camera/points") > 0, 60), node.log
        assert io.node.count_subscribers("points") == 0
        assert {"policy", "policy_points"} <= {name for name, _ in io.node.get_node_names_and_namespaces()}
        io.instruction.publish(String(data=GOOD))
        stamp, deadline = 10**9, time.monotonic() + 60
        while not io.plans_for(stamp) and time.monotonic() < deadline:  # until the subscription has matched
            camera.publish(conv.cloud_to_msg(scene_cloud(stamp)))
            io.spin_until(lambda: io.plans_for(stamp), 1.0)
        assert io.plans_for(stamp), node.log
        assert node.log.count("policy ready: ") == 1 and "points on /camera/points" in node.log
    finally:
        io.close()


@pytest.mark.parametrize("grouping", ["auto", "labels"])
def test_a_cloud_without_labels_is_segmented_or_refused_as_grouping_says(rclpy_context, start_node, grouping):
    """A camera's cloud has no label field: with grouping auto the node finds the objects by segmentation
    and plans in the workspace; with grouping labels it refuses the cloud on `status`, saying why."""
    from rosio import RosIO, scene_cloud
    from std_msgs.msg import String

    from threedmoe_ros.checkpoints import LIGHT_POLICY
    from threedmoe_ros.types import Cloud

    node = start_node("policy_node", {"checkpoint": str(LIGHT_POLICY), "seed": 0, "grouping": grouping})
    io = RosIO(rclpy_context, reliable_points=True)
    try:
        assert io.spin_until(lambda: io.node.count_subscribers("points") > 0, 60), node.log
        io.instruction.publish(String(data=GOOD))
        labelled = scene_cloud(10**9)
        bare = Cloud(labelled.xyz, labelled.rgb, None, "world", labelled.stamp_ns)
        refused = lambda: any(not s.ok and "no instance labels" in s.message for s in io.status)  # noqa: E731
        done = (lambda: io.plans_for(10**9)) if grouping == "auto" else refused
        for _ in range(60):
            io.points.publish(conv.cloud_to_msg(bare))
            if io.spin_until(done, 1.0):
                break
        if grouping == "auto":
            (plan,) = io.plans_for(10**9)[:1]
            poses = conv.plan_from_msg(plan)
            assert len(poses) and validate_plan(poses) == "", node.log
        else:
            assert refused(), node.log
            assert not io.plans_for(10**9)
    finally:
        io.close()


def test_the_answer_topic_returns_the_answers_table_1_scores(rclpy_context, start_node, tmp_path):
    """A 3D-MoE policy with a trained top answers each question on `answer` with what Stage II's scorer
    (train/stage2.score, the Table 1 bench's) gives for the same scene and question."""
    import torch
    from rosio import RosIO
    from std_msgs.msg import String

    from threedmoe_ros.data.qa import generate
    from threedmoe_ros.models.lm_condition import LMConditionConfig, LMConditionEncoder
    from threedmoe_ros.policy import Policy, PolicyConfig
    from threedmoe_ros.train.stage2 import Questions, lower_states, score

    generate(tmp_path / "qa", ["put-block-in-bowl"], [0], progress=False)
    config = LMConditionConfig(llm="tiny", layer=2, tune_layers=1, moe="e2-top2", lora="tiny")
    torch.manual_seed(0)
    encoder = LMConditionEncoder(config)
    encoder.align.normal_(0, 1.0)
    data = Questions(tmp_path / "qa", encoder.light.config, limit=4)
    states = lower_states(encoder, data, progress=False)
    opt = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(60):  # enough that the answers are words, not the random LM's noise
        loss, _ = encoder.qa_loss(states)
        opt.zero_grad()
        loss.backward()
        opt.step()
    Policy(PolicyConfig(encoder="lm", encoder_config=dataclasses.asdict(config)), encoder=encoder).save_pretrained(
        tmp_path / "policy")
    scored = score(Policy.from_pretrained(tmp_path / "policy").encoder, data, progress=False)["predictions"]
    assert any(p["prediction"] for p in scored)

    node = start_node("policy_node", {"checkpoint": str(tmp_path / "policy"), "seed": 0})
    io = RosIO(rclpy_context, reliable_points=True)
    answers: list[str] = []
    io.node.create_subscription(String, "answer", lambda m: answers.append(m.data), 10)
    question = io.node.create_publisher(String, "question", 10)
    try:
        assert io.spin_until(lambda: io.node.count_subscribers("question") > 0, 120), node.log
        cloud = data._data.cloud(data.records[0]["scene"])
        for i, record in enumerate(data.records):
            assert record["scene"] == data.records[0]["scene"]  # one scene: its cloud is the node's newest
            for _ in range(60):
                io.points.publish(conv.cloud_to_msg(cloud))
                question.publish(String(data=record["question"]))
                if io.spin_until(lambda: len(answers) > i, 1.0):
                    break
            del answers[i + 1:]  # a repeated question while the first was answered
        assert answers == [p["prediction"] for p in scored], node.log
    finally:
        io.close()
