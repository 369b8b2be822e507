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


def test_a_perfect_and_a_zero_score_still_plot(tmp_path):
    """Rates of exactly 1 and 0 sit on their interval's rounded end; the plot must not refuse them."""
    from threedmoe_ros.eval.report import write_report

    outcomes = [EpisodeOutcome("put-block-in-zone", i, "x", False, 3, 1.0, True, "success") for i in range(100)]
    outcomes += [EpisodeOutcome("stack-blocks", i, "x", False, 3, 0.0, False, "aborted") for i in range(7)]
    table = write_report(outcomes, tmp_path)
    assert (tmp_path / "success.png").stat().st_size > 0 and table["put-block-in-zone"]["seen"]["success_rate"] == 1.0
