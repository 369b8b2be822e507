"""Recorder node: one rosbag2 (mcap) bag per episode, in the layout the offline collector writes.

Subscribes raw (serialised) messages, so what lands in the bag is byte for byte what was on the
wire. A bag opens at the first message of an episode and closes `linger_s` after its
`episode_result` (DDS does not order messages across topics, and a large cloud may be handed to us
after the small result), or at once when the next episode's instruction arrives; it is then renamed
to OUT/<task>/<split>/<seed> so the training dataset reads ROS-recorded and offline episodes alike.
On Ctrl-C or shutdown the open bag is closed (readable) and kept as OUT/partial/<n>.

Bag times are sim time, as in the offline collector's bags: a message's own stamp (its header, or
the time in /clock); the instruction, which has none, takes the newest stamp of its episode so far.
(The simulator's clock restarts with every episode, so the node's sim-time clock at the moment an
instruction arrives still reads the previous episode's end.) /clock is recorded too, and
metadata.yaml carries each topic's offered QoS as its publishers report it, so `ros2 bag play`
keeps `instruction` and `pick_place_plan` latched.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from threedmoe_msgs.msg import EpisodeResult

from threedmoe_ros.data.bags import RECORDED_TOPICS, EpisodeWriter, leading_stamp_ns
from threedmoe_ros.nodes import common
from threedmoe_ros.nodes.common import LATCHED, RESULTS

# A recorder must keep every message: deep queues, and reliable wherever publishers allow it.
QOS = {"/instruction": LATCHED, "/pick_place_plan": LATCHED, "/joint_states": QoSProfile(depth=1000),
       "/episode_result": RESULTS, "/clock": QoSProfile(depth=100)}
POINTS_QOS = {"sensor_data": QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT),
              "reliable": QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)}


def _message_class(msgtype: str):
    package, _, name = msgtype.split("/")
    module = __import__(f"{package}.msg", fromlist=[name])
    return getattr(module, name)


def _qos_time(duration: Duration) -> QosTime:
    sec, nsec = divmod(duration.nanoseconds, 1_000_000_000)
    return QosTime(sec=sec, nsec=nsec)


def bag_qos(profile: QoSProfile) -> Qos:
    """An rclpy QoS profile as rosbags writes it into metadata.yaml (the enums share rmw's values)."""
    return Qos(history=QosHistory(profile.history.value), depth=profile.depth,
               reliability=QosReliability(profile.reliability.value), durability=QosDurability(profile.durability.value),
               deadline=_qos_time(profile.deadline), lifespan=_qos_time(profile.lifespan),
               liveliness=QosLiveliness(profile.liveliness.value),
               liveliness_lease_duration=_qos_time(profile.liveliness_lease_duration),
               avoid_ros_namespace_conventions=profile.avoid_ros_namespace_conventions)


class RecorderNode(Node):
    def __init__(self, name: str = "recorder", **kwargs):
        super().__init__(name, **kwargs)
        self.out = Path(self.declare_parameter("output_dir", "runs/episodes", common.doc("bags go to OUT/<task>/<split>/<seed>")).value)
        self.split = self.declare_parameter("split", "test", common.doc("split name in the bag path (train, val, test)")).value
        self.expected = self.declare_parameter("expected_episodes", 0, common.doc("exit after this many episodes (0 = until stopped)")).value
        # sensor_data for a driver that publishes best effort; reliable (the sim bridge) loses nothing.
        points_qos = self.declare_parameter("points_qos", "reliable", common.doc("sensor_data or reliable")).value
        if points_qos not in POINTS_QOS:
            raise ValueError(f"parameter points_qos={points_qos!r} is not one of {sorted(POINTS_QOS)}")
        self._lock = threading.Lock()
        self.linger_s = self.declare_parameter("linger_s", 1.0, common.doc("keep a finished bag open this long for late messages")).value
        self._writer: EpisodeWriter | None = None
        self._result: EpisodeResult | None = None  # set while the bag lingers after its result
        self._close_at = 0.0
        self._latest_ns = 0  # newest stamp in the open bag
        self._partial = 0
        self.recorded: list[Path] = []
        self._topic_subs: dict[str, object] = {}  # recorded topic → its subscription
        for topic, msgtype in RECORDED_TOPICS.items():
            cls = _message_class(msgtype)
            # The topic name without its leading slash, so namespaces and remapping apply (not to /clock).
            name = topic if topic == "/clock" else topic.lstrip("/")
            qos = POINTS_QOS[points_qos] if topic == "/points" else QOS[topic]
            self._topic_subs[topic] = self.create_subscription(cls, name, self._callback(topic, msgtype), qos, raw=True)
        # Wall time: a sim-time timer would stop with the simulator's clock, and the last bag never close.
        self.create_timer(0.1, self._close_due, clock=Clock(clock_type=ClockType.STEADY_TIME))
        until = f"exits after {self.expected} episodes" if self.expected > 0 else "runs until stopped"
        self.get_logger().info(f"recorder ready: bags to {self.out}/<task>/{self.split}/<seed>, points QoS {points_qos}, "
                               f"{until}")

    def _callback(self, topic: str, msgtype: str):
        def on_message(cdr: bytes) -> None:
            stamp = leading_stamp_ns(msgtype, cdr)
            with self._lock:
                if topic == "/instruction" and self._result is not None:
                    self._finish()  # the next episode has begun
                if self._writer is None:
                    self._partial += 1
                    self._writer = EpisodeWriter(self._unique(self.out / "partial" / f"{self._partial:05d}"))
                    self._latest_ns = 0
                if stamp is not None:
                    self._latest_ns = max(self._latest_ns, stamp)
                offered = None if self._writer.has_topic(topic) else self._offered_qos(topic)
                self._writer.write_raw(topic, msgtype, cdr, self._latest_ns if stamp is None else stamp, offered)
                if topic == "/episode_result":
                    self._result = deserialize_message(cdr, EpisodeResult)
                    self._close_at = time.monotonic() + self.linger_s
        return on_message

    def _offered_qos(self, topic: str) -> list[Qos] | None:
        """What the topic's publishers offer, as `ros2 bag record` keeps it; None (the project's own
        profile, bags.OFFERED_QOS) when the publisher has already left, e.g. a latched message."""
        name = self._topic_subs[topic].topic_name
        return [bag_qos(info.qos_profile) for info in self.get_publishers_info_by_topic(name)] or None

    def _close_due(self) -> None:
        with self._lock:
            if self._result is not None and time.monotonic() >= self._close_at:
                self._finish()

    def _unique(self, path: Path) -> Path:
        while path.exists():
            path = path.with_name(path.name + "_")
        return path

    def _finish(self) -> None:
        """Close the episode's bag and move it to OUT/<task>/<split>/<seed>."""
        writer, self._writer, result, self._result = self._writer, None, self._result, None
        writer.close()
        split = f"{self.split}-unseen" if result.unseen_colors else self.split
        final = self._unique(self.out / result.task / split / f"{result.seed:07d}")
        final.parent.mkdir(parents=True, exist_ok=True)
        writer.path.rename(final)
        self.recorded.append(final)
        self.get_logger().info(f"recorded {final}")

    def close(self) -> None:
        """Close an open bag so it stays readable (called on Ctrl-C and shutdown)."""
        with self._lock:
            if self._result is not None:
                self._finish()
            if self._writer is not None:
                self._writer.close()
                self.get_logger().warning(f"closed unfinished episode bag {self._writer.path}")
                self._writer = None
            partial = self.out / "partial"
            if partial.is_dir() and not any(partial.iterdir()):
                partial.rmdir()  # every bag was finished: no empty folder that looks like a failure

    @property
    def done(self) -> bool:
        return self.expected > 0 and len(self.recorded) >= self.expected


def main(args: list[str] | None = None) -> None:
    common.run(RecorderNode, done=lambda node: node.done, on_exit=RecorderNode.close, args=args,
               node_class=RecorderNode)


if __name__ == "__main__":
    main()
