"""Success tables from episode outcomes: per task, seen vs unseen colours, as JSON, markdown and a plot.

One implementation for every evaluator: the closed-loop command (no ROS), the evaluator node, and
the command that scores a directory of recorded bags.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from threedmoe_ros.types import EpisodeOutcome

SPLITS = ("seen", "unseen")
# How an episode can end (EpisodeResult.REASON_*), as the table's "endings" column counts them.
ENDINGS = {
    "success": "the task's success check passed",
    "step_limit": "the task's step limit was reached first",
    "primitive_failed": "a pick or place failed in the simulator (e.g. nothing under the suction cup at the pick pose)",
    "invalid_plan": "too many plans were rejected (NaN, outside the workspace, tilted or out of reach)",
    "timeout": "the simulated-time budget ran out, or over ROS no plan came within plan_timeout_s",
    "aborted": "the policy declared the task done (an empty plan) or the run was stopped",
    "running": "the episode had not ended when the table was written",
}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval: honest error bars for a success rate from few episodes."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def success_table(outcomes: list[EpisodeOutcome]) -> dict:
    """{task: {split: {episodes, successes, success_rate, ci95, mean_reward, mean_steps, reasons}}}."""
    groups: dict[tuple[str, str], list[EpisodeOutcome]] = defaultdict(list)
    for o in outcomes:
        groups[(o.task, "unseen" if o.unseen_colors else "seen")].append(o)
    table: dict = {}
    for (task, split), items in sorted(groups.items()):
        n, s = len(items), sum(o.success for o in items)
        reasons: dict[str, int] = defaultdict(int)
        for o in items:
            reasons[o.reason or "running"] += 1
        table.setdefault(task, {})[split] = {
            "episodes": n,
            "successes": s,
            "success_rate": s / n,
            "ci95": wilson_interval(s, n),
            "mean_reward": sum(o.reward for o in items) / n,
            "mean_steps": sum(o.steps_taken for o in items) / n,
            "reasons": dict(sorted(reasons.items())),
        }
    return table


def markdown(table: dict, title: str = "Closed-loop success") -> str:
    lines = [f"### {title}", "", "| task | colours | episodes | success | 95% CI | mean reward | mean steps | endings |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for task, splits in table.items():
        for split, r in splits.items():
            lo, hi = r["ci95"]
            endings = ", ".join(f"{k} {v}" for k, v in r["reasons"].items())
            lines.append(f"| {task} | {split} | {r['episodes']} | {r['success_rate']:.2f} | {lo:.2f}–{hi:.2f} | "
                         f"{r['mean_reward']:.2f} | {r['mean_steps']:.1f} | {endings} |")
    total = [r for splits in table.values() for r in splits.values()]
    if total:
        n, s = sum(r["episodes"] for r in total), sum(r["successes"] for r in total)
        lines.append(f"| **all** | | {n} | {s / n:.2f} | | | | |")
    seen = sorted({k for splits in table.values() for r in splits.values() for k in r["reasons"]} - {"success"})
    if seen:
        lines += ["", "Endings: " + "; ".join(f"*{k}*: {ENDINGS.get(k, 'see EpisodeResult.msg')}" for k in seen) + "."]
    return "\n".join(lines) + "\n"


def plot(table: dict, path: Path, title: str = "Closed-loop success") -> None:
    """Grouped bars (seen / unseen) per task with Wilson 95% error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(table)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(tasks) + 2), 4))
    width = 0.38
    for j, split in enumerate(SPLITS):
        xs, ys, err = [], [], [[], []]
        for i, task in enumerate(tasks):
            r = table[task].get(split)
            if r is None:
                continue
            xs.append(i + (j - 0.5) * width)
            ys.append(r["success_rate"])
            # The interval is stored rounded, so at a rate of 0 or 1 an end can sit a hair inside it.
            err[0].append(max(0.0, r["success_rate"] - r["ci95"][0]))
            err[1].append(max(0.0, r["ci95"][1] - r["success_rate"]))
        if xs:
            ax.bar(xs, ys, width, yerr=err, capsize=3, label=f"{split} colours")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(outcomes: list[EpisodeOutcome], out_dir: str | Path, title: str = "Closed-loop success",
                 meta: dict | None = None) -> dict:
    """Write success.json, success.md and success.png under out_dir; return the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = success_table(outcomes)
    record = {"meta": meta or {}, "table": table, "episodes": [{k: v for k, v in asdict(o).items() if k != "extra"} for o in outcomes]}
    (out / "success.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "success.md").write_text(markdown(table, title))
    if table:
        plot(table, out / "success.png", title)
    return table
