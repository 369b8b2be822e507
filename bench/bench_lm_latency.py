"""Whole-plan latency of the LM policy against the light policy, at batch 1, in one process.

A plan is what the policy node does per cloud: objects from the cloud, the condition (for the LM policy,
the frozen LM over the instruction and the object tokens), RF sampling of the head, validation. Three
rows, each on simulator clouds of the training look, timed through the Planner:
  light                 the light policy
  lm, same instruction  the LM policy within an episode: the instruction's keys and values are cached,
                        so only the object tokens run through the LM (every plan after an episode's first)
  lm, new instruction   the LM policy on an episode's first plan: the whole prompt runs
The time of the condition (objects + LM) is reported apart from the head's.

    python bench/bench_lm_latency.py --threads 2          # the shipped default against the light policy

Writes bench/results/lm_latency.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "threedmoe_ros"))

from threedmoe_ros.planner import Planner  # noqa: E402

TARGET_P50_MS = 150.0


def scenes(n: int) -> list[tuple]:
    """(cloud, instruction) of n simulator resets of the paper tasks, training look and phrasing."""
    from threedmoe_ros.sim import EnvConfig, TabletopEnv

    out = []
    tasks = ["put-block-in-zone", "put-block-in-bowl", "stack-blocks"]
    for i in range(n):
        with TabletopEnv(EnvConfig(task=tasks[i % 3], appearance="train", phrasing="train")) as env:
            obs, _ = env.reset(3_000_000 + i)
            out.append((obs["cloud"], obs["instruction"]))
    return out


def timed(planner: Planner, cloud, instruction: str, fresh: bool) -> tuple[float, float]:
    """(whole plan ms, condition ms); `fresh` drops the LM's instruction cache first."""
    if fresh and hasattr(planner.policy.encoder, "_prefixes"):
        planner.policy.encoder._prefixes.clear()
    t0 = time.perf_counter()
    result = planner.plan(cloud, instruction, seed=0)
    return (time.perf_counter() - t0) * 1e3, result.encoder_ms


def summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 1), "p90": round(float(np.percentile(a, 90)), 1),
            "mean": round(float(a.mean()), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lm", default="default", help="the LM policy's checkpoint or shipped name")
    p.add_argument("--light", default="light", help="the light policy's checkpoint or shipped name")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scenes", type=int, default=12)
    p.add_argument("--repeats", type=int, default=5, help="plans per scene and row")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lm_latency.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from threedmoe_ros.checkpoints import policy_path

    data = scenes(a.scenes)
    t0 = time.perf_counter()
    lm = Planner.from_pretrained(policy_path(a.lm))
    load_s = time.perf_counter() - t0
    light = Planner.from_pretrained(policy_path(a.light))
    rows = {"light": (light, False), "lm, same instruction": (lm, False), "lm, new instruction": (lm, True)}
    results = {}
    for name, (planner, fresh) in rows.items():
        for cloud, text in data[:2]:  # warm-up
            timed(planner, cloud, text, fresh)
        whole, cond = [], []
        for _ in range(a.repeats):
            for cloud, text in data:
                w, c = timed(planner, cloud, text, fresh)
                whole.append(w)
                cond.append(c)
        results[name] = {"plan_ms": summary(whole), "condition_ms": summary(cond), "plans": len(whole)}
        print(f"{name:22s} plan p50 {results[name]['plan_ms']['p50']:7.1f} ms   condition p50 "
              f"{results[name]['condition_ms']['p50']:7.1f} ms")
    report = {"threads": a.threads, "lm_checkpoint": str(a.lm), "lm_load_s": round(load_s, 1),
              "target_plan_p50_ms": TARGET_P50_MS, "rows": results,
              "met": results["lm, same instruction"]["plan_ms"]["p50"] <= TARGET_P50_MS}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
