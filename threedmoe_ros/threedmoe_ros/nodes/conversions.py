"""rclpy messages ↔ the core's numpy types. With nodes/, the only code that imports message classes.

The PointCloud2 layout logic lives in data/pointcloud2.py (shared with the bag reader); this module
only builds and reads the rclpy message objects around it.
"""

from __future__ import annotations

import struct

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseArray, Quaternion
from sensor_msgs.msg import JointState, PointCloud2, PointField
from std_msgs.msg import Header
from threedmoe_msgs.msg import EpisodeResult, InputStatus, PickPlace, PickPlacePlan
from visualization_msgs.msg import Marker, MarkerArray

from threedmoe_ros.data import pointcloud2
from threedmoe_ros.data.bags import outcome_from_msg, plan_from_msg, pose_array, stamp_ns  # noqa: F401 (re-exported)
from threedmoe_ros.types import PICK, PLACE, Cloud, EpisodeOutcome, as_plan
from threedmoe_ros.validation import MAX_POINTS, InputError
from threedmoe_ros.workspace import WORKSPACE_CENTER


def time_msg(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def header(ns: int, frame_id: str = "world") -> Header:
    return Header(stamp=time_msg(ns), frame_id=frame_id)


def cloud_to_msg(cloud: Cloud, ns: int | None = None) -> PointCloud2:
    f = pointcloud2.encode_fields(cloud)
    msg = PointCloud2(
        header=header(cloud.stamp_ns if ns is None else ns, cloud.frame_id),
        height=f["height"], width=f["width"], is_bigendian=f["is_bigendian"], point_step=f["point_step"],
        row_step=f["row_step"], is_dense=f["is_dense"],
        fields=[PointField(name=x.name, offset=x.offset, datatype=x.datatype, count=x.count) for x in f["fields"]],
    )
    msg.data = f["data"]  # bytes: the generated setter takes them without a per-byte copy
    return msg


def msg_to_cloud(msg: PointCloud2, max_points: int = MAX_POINTS) -> Cloud:
    """Raises validation.InputError naming the problem."""
    cloud = pointcloud2.decode(msg, max_points=max_points)
    cloud.stamp_ns = stamp_ns(msg.header)
    return cloud


# CDR encapsulation ids (XTypes 1.3, 7.6.3.1.2) that std_msgs/String can arrive in: plain CDR and
# XCDR2 (same layout for a final struct), and delimited XCDR2 (a 4-byte size header first).
_PLAIN_CDR = {0x0000: ">", 0x0001: "<", 0x0006: ">", 0x0007: "<"}
_DELIMITED_CDR = {0x0008: ">", 0x0009: "<"}


def text_from_cdr(raw: bytes, what: str = "instruction") -> str:
    """A serialized std_msgs/String → its text, exactly as sent; InputError when it is not valid UTF-8.

    rclpy's own conversion stops at the first NUL (C strlen) and replaces invalid UTF-8 with
    U+FFFD, so "put the red\\0 block" would silently become "put the red". Subscribing with
    raw=True and decoding here keeps the NUL for the validator to refuse.
    """
    raw = bytes(raw)
    if len(raw) < 8:
        raise InputError(f"{what} message is {len(raw)} bytes, too short for a serialized std_msgs/String")
    kind = int.from_bytes(raw[:2], "big")
    start = 4
    if kind in _DELIMITED_CDR:
        order, start = _DELIMITED_CDR[kind], 8
    elif kind in _PLAIN_CDR:
        order = _PLAIN_CDR[kind]
    else:
        raise InputError(f"{what} message has CDR encapsulation 0x{kind:04x}, which is not a std_msgs/String layout")
    if len(raw) < start + 4:
        raise InputError(f"{what} message is truncated")
    (length,) = struct.unpack_from(order + "I", raw, start)
    body = raw[start + 4 : start + 4 + length]
    if len(body) < length:
        raise InputError(f"{what} message is truncated: it announces {length} bytes of text, {len(body)} arrived")
    if body.endswith(b"\0"):
        body = body[:-1]  # the CDR terminator, not part of the text
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not valid UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start}); send UTF-8 text") from None


