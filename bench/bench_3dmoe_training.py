"""What the top-layer regime buys: training samples/s of the 3D-MoE when only its top layers run per step (the
layers below cached once per sample) against the full pass (every layer up to the read layer run forward and
backward each step, LoRA and experts in the same top layers), on the same batches, in one process.

Rows, each a forward + backward + AdamW step of the question loss on simulator questions:
  top, MoE x4   the shipped regime: cached states after the frozen layers, the top `tune_layers` upcycled (E=4 top-2)
  top, dense    the same top without experts
  full pass     the same MoE x4 model, but each step runs the frozen layers too (nothing cached)
  cache         the frozen layers' forward alone, once per sample (what the top regime pays up front)

    python bench/bench_3dmoe_training.py --data runs/qa/train --threads 1

Writes bench/results/3dmoe_training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "threedmoe_ros"))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def timed_steps(step, batches: list, repeats: int) -> list[float]:
    step(batches[0])  # warm-up
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        step(batches[i % len(batches)])
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/qa/train", help="simulator questions (threedmoe-qa-data --out DIR)")
    ap.add_argument("--init-from", default="", help="the lm policy whose 3D-MoE is timed (default: the shipped default)")
    ap.add_argument("--tune-layers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "3dmoe_training.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from threedmoe_ros.train.stage2 import Questions, load_encoder

    n = args.batch_size * 2
    rows = {}
    for name, moe in (("top, MoE x4", "e4-top2"), ("top, dense", None)):
        enc = load_encoder(args.init_from, tune_layers=args.tune_layers, lora="smollm2-135m", moe=moe)
        batches = [b[1:] for b in Questions(args.data, enc.light.config, n).batches(args.batch_size)]
        t0 = time.perf_counter()
        cached = [enc.precompute(*b) for b in batches]  # the frozen layers, once per sample
        cache_s = (time.perf_counter() - t0) / n
        opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-4)

        def step(states, enc=enc, opt=opt):
            loss, _ = enc.qa_loss(states)
            loss.backward()
            opt.step()
            opt.zero_grad()

        times = timed_steps(step, cached, args.repeats)
        rows[name] = {"samples_per_s": args.batch_size / float(np.median(times)), "step_s": float(np.median(times))}
        if moe is not None:
            tokens = float(np.mean([len(s.hidden) for c in cached for s in c]))
            rows["cache"] = {"samples_per_s": 1 / cache_s, "note": "the frozen layers' forward, once per sample"}
            # Nothing cached: every step runs the frozen layers again before the top.
            times = timed_steps(lambda b: step(enc.precompute(*b)), batches, args.repeats)
            rows["full pass"] = {"samples_per_s": args.batch_size / float(np.median(times)),
                                 "step_s": float(np.median(times))}
    speedup = rows["top, MoE x4"]["samples_per_s"] / rows["full pass"]["samples_per_s"]
    result = {"machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
                          "torch": torch.__version__, "load_average": os.getloadavg()},
              "settings": {k: str(v) for k, v in vars(args).items() if k != "out"}, "mean_tokens": tokens, "rows": rows,
              "top_over_full": speedup}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in rows.items():
        print(f"{name:<14}{r['samples_per_s']:8.1f} samples/s")
    print(f"top-layer regime / full pass: {speedup:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
