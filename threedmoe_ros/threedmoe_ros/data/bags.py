"""rosbag2 (mcap) episodes without ROS: the project's message types in a `rosbags` typestore,
and data/messages.py's builders bound to its classes.

Bags written here are ordinary rosbag2 bags: `ros2 bag info/play` reads them on a workstation, and
rclpy deserialises their CDR payloads into the generated threedmoe_msgs classes (tested).
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from threedmoe_ros.data.messages import Messages, outcome_from_msg, plan_from_msg, stamp_ns  # noqa: F401 (re-exported)

MSGS_PACKAGE = "threedmoe_msgs"

# Topic → message type of an episode bag (the recorder node writes the same names over ROS).
TOPICS = {
    "/points": "sensor_msgs/msg/PointCloud2",
    "/instruction": "std_msgs/msg/String",
    "/pick_place_plan": "threedmoe_msgs/msg/PickPlacePlan",
    "/joint_states": "sensor_msgs/msg/JointState",
    "/episode_result": "threedmoe_msgs/msg/EpisodeResult",
}
# The recorder also keeps the simulator's clock, so `ros2 bag play` can serve it (--clock is not needed).
RECORDED_TOPICS = {**TOPICS, "/clock": "rosgraph_msgs/msg/Clock"}


def qos(depth: int, reliable: bool = True, latched: bool = False) -> Qos:
    """A QoS profile as rosbag2 writes it into metadata.yaml (offered_qos_profiles). `ros2 bag play`
    republishes each topic with it: a latched (transient-local) topic stays latched on playback."""
    forever = QosTime(sec=9223372036, nsec=854775807)  # what rmw reports for "no deadline/lifespan"
    return Qos(history=QosHistory.KEEP_LAST, depth=depth,
               reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
               deadline=forever, lifespan=forever, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=forever, avoid_ros_namespace_conventions=False)


# What the project's publishers offer on each topic (nodes/common.py, the sim bridge): what a bag
# written without ROS records, and what the recorder records when it cannot ask the publishers.
OFFERED_QOS = {
    "/points": qos(5),
    "/instruction": qos(1, latched=True),
    "/pick_place_plan": qos(1, latched=True),
    "/joint_states": qos(100),
    "/episode_result": qos(1000, latched=True),
    "/clock": qos(10),
}


def msg_dir() -> Path:
    """Directory holding threedmoe_msgs' .msg files: an installed share/ (ament prefix) or the source tree."""
    candidates = [Path(p) / "share" / MSGS_PACKAGE / "msg" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates.append(Path(__file__).resolve().parents[3] / MSGS_PACKAGE / "msg")
    for path in candidates:
        if (path / "PickPlacePlan.msg").is_file():
            return path
    raise FileNotFoundError(
        f"cannot find {MSGS_PACKAGE}/msg/*.msg in {[str(c) for c in candidates]}; "
        "build threedmoe_msgs (make setup) or source its install/setup.bash"
    )


@lru_cache(maxsize=1)
def typestore():
    """A Jazzy typestore that also knows threedmoe_msgs' messages."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for path in sorted(msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{MSGS_PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


def leading_stamp_ns(msgtype: str, cdr: bytes) -> int | None:
    """The time a serialised message starts with (a std_msgs/Header, or builtin_interfaces/Time as in
    /clock), read from its CDR without deserialising a whole cloud; None when it starts with neither."""
    first = typestore().fielddefs[msgtype][1][0][1]
    if first[1] not in ("std_msgs/msg/Header", "builtin_interfaces/msg/Time"):
        return None
    # A 4-byte encapsulation header, then int32 sec, uint32 nanosec. Plain CDR and XCDR2 (0x0000/1,
    # 0x0006/7; odd = little endian) lay out a ROS message alike; another encoding: no stamp read.
    kind = int.from_bytes(cdr[:2], "big")
    if kind not in (0x0000, 0x0001, 0x0006, 0x0007) or len(cdr) < 12:
        return None
    sec, nanosec = struct.unpack_from("<iI" if kind & 1 else ">iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec


# ---------------------------------------------------------------- numpy → rosbags messages

# The builders the nodes use too (data/messages.py), with the typestore's classes; rosbags serialises
# a numeric sequence by viewing a numpy array's bytes, so arrays stay numpy. The names below are the
# ones episode writers call.
ROSBAGS = Messages(lambda name: typestore().types[name], np.ascontiguousarray)
cloud_msg = ROSBAGS.cloud
string_msg = ROSBAGS.string
plan_msg = ROSBAGS.plan
joint_state_msg = ROSBAGS.joint_state
result_msg = ROSBAGS.episode_result


# ---------------------------------------------------------------- episode bags


class EpisodeWriter:
    """Writes one episode as a rosbag2 (mcap) directory.

    Use as a context manager: the bag is closed — and readable — whether the block ends normally,
    by an exception or by KeyboardInterrupt.
    """

    def __init__(self, path: str | Path):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"bag {self.path} already exists; choose another output directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {}

    def write(self, topic: str, msg, ns: int) -> None:
        msgtype = RECORDED_TOPICS.get(topic) or msg.__msgtype__
        self.write_raw(topic, msgtype, typestore().serialize_cdr(msg, msgtype), ns)

    def write_raw(self, topic: str, msgtype: str, cdr: bytes, ns: int, offered_qos: list[Qos] | None = None) -> None:
        """Write an already serialised CDR payload (what a ROS subscription with raw=True delivers).

        offered_qos: the QoS of the topic's publishers, kept in metadata.yaml for `ros2 bag play`
        (default: OFFERED_QOS, what this project's publishers offer). Read at a topic's first message.
        """
        if topic not in self._connections:
            if offered_qos is None:
                offered_qos = [OFFERED_QOS[topic]] if topic in OFFERED_QOS else []
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=typestore(), offered_qos_profiles=offered_qos)
        self._writer.write(self._connections[topic], int(ns), bytes(cdr))

    def has_topic(self, topic: str) -> bool:
        return topic in self._connections

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_messages(path: str | Path, topics: list[str] | None = None):
    """Yield (topic, timestamp_ns, message) from a rosbag2 bag, deserialised with our typestore."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise FileNotFoundError(f"{path} is not a rosbag2 directory (no metadata.yaml); was the recording interrupted before it closed?")
    store = typestore()
    with Reader(path) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        if not connections:
            return  # rosbags reads every connection when given none: a bag without these topics yields nothing
        for conn, ns, raw in reader.messages(connections=connections):
            yield conn.topic, ns, store.deserialize_cdr(raw, conn.msgtype)
