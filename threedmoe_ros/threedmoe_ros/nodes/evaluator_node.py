"""Evaluator node: collects `episode_result` messages and writes the success table.

Writes success.json / success.md / success.png (eval/report.py) to `output_dir` after every result,
so an interrupted evaluation still leaves a table; with `expected_episodes` > 0 it prints the table
and exits once that many results have arrived.
"""

from __future__ import annotations

from rclpy.node import Node
from threedmoe_msgs.msg import EpisodeResult

from threedmoe_ros.eval.report import markdown, write_report
from threedmoe_ros.nodes import common
from threedmoe_ros.nodes import conversions as conv


class EvaluatorNode(Node):
    def __init__(self, name: str = "evaluator", **kwargs):
        super().__init__(name, **kwargs)
        self.output_dir = self.declare_parameter("output_dir", "runs/eval", common.doc("where success.{json,md,png} go")).value
        self.expected = self.declare_parameter("expected_episodes", 0, common.doc("exit after this many results (0 = run until stopped)")).value
        self.title = self.declare_parameter("title", "Closed-loop success over ROS", common.doc("title of the table and plot")).value
        self.outcomes = []
        self._seen: set[tuple[str, int, bool]] = set()
        self.create_subscription(EpisodeResult, "episode_result", self._on_result, common.RESULTS)
        until = f"exits after {self.expected} results" if self.expected > 0 else "runs until stopped"
        self.get_logger().info(f"evaluator ready: success table to {self.output_dir}/success.{{json,md,png}}, {until}")

    def _on_result(self, msg: EpisodeResult) -> None:
        outcome = conv.outcome_from_msg(msg)
        key = (outcome.task, outcome.seed, outcome.unseen_colors)
        if key in self._seen:  # transient-local replays after a reconnect
            return
        self._seen.add(key)
        self.outcomes.append(outcome)
        of = f"/{self.expected}" if self.expected > 0 else ""
        self.get_logger().info(f"result {len(self.outcomes)}{of}: {outcome.task} seed {outcome.seed} -> "
                               f"{'success' if outcome.success else outcome.reason}")
        write_report(self.outcomes, self.output_dir, self.title)

    @property
    def done(self) -> bool:
        return self.expected > 0 and len(self.outcomes) >= self.expected


def _print_table(node: EvaluatorNode) -> None:
    if node.outcomes:
        print(markdown(write_report(node.outcomes, node.output_dir, node.title), node.title), flush=True)
        print(f"success table written to {node.output_dir}/success.{{json,md,png}}", flush=True)


def main(args: list[str] | None = None) -> None:
    common.run(EvaluatorNode, done=lambda node: node.done, on_exit=_print_table, args=args,
               node_class=EvaluatorNode)


if __name__ == "__main__":
    main()