def pose_msg(p: np.ndarray) -> Pose:
    return Pose(
        position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])),
        orientation=Quaternion(x=float(p[3]), y=float(p[4]), z=float(p[5]), w=float(p[6])),
    )


def plan_to_msg(plan: np.ndarray, instruction: str, ns: int, inference_ms: float = 0.0, model_id: str = "",
                frame_id: str = "world") -> PickPlacePlan:
    steps = [PickPlace(pick=pose_msg(s[PICK]), place=pose_msg(s[PLACE])) for s in as_plan(plan)] if len(plan) else []
    return PickPlacePlan(header=header(ns, frame_id), instruction=instruction, steps=steps,
                         inference_ms=float(inference_ms), model_id=model_id)


def plan_to_pose_array(plan: np.ndarray, ns: int, frame_id: str = "world") -> PoseArray:
    """Picks and places interleaved (pick 0, place 0, pick 1, ...), for RViz."""
    poses = [pose_msg(p) for step in (as_plan(plan) if len(plan) else []) for p in step]
    return PoseArray(header=header(ns, frame_id), poses=poses)


def plan_to_markers(plan: np.ndarray, ns: int, frame_id: str = "world", instruction: str = "") -> MarkerArray:
    """An arrow from each pick to its place and a numbered label per step, and the instruction as text
    above the workspace; clears the last plan's."""
    markers = [Marker(header=header(ns, frame_id), ns="pick_place", action=Marker.DELETEALL)]
    if instruction:
        text = Marker(header=header(ns, frame_id), ns="instruction", id=0, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, text=instruction)
        text.pose.position.x, text.pose.position.z = float(WORKSPACE_CENTER[0]), 0.4
        text.pose.orientation.w = 1.0
        text.scale.z = 0.04
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        markers.append(text)
    for k, step in enumerate(as_plan(plan) if len(plan) else []):
        arrow = Marker(header=header(ns, frame_id), ns="pick_place", id=2 * k, type=Marker.ARROW, action=Marker.ADD)
        arrow.points = [Point(x=float(step[PICK, 0]), y=float(step[PICK, 1]), z=float(step[PICK, 2])),
                        Point(x=float(step[PLACE, 0]), y=float(step[PLACE, 1]), z=float(step[PLACE, 2]))]
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.008, 0.016, 0.02
        arrow.color.r, arrow.color.g, arrow.color.b, arrow.color.a = 1.0, 0.5 * (k > 0), 0.1, 0.9
        arrow.pose.orientation.w = 1.0
        label = Marker(header=header(ns, frame_id), ns="pick_place", id=2 * k + 1, type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, text=str(k), pose=pose_msg(step[PICK]))
        label.pose.position.z += 0.05
        label.scale.z = 0.04
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        markers += [arrow, label]
    return MarkerArray(markers=markers)


def outcome_to_msg(outcome: EpisodeOutcome, ns: int) -> EpisodeResult:
    return EpisodeResult(
        header=header(ns), task=outcome.task, seed=int(outcome.seed), instruction=outcome.instruction,
        unseen_colors=bool(outcome.unseen_colors), steps_taken=int(outcome.steps_taken), reward=float(outcome.reward),
        success=bool(outcome.success), reason=outcome.reason, detail=outcome.detail,
    )


def joint_state_msg(names: list[str], positions: np.ndarray, ns: int) -> JointState:
    return JointState(header=header(ns, ""), name=list(names), position=[float(q) for q in positions])


def status_msg(topic: str, ok: bool, message: str, ns: int) -> InputStatus:
    return InputStatus(header=header(ns, ""), topic=topic, ok=ok, message=message)
