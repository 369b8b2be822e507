"""Evaluator node: collects `episode_result` messages and writes the success table.

Writes success.json / success.md / success.png (eval/report.py) to `output_dir` after every result,
so an interrupted evaluation still leaves a table; with `expected_episodes` > 0 it prints the table
and exits once that many results have arrived.
"""

from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from threedmoe_msgs.msg import EpisodeResult

from threedmoe_ros.eval.report import markdown, write_report
from threedmoe_ros.nodes import conversions as conv
from threedmoe_ros.rosenv import fill_ament_env

RESULTS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class EvaluatorNode(Node):
    def __init__(self, name: str = "evaluator", **kwargs):
        super().__init__(name, **kwargs)
        self.output_dir = self.declare_parameter("output_dir", "runs/eval").value
        self.expected = self.declare_parameter("expected_episodes", 0).value
        self.title = self.declare_parameter("title", "Closed-loop success over ROS").value
        self.outcomes = []
        self._seen: set[tuple[str, int, bool]] = set()
        self.create_subscription(EpisodeResult, "episode_result", self._on_result, RESULTS)

    def _on_result(self, msg: EpisodeResult) -> None:
        outcome = conv.outcome_from_msg(msg)
        key = (outcome.task, outcome.seed, outcome.unseen_colors)
        if key in self._seen:  # transient-local replays after a reconnect
            return
        self._seen.add(key)
        self.outcomes.append(outcome)
        self.get_logger().info(f"result {len(self.outcomes)}: {outcome.task} seed {outcome.seed} -> "
                               f"{'success' if outcome.success else outcome.reason}")
        write_report(self.outcomes, self.output_dir, self.title)

    @property
    def done(self) -> bool:
        return self.expected > 0 and len(self.outcomes) >= self.expected


def main(args: list[str] | None = None) -> None:
    fill_ament_env()
    rclpy.init(args=args)
    node = EvaluatorNode()
    try:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.outcomes:
            print(markdown(write_report(node.outcomes, node.output_dir, node.title), node.title), flush=True)
            print(f"success table written to {node.output_dir}/success.{{json,md,png}}", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
