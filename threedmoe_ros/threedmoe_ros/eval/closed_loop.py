"""Closed-loop evaluation in the simulator, no ROS: the planner plans, the first k steps run, it re-plans.

    threedmoe-eval-closed-loop --checkpoint runs/pose_dit/checkpoint \\
        --tasks zone bowl stacking --episodes 100 --colors seen unseen --out runs/eval_closed_loop
    ... --sampling-steps 1 2 4 10        # success rate per rectified-flow step count (one table each)
    ... --appearance shifted --phrasing heldout   # scenes and words outside the training ranges
    ... --tasks heldout-tasks --phrasing plain    # tasks never collected for training (sim/tasks.py)

Episodes use the test split's seeds (2 000 000 + i, never used for training). `--appearance` draws
each scene's look from the plain assets, the training ranges or the shifted ranges (sim/appearance.py);
`--phrasing` its instruction from the task templates, the grammar's training part or its held-out
part (sim/phrasing.py); `--colors` picks CLIPort's seen or unseen colours. Writes, per sampling
step count, success.{json,md,png} (eval/report.py) under OUT/steps_<n>/, and OUT/summary.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from threedmoe_ros.sim.seeds import seed_for
from threedmoe_ros.eval.failures import breakdown, failure_kind, judge_step, oracle_steps
from threedmoe_ros.eval.report import markdown, write_report
from threedmoe_ros.types import EpisodeOutcome
from threedmoe_ros.validation import InputError


def run_episode(env, planner, seed: int, k: int, sampling_steps: int, plan_seed: int,
                labels: bool = True) -> tuple[EpisodeOutcome, list[float]]:
    """One closed-loop episode with a planner.Planner; returns its outcome and the plan times (ms).
    `labels` False strips the instance labels from every cloud, so the policy sees what a real
    sensor gives. Plans go to the simulator as sampled: it validates them itself (with exact IK).
    A failed episode's outcome.extra["failure"] names its first mistake (eval/failures.py)."""
    obs, _ = env.reset(seed)
    times, verdicts = [], []
    while True:
        cloud = obs["cloud"] if labels else obs["cloud"].unlabelled()
        try:
            result = planner.plan(cloud, obs["instruction"], steps=sampling_steps, seed=plan_seed + len(times))
        except InputError:  # the planner refuses this observation (e.g. it shows no object): it plans nothing
            times.append(0.0)
            poses = np.zeros((0, 2, 7))
        else:
            times.append(result.total_ms)
            poses = result.poses[:k] if k > 0 else result.poses
        before = oracle_steps(env)
        verdict = judge_step(env, poses[0], before) if len(poses) else ""
        obs, _, terminated, truncated, info = env.step(poses)
        after = oracle_steps(env)
        if info["reason"] == "invalid_plan":
            verdict = ""  # refused by the simulator, nothing moved: it counts as "stopped" if it ends the episode
        elif len(poses) and not verdict and before is not None and (after is None or len(after) >= len(before)):
            verdict = "imprecise"  # the right step, and the task came no nearer to done
        verdicts.append(verdict)
        if terminated or truncated:
            outcome = env.outcome()
            outcome.extra["failure"] = failure_kind(verdicts, outcome)
            return outcome, times


def evaluate(planner, tasks: list[str], episodes: int, colors: list[str], k: int, sampling_steps: int,
             resolution: tuple[int, int] = (320, 240), progress: bool = True, labels: bool = True,
             appearance: str = "plain", phrasing: str = "plain") -> tuple[list[EpisodeOutcome], list[float]]:
    from tqdm import tqdm

    from threedmoe_ros.sim.cameras import default_cameras
    from threedmoe_ros.sim.env import EnvConfig, TabletopEnv

    outcomes, times = [], []
    bar = tqdm(total=len(tasks) * len(colors) * episodes, desc=f"closed loop, {sampling_steps} steps", unit="episode",
               disable=not progress)
    for task in tasks:
        for color in colors:
            config = EnvConfig(task=task, unseen_colors=color == "unseen", cameras=default_cameras(*resolution),
                               appearance=appearance, phrasing=phrasing)
            with TabletopEnv(config) as env:
                for i in range(episodes):
                    outcome, t = run_episode(env, planner, seed_for("test", i), k, sampling_steps, plan_seed=i, labels=labels)
                    outcomes.append(outcome)
                    times += t
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(o.success for o in outcomes)}/{len(outcomes)}")
    bar.close()
    return outcomes, times


