"""Data efficiency of the shipped recipe: closed-loop success against demonstrations per task.

The recipe is the default's (checkpoints/README.md): fine-tune the previous policy (--init-from) with
the top-face CIELAB colour features on randomized demonstrations (appearance and phrasing `train`).
Each size trains the same number of steps on the first N episodes of every task, then runs
`--episodes` test seeds per paper task on the `seen` split (training ranges, RF-4, k = 1, raw).

    python bench/bench_data_efficiency.py --data data_out/rand --init-from CKPT --sizes 50 200 --steps 1500

Writes bench/results/data_efficiency.json after every size (a rerun skips sizes already there).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "threedmoe_ros"))

from bench_policy_ablation import subset  # noqa: E402  (the one way to take N episodes per task)

from threedmoe_ros.eval.closed_loop import evaluate  # noqa: E402
from threedmoe_ros.planner import Planner  # noqa: E402
from threedmoe_ros.policy import PolicyConfig  # noqa: E402
from threedmoe_ros.sim.tasks import tasks_in_family  # noqa: E402
from threedmoe_ros.train.pose_dit import TrainConfig, open_dataset, train  # noqa: E402

PAPER_TASKS = [t for family in ("zone", "bowl", "stacking") for t in tasks_in_family(family)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="randomized demonstrations (threedmoe-collect --appearance train)")
    p.add_argument("--init-from", required=True, help="the policy the recipe fine-tunes")
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 200], help="training episodes per task")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--episodes", type=int, default=30, help="closed-loop test seeds per task")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "data_efficiency.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["settings"] = dict(tasks=PAPER_TASKS, steps=args.steps, batch_size=32, lr=3e-4, init_from=args.init_from,
                               top_color=True, test_episodes=args.episodes, split="seen (appearance train, phrasing train)",
                               sampling="RF-4, k=1, raw")
    runs = results.setdefault("sizes", {})
    work = Path(tempfile.mkdtemp(prefix="efficiency_", dir=args.data.parent))  # same file system: hard links
    for size in args.sizes:
        if str(size) in runs:
            continue
        data = subset(args.data, PAPER_TASKS, size, work / f"data_{size}")
        cfg = TrainConfig(out=str(work / f"run_{size}"), data=str(data), max_steps=args.steps, lr=3e-4,
                          warmup_steps=min(200, args.steps // 5), save_every=args.steps, init_from=args.init_from,
                          top_color=True)
        t0 = time.perf_counter()
        policy = train(cfg, PolicyConfig(), open_dataset(cfg), progress=False)
        train_s = time.perf_counter() - t0
        outcomes, _ = evaluate(Planner(policy), PAPER_TASKS, args.episodes, ["seen"], 1, 4, progress=False,
                               appearance="train", phrasing="train")
        per_task = {t: sum(o.success for o in outcomes if o.task == t) / args.episodes for t in PAPER_TASKS}
        runs[str(size)] = {"success": sum(o.success for o in outcomes) / len(outcomes), "per_task": per_task,
                           "train_s": train_s}
        print(f"{size} episodes per task: success {runs[str(size)]['success']:.2f} {per_task}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
