"""Closed-loop success of policies on the robustness splits, side by side, with failure breakdowns.

Splits (sim/appearance.py, sim/phrasing.py; test-split seeds, the checkpoint's sampling steps, k = 1, raw):
    plain            the original assets and task templates (the benchmark before randomization)
    seen             training appearance ranges and phrasings, seen colours
    shifted          appearance outside the training ranges (shades, sizes, light, distractors, sensing)
    heldout          instruction words and templates training never draws
    shifted+heldout  both
    unseen           CLIPort's unseen colours, training ranges otherwise
    …/no-labels      the split with the clouds' instance labels stripped: objects come from segmentation

`--seeds-per-family 100` spreads 100 seeds over a family's tasks (zone 100, bowl 2 × 50, stacking
3 × 34); `--long-horizon N` adds N seeds of each long-horizon training task on the `seen` split.

    python bench/bench_robustness.py --policy previous=PATH --policy default= --splits seen shifted \\
        --seeds-per-family 100 --long-horizon 50 --workers 2

Writes bench/results/robustness.json (after every finished job, so a long run keeps its work and a
rerun with the same --out skips what is done) and robustness.png.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "threedmoe_ros"))

SPLITS = {  # name -> (appearance, phrasing, colours)
    "plain": ("plain", "plain", "seen"),
    "seen": ("train", "train", "seen"),
    "shifted": ("shifted", "train", "seen"),
    "heldout": ("train", "heldout", "seen"),
    "shifted+heldout": ("shifted", "heldout", "seen"),
    "unseen": ("train", "train", "unseen"),
}
SPLITS.update({f"{name}/no-labels": split for name, split in list(SPLITS.items())})
PAPER_FAMILIES = ("zone", "bowl", "stacking")
_PLANNERS: dict = {}


def _job(job: tuple) -> dict:
    """One (policy, split, task) run in a worker; returns its outcomes as dicts."""
    import dataclasses

    import torch

    from threedmoe_ros.eval.closed_loop import evaluate
    from threedmoe_ros.planner import Planner

    name, path, split, task, episodes = job
    torch.set_num_threads(1)
    if path not in _PLANNERS:
        _PLANNERS[path] = Planner.from_pretrained(path)
    appearance, phrasing, colors = SPLITS[split]
    t0 = time.perf_counter()
    planner = _PLANNERS[path]
    steps = planner.policy.scheduler.inference_steps(0)  # the checkpoint's own
    outcomes, times = evaluate(planner, [task], episodes, [colors], 1, steps, progress=False,
                               appearance=appearance, phrasing=phrasing, labels=not split.endswith("/no-labels"))
    return {"policy": name, "split": split, "task": task, "wall_s": time.perf_counter() - t0,
            "outcomes": [dataclasses.asdict(o) for o in outcomes]}


def summarize(done: dict) -> dict:
    """Per policy and split: success per task and per family, and the failure breakdown."""
    from threedmoe_ros.eval.failures import FAILURE_KINDS
    from threedmoe_ros.eval.report import wilson_interval
    from threedmoe_ros.sim.tasks import TASKS

    out: dict = {}
    for key, record in done.items():
        entry = out.setdefault(record["policy"], {}).setdefault(record["split"], {"tasks": {}, "families": {},
                                                                                 "failures": {}})
        items = record["outcomes"]
        n, s = len(items), sum(o["success"] for o in items)
        entry["tasks"][record["task"]] = {"episodes": n, "success_rate": s / n, "ci95": wilson_interval(s, n)}
        family = entry.setdefault("failures_by_family", {}).setdefault(TASKS[record["task"]].family, {})
        for o in items:
            if not o["success"]:
                kind = o["extra"].get("failure", "")
                entry["failures"][kind] = entry["failures"].get(kind, 0) + 1
                family[kind] = family.get(kind, 0) + 1
    for policy in out.values():
        for entry in policy.values():
            families: dict = {}
            for task, r in entry["tasks"].items():
                families.setdefault(TASKS[task].family, []).append(r)
            for family, rs in families.items():
                n = sum(r["episodes"] for r in rs)
                s = sum(round(r["success_rate"] * r["episodes"]) for r in rs)
                entry["families"][family] = {"episodes": n, "success_rate": s / n, "ci95": wilson_interval(s, n)}
            entry["failures"] = {k: entry["failures"].get(k, 0) for k in FAILURE_KINDS}
            entry["failures_by_family"] = {f: {k: c.get(k, 0) for k in FAILURE_KINDS}
                                           for f, c in entry["failures_by_family"].items()}
    return out


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(summary)
    splits = [s for s in SPLITS if any(s in summary[p] for p in policies)]
    fig, axes = plt.subplots(1, len(PAPER_FAMILIES), figsize=(4.2 * len(PAPER_FAMILIES), 3.8), sharey=True)
    width = 0.8 / max(len(policies), 1)
    for ax, family in zip(axes, PAPER_FAMILIES):
        for j, policy in enumerate(policies):
            xs, ys, err = [], [], [[], []]
            for i, split in enumerate(splits):
                r = summary[policy].get(split, {}).get("families", {}).get(family)
                if r is None:
                    continue
                xs.append(i + (j - (len(policies) - 1) / 2) * width)
                ys.append(r["success_rate"])
                err[0].append(max(0.0, r["success_rate"] - r["ci95"][0]))
                err[1].append(max(0.0, r["ci95"][1] - r["success_rate"]))
            ax.bar(xs, ys, width, yerr=err, capsize=2, label=policy)
        ax.set_xticks(range(len(splits)), splits, rotation=30, ha="right")
        ax.set_title(family)
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("closed-loop success")
    axes[0].legend(fontsize=8)
    fig.suptitle("Success by split (95% Wilson intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def relative(path: str) -> str:
    """A checkpoint path as the results record it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    from threedmoe_ros.checkpoints import policy_path
    from threedmoe_ros.sim.tasks import HELDOUT_TASKS, tasks_in_family

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", action="append", required=True, metavar="NAME=PATH",
                        help="a policy to score (PATH empty: the embedded default); repeat to compare")
    parser.add_argument("--splits", nargs="+", default=["seen", "shifted+heldout"], choices=list(SPLITS))
    parser.add_argument("--seeds-per-family", type=int, default=100)
    parser.add_argument("--long-horizon", type=int, default=0, help="seeds of each long-horizon task (seen split)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "robustness.json")
    args = parser.parse_args(argv)

    policies = {}
    for item in args.policy:
        name, _, path = item.partition("=")
        policies[name] = policy_path(path)
        if not (Path(policies[name]) / "config.json").is_file():
            parser.error(f"--policy {item}: {policies[name]} holds no config.json")
    long_horizon = [t for t in tasks_in_family("long-horizon") if t not in HELDOUT_TASKS]  # the seen split's own
    jobs = []
    for name, path in policies.items():
        for split in args.splits:
            for family in PAPER_FAMILIES:
                tasks = tasks_in_family(family)
                jobs += [(name, path, split, t, math.ceil(args.seeds_per_family / len(tasks))) for t in tasks]
        jobs += [(name, path, "seen", t, args.long_horizon) for t in long_horizon] \
            if args.long_horizon else []
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    done = record.get("jobs", {})
    key = lambda j: f"{j[0]}|{j[2]}|{j[3]}|{j[4]}"  # noqa: E731
    todo = [j for j in jobs if key(j) not in done]
    # Long jobs first, so the two workers finish together.
    todo.sort(key=lambda j: -j[4] * (3 if j[3] in long_horizon else 1))
    print(f"{len(jobs)} jobs, {len(todo)} to run on {args.workers} workers", flush=True)
    from tqdm import tqdm

    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        record = {"policies": {n: relative(p) for n, p in policies.items()}, "splits": {s: SPLITS[s] for s in args.splits},
                  "seeds_per_family": args.seeds_per_family, "long_horizon": args.long_horizon,
                  "jobs": done, "summary": summarize(done)}
        args.out.write_text(json.dumps(record, indent=1) + "\n")

    with mp.get_context("spawn").Pool(args.workers) as pool:
        for result in tqdm(pool.imap_unordered(_job, todo), total=len(todo), unit="job"):
            done[key((result["policy"], None, result["split"], result["task"], len(result["outcomes"])))] = result
            save()
    save()  # also when every job was done before: the summary follows this code
    summary = summarize(done)
    plot(summary, args.out.with_suffix(".png"))
    for policy, splits in summary.items():
        for split, entry in splits.items():
            fams = ", ".join(f"{f} {r['success_rate']:.2f}" for f, r in entry["families"].items())
            print(f"{policy:>12} {split:>16}: {fams}; failures {entry['failures']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