def plot_steps(summary: dict, path: Path) -> None:
    """Success rate and plan latency against the number of sampling steps, one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(int(s) for s in summary["runs"])
    runs = [summary["runs"][str(s)] for s in steps]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(steps, [r["success_rate"] for r in runs], "o-", color="tab:blue")
    ax.set_xscale("log")
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("success rate", color="tab:blue")
    ax.set_ylim(0, 1.05)
    twin = ax.twinx()
    twin.plot(steps, [r["plan_ms_p50"] for r in runs], "s--", color="tab:orange")
    twin.set_ylabel("plan latency p50 (ms)", color="tab:orange")
    ax.set_title(f"Closed loop vs sampling steps ({len(summary['tasks'])} tasks × {summary['episodes']} episodes)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from threedmoe_ros.sim.tasks import HELDOUT_TASKS, resolve_tasks

    parser = argparse.ArgumentParser(prog="threedmoe-eval-closed-loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="policy checkpoint directory, or a shipped policy by name: default (the default), light")
    parser.add_argument("--tasks", nargs="+", default=["zone", "bowl", "stacking"],
                        help="task or family names, 'training-tasks', 'heldout-tasks' (never collected for training) or 'all'")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per task and colour split")
    parser.add_argument("--colors", nargs="+", default=["seen", "unseen"], choices=["seen", "unseen"])
    parser.add_argument("--k", type=int, default=1, help="plan steps executed before re-planning (0 = all)")
    parser.add_argument("--sampling-steps", type=int, nargs="+", default=[0],
                        help="sampling steps, one run each (0 = the checkpoint's own)")
    parser.add_argument("--resolution", default="320x240")
    parser.add_argument("--refine", action="store_true", help="snap plan positions onto observed objects (models/refine.py)")
    parser.add_argument("--no-labels", action="store_true",
                        help="strip instance labels from the clouds: objects come from segmentation, as on a real sensor")
    from threedmoe_ros.sim.env import add_split_arguments

    add_split_arguments(parser, appearance="plain", phrasing="plain")
    parser.add_argument("--out", type=Path, default=Path("runs/eval_closed_loop"))
    args = parser.parse_args(argv)

    try:
        tasks = resolve_tasks(args.tasks)
    except ValueError as e:
        parser.error(str(e))
    heldout = [t for t in tasks if t in HELDOUT_TASKS]
    if heldout and args.phrasing == "train":
        parser.error(f"--phrasing train never draws the templates of held-out tasks ({', '.join(heldout)}); "
                     "use --phrasing plain or heldout")
    if args.episodes < 1 or args.k < 0 or min(args.sampling_steps) < 0:
        parser.error("--episodes must be >= 1, --sampling-steps and --k >= 0")
    try:
        resolution = tuple(int(v) for v in args.resolution.lower().split("x"))
    except ValueError:
        parser.error(f"--resolution must look like 320x240, got {args.resolution!r}")

    import torch

    from threedmoe_ros.checkpoints import policy_path
    from threedmoe_ros.planner import Planner
    from threedmoe_ros.models.checkpoint import CheckpointError

    torch.set_num_threads(1)
    checkpoint = policy_path(args.checkpoint)
    try:
        planner = Planner.from_pretrained(checkpoint, refine=args.refine)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = {"checkpoint": checkpoint, "tasks": tasks, "episodes": args.episodes, "colors": args.colors,
               "k": args.k, "refine": args.refine, "labels": not args.no_labels, "appearance": args.appearance,
               "phrasing": args.phrasing, "runs": {}}
    try:  # the runs are named by the steps the scheduler takes (0 → the checkpoint's own)
        runs = list(dict.fromkeys(planner.policy.scheduler.inference_steps(s) for s in args.sampling_steps))
    except ValueError as exc:
        parser.error(f"--sampling-steps: {exc}")
    for steps in runs:
        t0 = time.perf_counter()
        outcomes, times = evaluate(planner, summary["tasks"], args.episodes, args.colors, args.k, steps, resolution,
                                   labels=not args.no_labels, appearance=args.appearance, phrasing=args.phrasing)
        title = (f"Closed-loop success, {planner.policy.config.scheduler.replace('_', ' ')} {steps} step{'s' if steps > 1 else ''}"
                 f"{', refined' if args.refine else ''}{', segmented (no labels)' if args.no_labels else ''}"
                 f"{'' if args.appearance == 'plain' else f', {args.appearance} appearance'}"
                 f"{'' if args.phrasing == 'plain' else f', {args.phrasing} phrasing'}")
        # Every episode's outcome first: nothing a report step does can lose a finished evaluation.
        (args.out / f"steps_{steps}").mkdir(parents=True, exist_ok=True)
        (args.out / f"steps_{steps}" / "outcomes.json").write_text(
            json.dumps([dataclasses.asdict(o) for o in outcomes], indent=1, default=str) + "\n")
        table = write_report(outcomes, args.out / f"steps_{steps}", title,
                             meta={"checkpoint": checkpoint, "k": args.k, "sampling_steps": steps})
        print(markdown(table, title))
        print("Failed episodes by first mistake (eval/failures.py): "
              + ", ".join(f"{kind} {n}" for kind, n in breakdown(outcomes).items()))
        summary["runs"][str(steps)] = {
            "success_rate": sum(o.success for o in outcomes) / len(outcomes),
            "plan_ms_p50": sorted(times)[len(times) // 2],
            "wall_s": time.perf_counter() - t0,
            "failures": breakdown(outcomes),
            "table": table,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if len(args.sampling_steps) > 1:
        plot_steps(summary, args.out / "sampling_steps.png")
    print(f"tables and plots under {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
