"""The project's ROS messages ↔ its numpy types, once for both Python bindings of ROS messages.

The bag writer (data/bags.py: `rosbags` dataclasses, no ROS needed) and the nodes (nodes/conversions.py:
rclpy's generated classes) send the same messages, so one `Messages` builds them, told where its
binding keeps the classes and how it holds a numeric array. Reading needs no binding: both kinds of
message are read by attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from threedmoe_ros.data import pointcloud2
from threedmoe_ros.types import PICK, PLACE, Cloud, EpisodeOutcome, as_plan
from threedmoe_ros.validation import MAX_POINTS


@dataclass(frozen=True)
class Messages:
    """Builders of one binding's messages. Every field is given: rosbags' dataclasses have no defaults."""

    classes: Callable[[str], type]  # a ROS type name ("geometry_msgs/msg/Pose") → the binding's class
    array: Callable[[np.ndarray], object]  # numpy → what the binding holds in a uint8[] / float64[] field

    def time(self, ns: int):
        return self.classes("builtin_interfaces/msg/Time")(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))

    def header(self, ns: int, frame_id: str = "world"):
        return self.classes("std_msgs/msg/Header")(stamp=self.time(ns), frame_id=frame_id)

    def cloud(self, cloud: Cloud, ns: int | None = None):
        """ns: the stamp, when not the cloud's own."""
        f = pointcloud2.encode_fields(cloud)
        PointField = self.classes("sensor_msgs/msg/PointField")
        return self.classes("sensor_msgs/msg/PointCloud2")(
            header=self.header(cloud.stamp_ns if ns is None else ns, cloud.frame_id),
            height=f["height"], width=f["width"],
            fields=[PointField(name=x.name, offset=x.offset, datatype=x.datatype, count=x.count) for x in f["fields"]],
            is_bigendian=f["is_bigendian"], point_step=f["point_step"], row_step=f["row_step"],
            data=self.array(np.frombuffer(f["data"], dtype=np.uint8)), is_dense=f["is_dense"],
        )

    def string(self, text: str):
        return self.classes("std_msgs/msg/String")(data=text)

    def pose(self, p: np.ndarray):
        """p: (7,) position xyz, then quaternion xyzw."""
        Point, Quaternion = self.classes("geometry_msgs/msg/Point"), self.classes("geometry_msgs/msg/Quaternion")
        return self.classes("geometry_msgs/msg/Pose")(
            position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])),
            orientation=Quaternion(x=float(p[3]), y=float(p[4]), z=float(p[5]), w=float(p[6])),
        )

    def plan(self, plan: np.ndarray, instruction: str, ns: int, inference_ms: float = 0.0, model_id: str = "",
             frame_id: str = "world"):
        """plan: (T, 2, 7) pick and place poses per step; T may be 0."""
        PickPlace = self.classes("threedmoe_msgs/msg/PickPlace")
        steps = [PickPlace(pick=self.pose(s[PICK]), place=self.pose(s[PLACE])) for s in as_plan(plan)] if len(plan) else []
        return self.classes("threedmoe_msgs/msg/PickPlacePlan")(
            header=self.header(ns, frame_id), instruction=instruction, steps=steps,
            inference_ms=float(inference_ms), model_id=model_id,
        )

    def joint_state(self, names: list[str], positions: np.ndarray, ns: int):
        return self.classes("sensor_msgs/msg/JointState")(
            header=self.header(ns, ""), name=list(names),
            position=self.array(np.ascontiguousarray(positions, dtype=np.float64)),
            velocity=self.array(np.zeros(0)), effort=self.array(np.zeros(0)),
        )

    def episode_result(self, outcome: EpisodeOutcome, ns: int):
        return self.classes("threedmoe_msgs/msg/EpisodeResult")(
            header=self.header(ns), task=outcome.task, seed=int(outcome.seed), instruction=outcome.instruction,
            unseen_colors=bool(outcome.unseen_colors), steps_taken=int(outcome.steps_taken),
            reward=float(outcome.reward), success=bool(outcome.success), reason=outcome.reason, detail=outcome.detail,
        )

    def input_status(self, topic: str, ok: bool, message: str, ns: int):
        return self.classes("threedmoe_msgs/msg/InputStatus")(header=self.header(ns, ""), topic=topic, ok=ok, message=message)


# ---------------------------------------------------------------- messages (either binding) → numpy


def stamp_ns(msg_header) -> int:
    return int(msg_header.stamp.sec) * 1_000_000_000 + int(msg_header.stamp.nanosec)


def msg_to_cloud(msg, max_points: int = MAX_POINTS) -> Cloud:
    """A PointCloud2 → Cloud, stamped with its header. Raises validation.InputError naming the problem."""
    cloud = pointcloud2.decode(msg, max_points=max_points)
    cloud.stamp_ns = stamp_ns(msg.header)
    return cloud


def pose_array(pose) -> np.ndarray:
    p, q = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float64)


def plan_from_msg(msg) -> np.ndarray:
    """PickPlacePlan → plan array (T, 2, 7)."""
    if not msg.steps:
        return np.zeros((0, 2, 7))
    return np.stack([np.stack([pose_array(s.pick), pose_array(s.place)]) for s in msg.steps])


def outcome_from_msg(msg) -> EpisodeOutcome:
    return EpisodeOutcome(
        task=msg.task, seed=int(msg.seed), instruction=msg.instruction, unseen_colors=bool(msg.unseen_colors),
        steps_taken=int(msg.steps_taken), reward=float(msg.reward), success=bool(msg.success),
        reason=msg.reason, detail=msg.detail,
    )
