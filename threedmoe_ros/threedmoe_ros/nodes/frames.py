"""TF for the nodes: where a frame is relative to the world, and clouds moved between frames.

On a workstation `tf_listener(node)` wraps tf2_ros (Buffer + TransformListener). tf2_ros has no
PyPI wheel, so elsewhere it is `TfListener`: the same two subscriptions (`/tf_static` reliable and
transient-local, so a late joiner still gets the mounts; `/tf` as tf2 subscribes it) feeding a
`TransformTree`, which keeps each frame's link to its parent (static ones and the latest dynamic
one) and composes a chain by walking from both frames up to a common ancestor. No interpolation
and no history: a lookup gives the latest transform, in both implementations, which is exact for
a fixed camera and lags a moving one by its last /tf period.

Matrices are 4×4 homogeneous, float64; `lookup(target, source)` is tf2's: it maps points given in
`source` into `target` (p_target = T @ p_source). Quaternions are ROS order (x, y, z, w);
transforms3d wants w first.
"""

from __future__ import annotations

import threading

import numpy as np
import transforms3d
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from threedmoe_ros.nodes import conversions as conv
from threedmoe_ros.types import Cloud, InputError

# tf2_ros's own profiles: static transforms are published once and latched; /tf is a stream.
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def matrix(translation, quaternion_xyzw) -> np.ndarray:
    """(3,) translation + (4,) quaternion (x, y, z, w) → (4, 4) homogeneous transform."""
    x, y, z, w = np.asarray(quaternion_xyzw, dtype=np.float64)
    t = np.eye(4)
    t[:3, :3] = transforms3d.quaternions.quat2mat([w, x, y, z])  # normalises the quaternion
    t[:3, 3] = translation
    return t


def matrix_from_msg(transform) -> np.ndarray:
    """geometry_msgs/Transform → (4, 4)."""
    v, q = transform.translation, transform.rotation
    return matrix((v.x, v.y, v.z), (q.x, q.y, q.z, q.w))


def transform_msg(parent: str, child: str, t: np.ndarray, ns: int = 0) -> TransformStamped:
    """(4, 4) pose of `child` in `parent` → TransformStamped, as /tf and /tf_static carry them."""
    msg = TransformStamped(header=conv.header(ns, parent), child_frame_id=child)
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (float(v) for v in t[:3, 3])
    w, x, y, z = transforms3d.quaternions.mat2quat(t[:3, :3])
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = float(x), float(y), float(z), float(w)
    return msg


def transform_cloud(cloud: Cloud, t: np.ndarray, frame_id: str) -> Cloud:
    """`cloud` with its points mapped by `t` (into `frame_id`); colours, labels and stamp unchanged.
    NaN and inf stay non-finite (and overflow becomes inf), so the validator still drops them."""
    with np.errstate(over="ignore", invalid="ignore"):
        xyz = cloud.xyz.astype(np.float64) @ t[:3, :3].T + t[:3, 3]
    return Cloud(xyz, cloud.rgb, cloud.label, frame_id, cloud.stamp_ns)


class TransformTree:
    """child frame → (parent frame, (4, 4) pose of the child in the parent), and chains through them."""

    def __init__(self):
        self._links: dict[str, tuple[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def set(self, parent: str, child: str, t: np.ndarray) -> None:
        with self._lock:  # a newer transform of the same child replaces the old one (tf2: one parent per frame)
            self._links[child] = (parent, t)

    def frames(self) -> list[str]:
        with self._lock:
            return sorted(set(self._links) | {parent for parent, _ in self._links.values()})

    def _up(self, frame: str) -> dict[str, np.ndarray]:
        """Every frame from `frame` up to its root → the (4, 4) mapping `frame`'s points into it, in order."""
        chain, t = {frame: np.eye(4)}, np.eye(4)
        with self._lock:
            while frame in self._links:
                frame, link = self._links[frame]
                if frame in chain:  # a cycle in what was published: stop at the repeat
                    break
                t = link @ t
                chain[frame] = t
        return chain

    def lookup(self, target: str, source: str) -> np.ndarray:
        """(4, 4) mapping points in `source` into `target`; InputError naming both frames and what is known."""
        from_source, from_target = self._up(source), self._up(target)
        common = next((f for f in from_target if f in from_source), None)  # the lowest common ancestor
        if common is None:
            known = self.frames()
            knows = f"TF knows frames {known}" if known else "TF knows no frames (is anything publishing /tf_static or /tf?)"
            raise InputError(f"no transform from '{source}' to '{target}': {knows}")
        return np.linalg.inv(from_target[common]) @ from_source[common]


class TfListener:
    """/tf_static and /tf into a TransformTree (where tf2_ros is not installed)."""

    def __init__(self, node: Node, callback_group=None):
        self.tree = TransformTree()
        self._node = node
        self._subs = [node.create_subscription(TFMessage, "/tf_static", self._on_tf, TF_STATIC_QOS, callback_group=callback_group),
                      node.create_subscription(TFMessage, "/tf", self._on_tf, TF_QOS, callback_group=callback_group)]

    def _on_tf(self, msg: TFMessage) -> None:
        for t in msg.transforms:
            self.tree.set(t.header.frame_id, t.child_frame_id, matrix_from_msg(t.transform))

    def lookup(self, target: str, source: str) -> np.ndarray:
        return self.tree.lookup(target, source)

    def destroy(self) -> None:
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs = []


class Tf2Listener:
    """tf2_ros's Buffer and TransformListener behind the same two calls."""

    def __init__(self, node: Node, tf2_ros):
        self._tf2 = tf2_ros
        self.buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self.buffer, node)

    def lookup(self, target: str, source: str) -> np.ndarray:
        from rclpy.time import Time

        try:
            t = self.buffer.lookup_transform(target, source, Time())  # Time() = the latest
        except self._tf2.TransformException as exc:
            raise InputError(f"no transform from '{source}' to '{target}': {exc}") from None
        return matrix_from_msg(t.transform)

    def destroy(self) -> None:
        self._listener.unregister()


def tf_listener(node: Node, callback_group=None) -> TfListener | Tf2Listener:
    """tf2_ros where it is installed (a workstation), else our TfListener (PyPI wheels)."""
    try:
        import tf2_ros
    except ImportError:
        return TfListener(node, callback_group)
    return Tf2Listener(node, tf2_ros)
