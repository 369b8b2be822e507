"""rclpy messages ↔ the core's numpy types. With nodes/, the only code that imports message classes.

The builders and readers are data/messages.py's, shared with the bag writer; here they are bound to
rclpy's generated classes. What only the nodes need stays here: the RViz views of a plan, and reading
a std_msgs/String from its raw CDR.
"""

from __future__ import annotations

import array
import struct

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseArray, Quaternion
from sensor_msgs.msg import JointState, PointCloud2, PointField
from std_msgs.msg import Header, String
from threedmoe_msgs.msg import EpisodeResult, InputStatus, PickPlace, PickPlacePlan
from visualization_msgs.msg import Marker, MarkerArray

from threedmoe_ros.data.messages import Messages, msg_to_cloud, outcome_from_msg, plan_from_msg, stamp_ns  # noqa: F401 (re-exported)
from threedmoe_ros.types import PICK, PLACE, as_plan
from threedmoe_ros.validation import InputError
from threedmoe_ros.workspace import WORKSPACE_CENTER


# The classes data/messages.py builds with, by ROS type name: geometry_msgs.msg.Pose → "geometry_msgs/msg/Pose".
_CLASSES = {f"{c.__module__.split('.')[0]}/msg/{c.__name__}": c
            for c in (Time, Header, String, Point, Quaternion, Pose, PointField, PointCloud2, JointState,
                      PickPlace, PickPlacePlan, EpisodeResult, InputStatus)}
# rclpy keeps a numeric sequence as an array.array: handed one of the field's type code it copies the
# buffer whole instead of converting element by element (a cloud's data: ~16 bytes a point).
def _rclpy_array(a) -> array.array:
    out = array.array(a.dtype.char)
    out.frombytes(memoryview(np.ascontiguousarray(a)).cast("B"))  # one copy, from the numpy buffer (tobytes made two)
    return out


RCLPY = Messages(_CLASSES.__getitem__, _rclpy_array)
time_msg = RCLPY.time
header = RCLPY.header
cloud_to_msg = RCLPY.cloud
plan_to_msg = RCLPY.plan
outcome_to_msg = RCLPY.episode_result
joint_state_msg = RCLPY.joint_state
status_msg = RCLPY.input_status


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


def plan_to_pose_array(plan: np.ndarray, ns: int, frame_id: str = "world") -> PoseArray:
    """Picks and places interleaved (pick 0, place 0, pick 1, ...), for RViz."""
    poses = [RCLPY.pose(p) for step in (as_plan(plan) if len(plan) else []) for p in step]
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
                       action=Marker.ADD, text=str(k), pose=RCLPY.pose(step[PICK]))
        label.pose.position.z += 0.05
        label.scale.z = 0.04
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        markers += [arrow, label]
    return MarkerArray(markers=markers)
