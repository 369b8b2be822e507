"""TF without tf2_ros (nodes/frames.py): chains compose through a common ancestor in either
direction, a frame TF cannot reach is an error naming it and the frames TF knows, clouds move
between frames, and the listener hears /tf_static (latched) and the latest /tf."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import transforms3d

from threedmoe_ros.nodes import frames
from threedmoe_ros.types import Cloud, InputError


def pose(xyz, axis, angle) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = transforms3d.axangles.axangle2mat(axis, angle), xyz
    return t


# world → base_link → camera_link → camera_optical_frame, and a gripper beside the camera.
BASE = pose((0.1, -0.2, 0.05), (0, 0, 1), 0.3)
CAMERA = pose((0.4, 0.0, 0.6), (0, 1, 0), 1.1)
OPTICAL = pose((0, 0, 0), (1, -1, 1), 2 * np.pi / 3)  # x forward, z up → z forward, y down
GRIPPER = pose((0.5, 0.1, 0.3), (1, 0, 0), np.pi)


@pytest.fixture
def tree() -> frames.TransformTree:
    tree = frames.TransformTree()
    tree.set("world", "base_link", BASE)
    tree.set("base_link", "camera_link", CAMERA)
    tree.set("camera_link", "camera_optical_frame", OPTICAL)
    tree.set("base_link", "gripper", GRIPPER)
    return tree


def test_a_chain_composes_link_by_link(tree):
    np.testing.assert_allclose(tree.lookup("world", "camera_link"), BASE @ CAMERA)
    np.testing.assert_allclose(tree.lookup("world", "camera_optical_frame"), BASE @ CAMERA @ OPTICAL)
    np.testing.assert_allclose(tree.lookup("world", "world"), np.eye(4))


def test_the_inverse_direction_and_a_sibling_go_through_the_common_ancestor(tree):
    np.testing.assert_allclose(tree.lookup("camera_optical_frame", "world"), np.linalg.inv(BASE @ CAMERA @ OPTICAL), atol=1e-12)
    np.testing.assert_allclose(tree.lookup("gripper", "camera_link"), np.linalg.inv(GRIPPER) @ CAMERA, atol=1e-12)


def test_a_frame_without_a_path_is_refused_naming_it_and_what_tf_knows(tree):
    with pytest.raises(InputError, match=r"no transform from 'lidar' to 'world': TF knows frames \[.*'camera_link'"):
        tree.lookup("world", "lidar")
    tree.set("map", "odom", np.eye(4))  # a second tree: no link between the two
    with pytest.raises(InputError, match="no transform from 'odom' to 'world'"):
        tree.lookup("world", "odom")
    with pytest.raises(InputError, match="TF knows no frames"):
        frames.TransformTree().lookup("world", "camera_optical_frame")


def test_a_newer_link_replaces_the_old_one(tree):
    moved = pose((0.2, 0, 0), (0, 0, 1), 0.0)
    tree.set("world", "base_link", moved)
    np.testing.assert_allclose(tree.lookup("world", "camera_link"), moved @ CAMERA)


def test_a_cloud_moves_into_a_frame_and_back():
    rng = np.random.default_rng(0)
    cloud = Cloud(rng.uniform(-1, 1, (50, 3)), rng.integers(0, 255, (50, 3)), np.arange(50), "camera_optical_frame", 7)
    t = BASE @ CAMERA @ OPTICAL
    world = frames.transform_cloud(cloud, t, "world")
    assert world.frame_id == "world" and world.stamp_ns == 7 and np.array_equal(world.label, cloud.label)
    np.testing.assert_allclose(world.xyz[3], (t @ np.r_[cloud.xyz[3], 1.0])[:3], atol=1e-6)
    back = frames.transform_cloud(world, np.linalg.inv(t), "camera_optical_frame")
    np.testing.assert_allclose(back.xyz, cloud.xyz, atol=1e-5)


def test_a_transform_message_round_trips():
    t = BASE @ CAMERA @ OPTICAL
    msg = frames.transform_msg("world", "camera_optical_frame", t, 5)
    assert (msg.header.frame_id, msg.child_frame_id) == ("world", "camera_optical_frame")
    np.testing.assert_allclose(frames.matrix_from_msg(msg.transform), t, atol=1e-12)


def test_tf2_ros_is_used_where_it_is_installed(monkeypatch):
    """A stand-in tf2_ros: the wrapper asks for the latest transform target ← source and turns
    tf2's exceptions into InputError."""
    t = BASE @ CAMERA
    asked = []

    class Buffer:
        def lookup_transform(self, target, source, time):
            asked.append((target, source, time.nanoseconds))
            if source != "camera_link":
                raise TransformException(f'"{source}" passed to lookupTransform argument source_frame does not exist')
            return frames.transform_msg(target, source, t)

    class TransformException(Exception):
        pass

    fake = types.SimpleNamespace(Buffer=Buffer, TransformException=TransformException,
                                 TransformListener=lambda buffer, node: types.SimpleNamespace(unregister=lambda: None))
    monkeypatch.setitem(sys.modules, "tf2_ros", fake)
    listener = frames.tf_listener(node=None)
    assert isinstance(listener, frames.Tf2Listener)
    np.testing.assert_allclose(listener.lookup("world", "camera_link"), t, atol=1e-12)
    with pytest.raises(InputError, match="no transform from 'lidar' to 'world': .*does not exist"):
        listener.lookup("world", "lidar")
    assert asked[0] == ("world", "camera_link", 0)  # Time() = the latest


@pytest.mark.ros
def test_the_listener_hears_latched_static_and_the_latest_dynamic_transforms(rclpy_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from tf2_msgs.msg import TFMessage

    talker = rclpy.create_node("tf_talker", context=rclpy_context)
    static = talker.create_publisher(TFMessage, "/tf_static", frames.TF_STATIC_QOS)
    dynamic = talker.create_publisher(TFMessage, "/tf", frames.TF_QOS)
    # Published before the listener exists: only transient-local durability gets it there.
    static.publish(TFMessage(transforms=[frames.transform_msg("world", "base_link", BASE),
                                         frames.transform_msg("base_link", "camera_link", CAMERA)]))
    node = rclpy.create_node("tf_listener", context=rclpy_context)
    listener = frames.TfListener(node)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(talker), executor.add_node(node)

    def spin_until(predicate, timeout=20.0):
        import time

        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        return predicate()

    try:
        assert spin_until(lambda: "camera_link" in listener.tree.frames())
        np.testing.assert_allclose(listener.lookup("world", "camera_link"), BASE @ CAMERA, atol=1e-9)
        for x in (0.1, 0.2, 0.3):  # a moving gripper: the latest counts
            dynamic.publish(TFMessage(transforms=[frames.transform_msg("base_link", "gripper", pose((x, 0, 0), (0, 0, 1), 0))]))
        assert spin_until(lambda: "gripper" in listener.tree.frames() and
                          abs(listener.lookup("base_link", "gripper")[0, 3] - 0.3) < 1e-9)
        listener.destroy()
    finally:
        node.destroy_node()
        talker.destroy_node()
