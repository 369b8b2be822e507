"""Recorder node: one rosbag2 (mcap) bag per episode, in the layout the offline collector writes.

Subscribes raw (serialised) messages, so what lands in the bag is byte for byte what was on the
wire. A bag opens at the first message of an episode and closes on its `episode_result`; it is then
renamed to OUT/<task>/<split>/<seed> so the training dataset reads ROS-recorded and offline episodes
alike. On Ctrl-C or shutdown the open bag is closed (readable) and kept as OUT/partial/<n>.
"""

from __future__ import annotations

import threading
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from threedmoe_msgs.msg import EpisodeResult

from threedmoe_ros.data.bags import TOPICS, EpisodeWriter
from threedmoe_ros.rosenv import fill_ament_env

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RESULTS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
QOS = {"/points": qos_profile_sensor_data, "/instruction": LATCHED, "/pick_place_plan": LATCHED,
       "/joint_states": QoSProfile(depth=100), "/episode_result": RESULTS}


def _message_class(msgtype: str):
    package, _, name = msgtype.split("/")
    module = __import__(f"{package}.msg", fromlist=[name])
    return getattr(module, name)


class RecorderNode(Node):
    def __init__(self, name: str = "recorder", **kwargs):
        super().__init__(name, **kwargs)
        self.out = Path(self.declare_parameter("output_dir", "runs/episodes").value)
        self.split = self.declare_parameter("split", "test").value
        self.expected = self.declare_parameter("expected_episodes", 0).value
        self._lock = threading.Lock()
        self._writer: EpisodeWriter | None = None
        self._partial = 0
        self.recorded: list[Path] = []
        for topic, msgtype in TOPICS.items():
            cls = _message_class(msgtype)
            # The topic name without its leading slash, so namespaces and remapping apply.
            self.create_subscription(cls, topic.lstrip("/"), self._callback(topic, msgtype), QOS[topic], raw=True)

    def _callback(self, topic: str, msgtype: str):
        def on_message(cdr: bytes) -> None:
            ns = self.get_clock().now().nanoseconds
            with self._lock:
                if self._writer is None:
                    self._partial += 1
                    self._writer = EpisodeWriter(self._unique(self.out / "partial" / f"{self._partial:05d}"))
                self._writer.write_raw(topic, msgtype, cdr, ns)
                if topic == "/episode_result":
                    self._finish(deserialize_message(cdr, EpisodeResult))
        return on_message

    def _unique(self, path: Path) -> Path:
        while path.exists():
            path = path.with_name(path.name + "_")
        return path

    def _finish(self, result: EpisodeResult) -> None:
        """Close the episode's bag and move it to OUT/<task>/<split>/<seed>."""
        writer, self._writer = self._writer, None
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
            if self._writer is not None:
                self._writer.close()
                self.get_logger().warning(f"closed unfinished episode bag {self._writer.path}")
                self._writer = None

    @property
    def done(self) -> bool:
        return self.expected > 0 and len(self.recorded) >= self.expected


def main(args: list[str] | None = None) -> None:
    fill_ament_env()
    rclpy.init(args=args)
    node = RecorderNode()
    try:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
