"""Pose-DiT plan latency at batch 1: rectified flow with 1/2/4/10 steps vs DDPM-100 and DDIM-10.

One process, one set of weights, one thread; every variant plans the same scene and instruction,
through a Planner with the TorchScript-frozen head (as the policy node plans), and RF-4 once more
through an eager planner for comparison.
The condition encoder runs once per plan whatever the sampler, so its time is reported apart
from the head's (Pose-DiT sampling + pose decoding). Machines are noisy: read the ratios first.

    python bench/bench_pose_dit.py                  # ≈ 1–2 minutes
    python bench/bench_pose_dit.py --seconds 3      # quicker, rougher

Writes bench/results/pose_dit_latency.json (committed) and pose_dit_latency.png (not committed).
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "threedmoe_ros"))

from threedmoe_ros.models.schedulers import DDPM, RectifiedFlow  # noqa: E402
from threedmoe_ros.planner import Planner  # noqa: E402
from threedmoe_ros.policy import Policy, PolicyConfig  # noqa: E402
from threedmoe_ros.data.synthetic import SyntheticPickPlace  # noqa: E402

VARIANTS = {
    "rf-1": (RectifiedFlow(), 1),
    "rf-2": (RectifiedFlow(), 2),
    "rf-4": (RectifiedFlow(), 4),
    "rf-10": (RectifiedFlow(), 10),
    "ddim-10": (DDPM(sampler="ddim"), 10),
    "ddpm-100": (DDPM(sampler="ddpm"), 100),
}
TARGET_RF4_P50_MS = 5.0
TARGET_SPEEDUP = 20.0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def measure(planner: Planner, cloud, instruction: str, steps: int, args) -> dict:
    for i in range(args.warmup):
        planner.plan(cloud, instruction, steps, seed=i)
    enc, head, total = [], [], []
    start = time.perf_counter()
    while len(head) < args.max_iters and (len(head) < args.min_iters or time.perf_counter() - start < args.seconds):
        r = planner.plan(cloud, instruction, steps, seed=len(head))
        enc.append(r.encoder_ms)
        head.append(r.head_ms)
        total.append(r.total_ms)
    return {"steps": steps, "n": len(head), "head_ms": stats(head), "encoder_ms": stats(enc), "total_ms": stats(total)}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    p50 = [results[n]["head_ms"]["p50"] for n in names]
    p99 = [results[n]["head_ms"]["p99"] for n in names]
    enc = [results[n]["encoder_ms"]["p50"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(names))
    colours = ["tab:orange" if n.startswith("dd") else "tab:cyan" if n.endswith("eager") else "tab:blue" for n in names]
    ax.bar(x, p50, color=colours, label="Pose-DiT head p50")
    ax.scatter(x, p99, color="k", marker="_", s=200, label="head p99", zorder=3)
    ax.bar(x, enc, bottom=p50, color="tab:gray", alpha=0.5, label="condition encoder p50")
    ax.axhline(TARGET_RF4_P50_MS, color="tab:red", ls="--", lw=1, label=f"{TARGET_RF4_P50_MS:g} ms target (RF-4)")
    ax.set_yscale("log")
    ax.set_xticks(x, names)
    ax.set_ylabel("plan latency, batch 1 (ms, log)")
    ax.set_title("Pose-DiT sampling: rectified flow vs DDPM/DDIM, same weights, 1 thread")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--horizon", type=int, default=8, help="plan steps T")
    p.add_argument("--seconds", type=float, default=12.0, help="time per variant (after --min-iters)")
    p.add_argument("--min-iters", type=int, default=20)
    p.add_argument("--max-iters", type=int, default=300)
    p.add_argument("--warmup", type=int, default=3, help="plans before each variant is timed")
    p.add_argument("--warmup-seconds", type=float, default=3.0, help="planning before anything is timed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--points-per-object", type=int, default=1000, help="cloud size: objects × this + 400 table points")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--eager", action="store_true", help="plan with the eager head (default: TorchScript-frozen)")
    args = p.parse_args(argv)
    if args.horizon < 1 or args.seconds <= 0 or args.min_iters < 1 or args.max_iters < args.min_iters:
        p.error("need --horizon >= 1, --seconds > 0 and 1 <= --min-iters <= --max-iters")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = PolicyConfig()
    config.head.horizon = args.horizon
    policy = Policy(config).eval()
    # Sampling steps cost the same for trained and random weights; random ones keep every step valid.
    with torch.no_grad():
        for param in policy.head.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    cloud, instruction, _ = SyntheticPickPlace(1, seed=0, points_per_object=args.points_per_object)[0]

    # The same weights, planned eagerly: what the frozen head buys. Each planner has its own policy,
    # so swapping one's scheduler leaves the other's alone.
    eager_policy = Policy(config)
    eager_policy.load_state_dict(policy.state_dict())
    planner, eager = Planner(policy, frozen=not args.eager), Planner(eager_policy, frozen=False)

    # The first second or so of a process runs slower (caches, the TorchScript executor's first
    # passes); plan for a while first so the first variant measured is not penalised.
    start = time.perf_counter()
    while time.perf_counter() - start < args.warmup_seconds:
        planner.plan(cloud, instruction, 4, seed=0)
        eager.plan(cloud, instruction, 4, seed=0)

    load_start = os.getloadavg()[0]
    results = {}
    runs = [(name, planner, scheduler, steps) for name, (scheduler, steps) in VARIANTS.items()]
    if not args.eager:
        runs.append(("rf-4-eager", eager, RectifiedFlow(), 4))
    for name, plan_with, scheduler, steps in runs:
        plan_with.policy.scheduler = scheduler
        results[name] = measure(plan_with, cloud, instruction, steps, args)
        r = results[name]
        print(f"  {name:10s} n={r['n']:4d}  head p50 {r['head_ms']['p50']:8.2f} ms", flush=True)

    rf4, ddpm = results["rf-4"]["head_ms"]["p50"], results["ddpm-100"]["head_ms"]["p50"]
    summary = {
        "ddpm100_over_rf4_head_p50": ddpm / rf4,
        "rf4_head_p50_ms": rf4,
        "per_network_call_ms": (results["rf-10"]["head_ms"]["p50"] - results["rf-1"]["head_ms"]["p50"]) / 9,
        "frozen_speedup_rf4": None if args.eager else results["rf-4-eager"]["head_ms"]["p50"] / rf4,
        "targets": {
            f"rf4_head_p50_le_{TARGET_RF4_P50_MS:g}ms": rf4 <= TARGET_RF4_P50_MS,
            f"ddpm100_ge_{TARGET_SPEEDUP:g}x_rf4": ddpm / rf4 >= TARGET_SPEEDUP,
        },
    }
    report = {
        "benchmark": "pose_dit_latency",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__, "threads": args.threads,
            "python": platform.python_version(),
            # Other work on the machine inflates every figure alike; the ratios survive it better.
            "load_avg_1m": {"start": load_start, "end": os.getloadavg()[0]},
        },
        "setup": {
            "batch": 1, "horizon": args.horizon, "hidden_size": config.head.hidden_size, "depth": config.head.depth,
            "num_heads": config.head.num_heads, "encoder": config.encoder, "cloud_points": len(cloud),
            "condition_tokens": int(policy.encoder([cloud], [instruction])[1].sum()), "instruction": instruction,
            "parameters": policy.num_parameters(),
            "head": "eager" if args.eager else "TorchScript-frozen (Planner(frozen=True)); rf-4-eager: same weights, eager",
        },
        "results": results,
        "summary": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pose_dit_latency.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_plot:
        plot(results, args.out / "pose_dit_latency.png")

    print(f"\nPose-DiT plan latency, batch 1, T={args.horizon}, {args.threads} thread(s), {cpu_name()}, "
          f"load average {load_start:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'variant':10s}{'calls':>6s}{'head p50':>10s}{'head p99':>10s}{'enc p50':>9s}{'total p50':>11s}{'vs rf-4':>9s}")
    for name, r in results.items():
        print(
            f"{name:10s}{r['steps']:6d}{r['head_ms']['p50']:10.2f}{r['head_ms']['p99']:10.2f}"
            f"{r['encoder_ms']['p50']:9.2f}{r['total_ms']['p50']:11.2f}{r['head_ms']['p50'] / rf4:8.1f}x"
        )
    print(f"DDPM-100 / RF-4 (head p50): {summary['ddpm100_over_rf4_head_p50']:.1f}x (target >= {TARGET_SPEEDUP:g}x); "
          f"RF-4 head p50 {rf4:.2f} ms (target <= {TARGET_RF4_P50_MS:g} ms)")
    print(f"wrote {args.out / 'pose_dit_latency.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
