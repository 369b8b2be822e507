"""Segmentation of unlabelled clouds, scored against the simulator's instance labels.

    python bench/bench_segmentation.py                 # → bench/results/segmentation.json + .png
    python bench/bench_segmentation.py --seeds 2       # a quick look

Clouds: every task, in the training and the shifted look, with 1 and with 3 cameras, at the start of
an episode and after half of the oracle's plan has run (blocks in bowls, towers, blocks on zones).
Test-split seeds, so a learned segmenter never trained on them. The labels are stripped before
segmentation and kept to score it:

- a ground-truth object is *recovered* when one segment covers it at IoU ≥ 0.7;
- a *merge* is a segment that holds ≥ 50 % of the visible points of two or more objects
  (counted once per object it swallows beyond the first);
- a *split* is an object whose points are spread over two or more segments, none at IoU ≥ 0.7;
- a *spurious* segment overlaps no object by more than 30 % of its own points.

Objects with fewer than `--min-points` visible points (a block hidden under a tower) are not counted;
how many were left out is reported. Every variant segments the same clouds in this one process
(one core), so their milliseconds per cloud compare.
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

from threedmoe_ros.data.objects import SEGMENTERS, SegmentConfig, segment
from threedmoe_ros.sim.appearance import appearance
from threedmoe_ros.sim.env import EnvConfig, TabletopEnv
from threedmoe_ros.sim.seeds import seed_for
from threedmoe_ros.sim.tasks import TASKS
from threedmoe_ros.types import Cloud

RESULTS = Path(__file__).resolve().parent / "results"
IOU = 0.7


def scene_clouds(look: str, cameras: int, seeds: list[int], tasks: list[str]):
    """(task, seed, stage, Cloud with labels) at an episode's start and halfway through its oracle plan."""
    ranges = dataclasses.replace(appearance(look), cameras=(cameras, cameras))
    for task in tasks:
        with TabletopEnv(EnvConfig(task=task, appearance=ranges)) as env:
            for seed in seeds:
                obs, _ = env.reset(seed)
                yield task, seed, "start", obs["cloud"]
                plan = env.oracle_plan()
                obs, *_ = env.step(plan[: max(1, len(plan) // 2)])
                yield task, seed, "middle", obs["cloud"]


def score(label: np.ndarray, segments: list[np.ndarray], min_points: int) -> dict:
    """Recovered / merged / split / spurious counts of one cloud (see the module docstring)."""
    ids, sizes = np.unique(label[label > 0], return_counts=True)
    counted = ids[sizes >= min_points]
    size = dict(zip(ids.tolist(), sizes.tolist()))
    recovered = merged = split = spurious = 0
    best_iou = {int(i): 0.0 for i in counted}
    share = {int(i): [] for i in counted}  # points of each object per segment
    for seg in segments:
        ls, cs = np.unique(label[seg], return_counts=True)
        inside = [(int(l), int(c)) for l, c in zip(ls, cs) if l > 0 and int(l) in best_iou]
        if not inside or max(c for _, c in inside) <= 0.3 * len(seg):
            spurious += 1
        majority = [l for l, c in inside if c >= 0.5 * size[l]]
        merged += max(0, len(majority) - 1)
        for l, c in inside:
            best_iou[l] = max(best_iou[l], c / (len(seg) + size[l] - c))
            share[l].append(c)
    for l, iou in best_iou.items():
        if iou >= IOU:
            recovered += 1
        elif sum(1 for c in share[l] if c >= 0.1 * size[l]) >= 2:
            split += 1
    return {"objects": len(counted), "left_out": int(len(ids) - len(counted)), "recovered": recovered,
            "merged": merged, "split": split, "spurious": spurious, "segments": len(segments)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="episodes per task, look and camera count (2 clouds each)")
    parser.add_argument("--looks", nargs="+", default=["train", "shifted"])
    parser.add_argument("--variants", nargs="+", default=list(SEGMENTERS), help=f"segmenters to compare ({list(SEGMENTERS)})")
    parser.add_argument("--min-points", type=int, default=20)
    parser.add_argument("--cache", type=Path, default=Path("runs/segmentation_clouds"),
                        help="clouds are rendered once and kept here")
    parser.add_argument("--out", type=Path, default=RESULTS / "segmentation.json")
    args = parser.parse_args(argv)

    tasks = sorted(TASKS)
    seeds = [seed_for("test", i) for i in range(args.seeds)]
    clouds = []
    for look in args.looks:
        path = args.cache / f"{look}_{args.seeds}.npz"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            found = []
            for cams in (1, 3):
                made = scene_clouds(look, cams, seeds, tasks)
                for task, seed, stage, c in tqdm(made, total=2 * len(tasks) * len(seeds), desc=f"{look}, {cams} camera(s)"):
                    found.append((task, seed, stage, cams, c))
            np.savez_compressed(path, meta=np.array([f[:4] for f in found], dtype=object),
                                **{f"xyz{i}": f[4].xyz for i, f in enumerate(found)},
                                **{f"rgb{i}": f[4].rgb for i, f in enumerate(found)},
                                **{f"label{i}": f[4].label for i, f in enumerate(found)})
        data = np.load(path, allow_pickle=True)
        for i, (task, seed, stage, cams) in enumerate(data["meta"]):
            clouds.append((look, str(task), int(seed), str(stage), int(cams),
                           Cloud(data[f"xyz{i}"], data[f"rgb{i}"], data[f"label{i}"])))

    result = {"machine": {"cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
                          "python": platform.python_version(), "platform": platform.platform()},
              "iou": IOU, "min_points": args.min_points, "seeds_per_task": args.seeds,
              "clouds": {look: sum(c[0] == look for c in clouds) for look in args.looks}, "variants": {}}
    for name in args.variants:
        cfg = SegmentConfig(method=name)
        rows, ms = [], []
        for look, task, seed, stage, cams, cloud in tqdm(clouds, desc=name):
            bare = cloud.unlabelled()
            t0 = time.perf_counter()
            segments = segment(bare, cfg)
            ms.append(1e3 * (time.perf_counter() - t0))
            rows.append({"look": look, "task": task, "seed": seed, "stage": stage, "cameras": cams,
                         **score(cloud.label, segments, args.min_points)})
        result["variants"][name] = summarise(rows, ms, args.looks)
        print(f"{name}: " + ", ".join(f"{look} {v['recovered']:.3f}" for look, v in result["variants"][name]["looks"].items())
              + f", {np.median(ms):.1f} ms per cloud (p50)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")
    return 0


def summarise(rows: list[dict], ms: list[float], looks: list[str]) -> dict:
    def total(sel: list[dict]) -> dict:
        n = sum(r["objects"] for r in sel)
        out = {k: sum(r[k] for r in sel) for k in ("objects", "left_out", "recovered", "merged", "split", "spurious", "segments")}
        out["recovered"] = round(out["recovered"] / max(n, 1), 4)
        out["clouds"] = len(sel)
        return out

    by = lambda key, value, sel: [r for r in sel if r[key] == value]  # noqa: E731
    looks_out = {}
    for look in looks:
        sel = by("look", look, rows)
        looks_out[look] = {**total(sel),
                           "by_cameras": {c: total(by("cameras", c, sel)) for c in (1, 3)},
                           "by_stage": {s: total(by("stage", s, sel)) for s in ("start", "middle")},
                           "by_task": {t: total(by("task", t, sel)) for t in sorted({r["task"] for r in sel})}}
    return {"looks": looks_out, "ms_per_cloud": {"p50": round(float(np.median(ms)), 2),
                                                  "p90": round(float(np.percentile(ms, 90)), 2),
                                                  "mean": round(float(np.mean(ms)), 2)}}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(result["variants"])
    looks = list(next(iter(result["variants"].values()))["looks"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(variants)
    for i, name in enumerate(variants):
        v = result["variants"][name]
        keys = [(look, c) for look in looks for c in (1, 3)]
        values = [v["looks"][look]["by_cameras"][c]["recovered"] for look, c in keys]
        ax.bar(np.arange(len(keys)) + i * width, values, width, label=f"{name} ({v['ms_per_cloud']['p50']:.0f} ms)")
        bx.bar(np.arange(3) + i * width, [sum(v["looks"][look][k] for look in looks) for k in ("merged", "split", "spurious")],
               width, label=name)
    ax.set_xticks(np.arange(len(keys)) + width * (len(variants) - 1) / 2, [f"{look}\n{c} cam" for look, c in keys])
    ax.axhline(0.95, color="grey", ls="--", lw=0.8)
    ax.axhline(0.90, color="grey", ls=":", lw=0.8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"objects recovered (IoU ≥ {result['iou']})")
    ax.legend(fontsize=8)
    bx.set_xticks(np.arange(3) + width * (len(variants) - 1) / 2, ["merges", "splits", "spurious segments"])
    bx.set_ylabel("count, both looks")
    bx.legend(fontsize=8)
    fig.suptitle(f"Segmentation of unlabelled clouds ({sum(result['clouds'].values())} clouds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
