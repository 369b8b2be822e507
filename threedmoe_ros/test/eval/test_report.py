"""The success table explains its endings: a reader of the table learns what `primitive_failed` or
`aborted` means without reading the simulator."""

from threedmoe_ros.eval.report import ENDINGS, markdown, success_table
from threedmoe_ros.types import EpisodeOutcome


def test_table_explains_every_ending_it_counts():
    outcomes = [EpisodeOutcome("stack-blocks", 1, "stack", False, 2, 1.0, True, "success"),
                EpisodeOutcome("stack-blocks", 2, "stack", False, 1, 0.0, False, "primitive_failed"),
                EpisodeOutcome("put-block-in-bowl", 3, "bowl", True, 0, 0.0, False, "aborted")]
    text = markdown(success_table(outcomes))
    assert "| stack-blocks | seen | 2 | 0.50 |" in text
    assert f"*primitive_failed*: {ENDINGS['primitive_failed']}" in text
    assert f"*aborted*: {ENDINGS['aborted']}" in text
    assert "*step_limit*" not in text  # only the endings that occur


def test_every_reason_of_the_message_is_explained():
    from pathlib import Path

    msg = (Path(__file__).resolve().parents[3] / "threedmoe_msgs" / "msg" / "EpisodeResult.msg").read_text()
    reasons = {line.split("=")[1] for line in msg.splitlines() if line.startswith("string REASON_")}
    assert reasons <= set(ENDINGS)
