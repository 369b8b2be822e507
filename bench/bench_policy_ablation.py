"""Pose-DiT ablation at equal budget: plain (direct) vs pointer head × arbitrary vs canonical
demonstration order (× recovery data when given), trained the same way and scored closed loop.

Each variant trains `--steps` steps of batch 32 on one thread from the same episodes (collected
with `threedmoe-collect`, once with and once without `--arbitrary-order`), then runs `--episodes`
test-split episodes per task (seen colours, RF-4, k = 1, labelled clouds, no refine).

    python bench/bench_policy_ablation.py --canonical data_out/canon --arbitrary data_out/arbitrary \\
        --tasks put-block-in-zone put-block-in-bowl stack-blocks --train-episodes 200 --steps 1500 --episodes 30

Writes bench/results/policy_ablation.json after every variant (a long run keeps what it finished).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "threedmoe_ros"))

from threedmoe_ros.eval.closed_loop import evaluate  # noqa: E402
from threedmoe_ros.planner import Planner  # noqa: E402
from threedmoe_ros.train.pose_dit import PolicyConfig, TrainConfig, open_dataset, train  # noqa: E402


def subset(root: Path, tasks: list[str], episodes: int, into: Path) -> Path:
    """The first `episodes` training bags of each task under `root`, hard-linked into one directory."""
    if into.is_dir():
        return into  # made for an earlier variant of this run
    for task in tasks:
        bags = sorted((root / task / "train").iterdir())[:episodes]
        (into / task / "train").mkdir(parents=True, exist_ok=True)
        for bag in bags:
            shutil.copytree(bag, into / task / "train" / bag.name, copy_function=os.link, dirs_exist_ok=True)
    return into


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--canonical", type=Path, required=True, help="episodes collected with the canonical oracle")
    p.add_argument("--arbitrary", type=Path, help="the same seeds collected with --arbitrary-order")
    p.add_argument("--recovery", type=Path, help="recovery episodes (threedmoe-collect --policy) for a '+ recovery' variant")
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--train-episodes", type=int, default=200, help="training episodes per task")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--episodes", type=int, default=30, help="closed-loop test episodes per task")
    p.add_argument("--variants", nargs="+", default=None,
                   help="variants to (re)run, e.g. pointer-canonical; default: every variant not yet in --out")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "policy_ablation.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    # (head, order, recovery data, scheduler)
    variants = [("direct", "canonical", False, "rectified_flow"), ("pointer", "canonical", False, "rectified_flow"),
                ("pointer", "canonical", False, "ddpm")]
    if args.arbitrary:
        variants += [("direct", "arbitrary", False, "rectified_flow"), ("pointer", "arbitrary", False, "rectified_flow")]
    if args.recovery:
        variants += [("pointer", "canonical", True, "rectified_flow")]
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.setdefault("settings", {}).update(tasks=args.tasks, train_episodes=args.train_episodes, steps=args.steps,
                                              batch_size=32, test_episodes=args.episodes, sampling="RF-4, k=1, seen colours")
    runs = results.setdefault("variants", {})
    work = Path(tempfile.mkdtemp(prefix="ablation_", dir=args.canonical.parent))  # same file system: hard links
    for head, order, recovery, scheduler in variants:
        name = f"{head} head, {order} order" + (", + recovery" if recovery else "") + (", DDPM" if scheduler == "ddpm" else "")
        if args.variants and name not in args.variants and head + "-" + order not in args.variants:
            continue
        if name in runs and not args.variants:
            continue  # finished by an earlier invocation
        data = subset(args.canonical if order == "canonical" else args.arbitrary, args.tasks, args.train_episodes,
                      work / f"data_{order}")
        cfg = TrainConfig(out=str(work / name.replace(" ", "_").replace(",", "")), data=str(data), max_steps=args.steps,
                          lr=5e-4, warmup_steps=min(300, args.steps // 5), save_every=args.steps,
                          recovery_data=(str(subset(args.recovery, args.tasks, 10**6, work / "recovery")),) if recovery else ())
        base = PolicyConfig(scheduler=scheduler, scheduler_config={} if scheduler == "ddpm" else {"timestep_sampling": "logit_normal"})
        base.head.output = head
        policy_config = PolicyConfig.from_dict(base.to_dict())
        t0 = time.perf_counter()
        policy = train(cfg, policy_config, open_dataset(cfg), progress=False)
        train_s = time.perf_counter() - t0
        planner = Planner(policy)
        # The sampler's own step count (RF: 4, DDPM: 100); the canonical pointer model also at 1/2/10 RF steps.
        sweep = [policy.scheduler.num_inference_steps]
        if (head, order, recovery, scheduler) == ("pointer", "canonical", False, "rectified_flow"):
            sweep = [1, 2, 4, 10]
        runs[name] = {"train_s": train_s, "by_steps": {}}
        for steps in sweep:
            outcomes, times = evaluate(planner, args.tasks, args.episodes, ["seen"], 1, steps, progress=False)
            per_task = {t: sum(o.success for o in outcomes if o.task == t) / args.episodes for t in args.tasks}
            row = {"success": sum(o.success for o in outcomes) / len(outcomes), "per_task": per_task,
                   "plan_ms_p50": sorted(times)[len(times) // 2],
                   "endings": {r: sum(o.reason == r for o in outcomes) for r in sorted({o.reason for o in outcomes})}}
            runs[name]["by_steps"][str(steps)] = row
            if steps == sweep[0] or steps == 4:
                runs[name].update(row)
            print(f"{name}, {steps} steps: success {row['success']:.2f} {per_task} ({train_s / 60:.1f} min training)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
