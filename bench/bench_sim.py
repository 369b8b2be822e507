"""Simulator benchmarks: oracle throughput, observation cost, and oracle success per task.

    python bench/bench_sim.py                         # throughput → bench/results/sim.json
    python bench/bench_sim.py --oracle-success --seeds 100   # → bench/results/oracle_success.json
    python bench/bench_sim.py --oracle-success --appearance shifted   # → oracle_success_shifted.json

Throughput runs in this one process (one core). Episodes are timed per task as data collection
runs them (3 cameras rendered and fused after every step), physics only (no rendering), and with
the train and shifted appearance randomization on (sim/appearance.py), all in one run, so
`randomization` compares their rates on the same machine at the same time. The randomized looks
crowd scenes with distractors up to 16-18 objects; `uncrowded_*` are the same looks with the
distractor counts they had before (train 0-4, shifted 5-8), and `crowding` compares the two.
Oracle success runs the oracle closed loop (one step, then re-plan) exactly as data collection
does, without rendering. `--tasks` takes task and family names, training-tasks and heldout-tasks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from threedmoe_ros.sim.appearance import APPEARANCE
from threedmoe_ros.sim.cameras import default_cameras
from threedmoe_ros.sim.env import EnvConfig, TabletopEnv
from threedmoe_ros.sim.tasks import TASKS, resolve_tasks

RESULTS = Path(__file__).resolve().parent / "results"


def run_oracle(env: TabletopEnv, seed: int, noise_m: float = 0.0):
    """Closed-loop oracle episode; noise_m adds Gaussian xy error to every pose (a policy's imprecision)."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed)
    while True:
        plan = env.oracle_plan()[:1]
        plan[..., :2] += rng.normal(0.0, noise_m, plan[..., :2].shape) if noise_m else 0.0
        obs, reward, terminated, truncated, info = env.step(plan)
        if terminated or truncated:
            return env.outcome()


def machine() -> dict:
    import pybullet

    return {"cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "python": platform.python_version(),
            "platform": platform.platform(), "pybullet_api": pybullet.getAPIVersion()}


def oracle_success(tasks: list[str], seeds: int, first: int, unseen: bool, noise_m: float = 0.0,
                   appearance: str = "plain") -> dict:
    table = {}
    for task in tasks:
        outcomes, errors = [], []
        with TabletopEnv(EnvConfig(task=task, observe=False, unseen_colors=unseen, appearance=appearance)) as env:
            for s in tqdm(range(first, first + seeds), desc=task, leave=False):
                try:
                    outcomes.append(run_oracle(env, s, noise_m))
                except RuntimeError as exc:  # the oracle found no plan: a failure of this seed, not of the run
                    errors.append({"seed": s, "reason": "oracle_error", "detail": str(exc), "reward": env.reward})
        ok = [o.success for o in outcomes] + [False] * len(errors)
        table[task] = {
            "family": TASKS[task].family,
            "episodes": len(ok),
            "successes": int(sum(ok)),
            "success_rate": float(np.mean(ok)),
            "mean_steps": float(np.mean([o.steps_taken for o in outcomes])),
            "failures": [{"seed": o.seed, "reason": o.reason, "detail": o.detail, "reward": o.reward}
                         for o in outcomes if not o.success] + errors,
        }
        print(f"{task:40s} {sum(ok):4d}/{len(ok)}  steps {table[task]['mean_steps']:.1f}", flush=True)
    return table


# The randomized looks as they were before crowded scenes: their distractor counts then.
UNCROWDED = {name: dataclasses.replace(APPEARANCE[name], distractors=counts)
             for name, counts in (("train", (0, 4)), ("shifted", (5, 8)))}
# (label, observe, appearance): the original look with and without rendering, both randomized looks
# (crowded), and both as they were before crowding.
VARIANTS = (("with_observations", True, "plain"), ("physics_only", False, "plain"),
            ("randomized_train", True, "train"), ("randomized_shifted", True, "shifted"),
            ("uncrowded_train", True, UNCROWDED["train"]), ("uncrowded_shifted", True, UNCROWDED["shifted"]))


def throughput(tasks: list[str], episodes: int) -> dict:
    out = {}
    for task in tqdm(tasks, desc="episodes/min"):
        row = {"family": TASKS[task].family}
        for label, observe, appearance in VARIANTS:
            with TabletopEnv(EnvConfig(task=task, observe=observe, appearance=appearance)) as env:
                run_oracle(env, 10_000)  # warm-up (first pybullet client, imports)
                start, cpu, steps, objects = time.perf_counter(), time.process_time(), 0, 0
                for seed in range(episodes):
                    steps += run_oracle(env, seed).steps_taken
                    objects += len(env.scene.objects)
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            # Wall time depends on what else the shared machine runs; CPU time is this process's own cost.
            row[label] = {"episodes_per_min": 60 * episodes / elapsed, "episodes_per_cpu_min": 60 * episodes / cpu,
                          "mean_steps": steps / episodes, "mean_objects": objects / episodes,
                          "ms_per_episode": 1000 * elapsed / episodes}
        out[task] = row
    return out


def _rate(episodes: dict, label: str) -> float:
    """Oracle episodes per CPU minute over all tasks (total episodes / total CPU time, so long tasks
    weigh what they cost)."""
    rows = [r[label] for r in episodes.values()]
    return len(rows) / sum(1 / r["episodes_per_cpu_min"] for r in rows)


def randomization_cost(episodes: dict) -> dict:
    """Each randomized look against the plain look."""
    plain = _rate(episodes, "with_observations")
    return {label: {"episodes_per_cpu_min": _rate(episodes, label), "ratio_to_plain": _rate(episodes, label) / plain}
            for label in ("with_observations", "randomized_train", "randomized_shifted")}


def crowding_cost(episodes: dict) -> dict:
    """Each randomized look, crowded, against the same look with the distractor counts it had before."""
    out = {}
    for look in ("train", "shifted"):
        crowded, before = _rate(episodes, f"randomized_{look}"), _rate(episodes, f"uncrowded_{look}")
        objects = {label: sum(r[label]["mean_objects"] for r in episodes.values()) / len(episodes)
                   for label in (f"randomized_{look}", f"uncrowded_{look}")}
        out[look] = {"crowded_episodes_per_cpu_min": crowded, "uncrowded_episodes_per_cpu_min": before,
                     "ratio": crowded / before, "mean_objects_crowded": objects[f"randomized_{look}"],
                     "mean_objects_uncrowded": objects[f"uncrowded_{look}"]}
    return out


def observation_cost(repeats: int) -> dict:
    out = {}
    for width, height in ((320, 240), (640, 480)):
        config = EnvConfig(task="put-block-in-zone", cameras=default_cameras(width, height))
        with TabletopEnv(config) as env:
            env.reset(0)
            env._observe()
            times, cpu_times, points = [], [], 0
            for _ in range(repeats):
                start, cpu = time.perf_counter(), time.process_time()
                cloud, _ = env._observe()
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu)
                points = len(cloud)
        out[f"{width}x{height}x3"] = {"ms_median": 1000 * float(np.median(times)), "ms_min": 1000 * float(np.min(times)),
                                      "ms_cpu_median": 1000 * float(np.median(cpu_times)), "points": points}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--oracle-success", action="store_true", help="measure oracle success instead of speed")
    parser.add_argument("--seeds", type=int, default=100, help="seeds per task for --oracle-success")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--unseen-colors", action="store_true")
    parser.add_argument("--appearance", default="plain", choices=["plain", "train", "shifted"],
                        help="appearance split for --oracle-success (sim/appearance.py)")
    parser.add_argument("--noise-mm", type=float, default=0.0,
                        help="Gaussian xy error (mm) added to every oracle pose, to see how precise a policy must be")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task for throughput")
    parser.add_argument("--repeats", type=int, default=10, help="observations timed per resolution")
    parser.add_argument("--tasks", nargs="+", default=["all"],
                        help="task or family names, training-tasks, heldout-tasks or all (default)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        args.tasks = resolve_tasks(args.tasks)
    except ValueError as exc:
        parser.error(str(exc))
    RESULTS.mkdir(exist_ok=True)
    if args.oracle_success:
        result = {"machine": machine(), "seeds": args.seeds, "first_seed": args.first_seed,
                  "unseen_colors": args.unseen_colors, "noise_mm": args.noise_mm, "appearance": args.appearance,
                  "tasks": oracle_success(args.tasks, args.seeds, args.first_seed, args.unseen_colors,
                                          args.noise_mm / 1000, args.appearance)}
        out = args.out or RESULTS / ("oracle_success.json" if args.appearance == "plain"
                                     else f"oracle_success_{args.appearance}.json")
    else:
        result = {"machine": machine(), "observation": observation_cost(args.repeats),
                  "episodes": throughput(args.tasks, args.episodes)}
        result["randomization"] = randomization_cost(result["episodes"])
        result["crowding"] = crowding_cost(result["episodes"])
        out = args.out or RESULTS / "sim.json"
        for res, row in result["observation"].items():
            print(f"observation {res}: {row['ms_median']:.0f} ms median wall, {row['ms_cpu_median']:.0f} ms CPU, "
                  f"{row['points']} points")
        for task, row in result["episodes"].items():
            obs, phys = row["with_observations"], row["physics_only"]
            print(f"{task:40s} ep/min with obs {obs['episodes_per_min']:5.0f} wall {obs['episodes_per_cpu_min']:5.0f} CPU | "
                  f"physics only {phys['episodes_per_min']:5.0f} wall {phys['episodes_per_cpu_min']:5.0f} CPU "
                  f"({phys['mean_steps']:.1f} steps)")
        for label, row in result["randomization"].items():
            print(f"{label:20s} {row['episodes_per_cpu_min']:6.0f} episodes per CPU minute, "
                  f"{row['ratio_to_plain']:.2f} x the plain look")
        for look, row in result["crowding"].items():
            print(f"crowded {look:8s} {row['crowded_episodes_per_cpu_min']:6.0f} episodes per CPU minute "
                  f"({row['mean_objects_crowded']:.1f} objects), {row['ratio']:.2f} x uncrowded "
                  f"({row['uncrowded_episodes_per_cpu_min']:.0f}, {row['mean_objects_uncrowded']:.1f} objects)")
    result["machine"]["load_avg_1min_after"] = os.getloadavg()[0]
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
