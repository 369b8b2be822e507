"""Simulator benchmarks: oracle throughput, observation cost, and oracle success per task.

    python bench/bench_sim.py                         # throughput → bench/results/sim.json
    python bench/bench_sim.py --oracle-success --seeds 100   # → bench/results/oracle_success.json

Throughput runs in this one process (one core). Episodes are timed twice per task: as data
collection runs them (3 cameras rendered and fused after every step) and physics only (no
rendering), so the two costs can be told apart on a noisy machine. Oracle success runs the oracle
closed loop (one step, then re-plan) exactly as data collection does, without rendering.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from threedmoe_ros.sim.cameras import default_cameras
from threedmoe_ros.sim.env import EnvConfig, TabletopEnv
from threedmoe_ros.sim.tasks import TASKS

RESULTS = Path(__file__).resolve().parent / "results"


def run_oracle(env: TabletopEnv, seed: int) -> tuple:
    obs, info = env.reset(seed)
    while True:
        obs, reward, terminated, truncated, info = env.step(env.oracle_plan()[:1])
        if terminated or truncated:
            return env.outcome()


def machine() -> dict:
    import pybullet

    return {"cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "python": platform.python_version(),
            "platform": platform.platform(), "pybullet_api": pybullet.getAPIVersion()}


def oracle_success(tasks: list[str], seeds: int, first: int, unseen: bool) -> dict:
    table = {}
    for task in tasks:
        with TabletopEnv(EnvConfig(task=task, observe=False, unseen_colors=unseen)) as env:
            outcomes = [run_oracle(env, s) for s in tqdm(range(first, first + seeds), desc=task, leave=False)]
        ok = [o.success for o in outcomes]
        table[task] = {
            "family": TASKS[task].family,
            "episodes": len(ok),
            "successes": int(sum(ok)),
            "success_rate": float(np.mean(ok)),
            "mean_steps": float(np.mean([o.steps_taken for o in outcomes])),
            "failures": [{"seed": o.seed, "reason": o.reason, "detail": o.detail, "reward": o.reward}
                         for o in outcomes if not o.success],
        }
        print(f"{task:40s} {sum(ok):4d}/{len(ok)}  steps {table[task]['mean_steps']:.1f}", flush=True)
    return table


def throughput(tasks: list[str], episodes: int) -> dict:
    out = {}
    for task in tqdm(tasks, desc="episodes/min"):
        row = {"family": TASKS[task].family}
        for label, observe in (("with_observations", True), ("physics_only", False)):
            with TabletopEnv(EnvConfig(task=task, observe=observe)) as env:
                run_oracle(env, 10_000)  # warm-up (first pybullet client, imports)
                start, steps = time.perf_counter(), 0
                for seed in range(episodes):
                    steps += run_oracle(env, seed).steps_taken
                elapsed = time.perf_counter() - start
            row[label] = {"episodes_per_min": 60 * episodes / elapsed, "mean_steps": steps / episodes,
                          "ms_per_episode": 1000 * elapsed / episodes}
        out[task] = row
    return out


def observation_cost(repeats: int) -> dict:
    out = {}
    for width, height in ((320, 240), (640, 480)):
        config = EnvConfig(task="put-block-in-zone", cameras=default_cameras(width, height))
        with TabletopEnv(config) as env:
            env.reset(0)
            env._observe()
            times, points = [], 0
            for _ in range(repeats):
                start = time.perf_counter()
                cloud, _ = env._observe()
                times.append(time.perf_counter() - start)
                points = len(cloud)
        out[f"{width}x{height}x3"] = {"ms_median": 1000 * float(np.median(times)), "ms_min": 1000 * float(np.min(times)),
                                      "points": points}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--oracle-success", action="store_true", help="measure oracle success instead of speed")
    parser.add_argument("--seeds", type=int, default=100, help="seeds per task for --oracle-success")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--unseen-colors", action="store_true")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task for throughput")
    parser.add_argument("--repeats", type=int, default=10, help="observations timed per resolution")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown tasks {unknown}; known: {', '.join(TASKS)}")
    RESULTS.mkdir(exist_ok=True)
    if args.oracle_success:
        result = {"machine": machine(), "seeds": args.seeds, "first_seed": args.first_seed,
                  "unseen_colors": args.unseen_colors,
                  "tasks": oracle_success(args.tasks, args.seeds, args.first_seed, args.unseen_colors)}
        out = args.out or RESULTS / "oracle_success.json"
    else:
        result = {"machine": machine(), "observation": observation_cost(args.repeats),
                  "episodes": throughput(args.tasks, args.episodes)}
        out = args.out or RESULTS / "sim.json"
        for res, row in result["observation"].items():
            print(f"observation {res}: {row['ms_median']:.0f} ms median, {row['points']} points")
        for task, row in result["episodes"].items():
            print(f"{task:40s} {row['with_observations']['episodes_per_min']:6.0f} ep/min with obs, "
                  f"{row['physics_only']['episodes_per_min']:6.0f} physics only ({row['physics_only']['mean_steps']:.1f} steps)")
    result["machine"]["load_avg_1min_after"] = os.getloadavg()[0]
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
