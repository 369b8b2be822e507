"""3D-MoE LLM latency and training throughput on this machine (DESIGN.md §7.1 encoder share, §7.5).

For the smollm2-135m preset (or --llm tiny), dense vs upcycled E=4 top-2, both with LoRA
(and the E=4 model with LoRA merged into per-expert weights, for inference):
- 3D encoder time for one tabletop cloud (grouping + PointNet++ + spatial transformer + projection);
- condition latency (cloud + instruction → final-token hidden state), what the policy node waits for;
- answer latency for 16 greedy tokens;
- one Stage II training step (forward + backward + AdamW) at batch 4: samples/s and tokens/s.

    python bench/bench_moe.py && python bench/bench_mm_llm.py [--threads 1] [--repeats 2] [--llm smollm2-135m]

Writes bench/results/mm_llm.json. Variants are timed round-robin and the minimum kept (shared machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "threedmoe_ros"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from threedmoe_ros.models.llm import load_llm  # noqa: E402
from threedmoe_ros.models.mm_llm import MMLLMConfig, ThreeDMoELLM  # noqa: E402
from threedmoe_ros.models.moe import unshare_experts  # noqa: E402
from threedmoe_ros.types import Cloud  # noqa: E402


def tabletop_cloud(seed: int = 0, objects: int = 6, points: int = 30_000) -> Cloud:
    """A table plane and `objects` labelled boxes, about the size of a fused simulator cloud."""
    rng = np.random.default_rng(seed)
    n_obj = points // (3 * objects)
    table = np.c_[rng.uniform(0.2, 0.8, (points - n_obj * objects, 1)), rng.uniform(-0.4, 0.4, (points - n_obj * objects, 1)),
                  np.zeros((points - n_obj * objects, 1))]
    boxes = [np.array([rng.uniform(0.3, 0.7), rng.uniform(-0.3, 0.3), 0.02]) + rng.uniform(-0.02, 0.02, (n_obj, 3))
             for _ in range(objects)]
    xyz = np.concatenate([table, *boxes]).astype(np.float32)
    label = np.concatenate([np.zeros(len(table)), np.repeat(np.arange(1, objects + 1), n_obj)]).astype(np.int32)
    return Cloud(xyz, rng.integers(0, 256, (len(xyz), 3), dtype=np.uint8), label)


def time_round_robin(fns: dict, repeats: int) -> dict:
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: {"min_ms": 1e3 * min(v), "median_ms": 1e3 * statistics.median(v)} for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # One thread by default: on a shared 2-core machine two OpenMP threads spin against other
    # processes, and the many small ops of token-by-token decoding ran 20× slower (47 s vs 1.9 s for
    # 16 tokens of SmolLM2). Large matmuls (bench_moe.py) suffer far less.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mm_llm.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    llm, tok = load_llm(args.llm)
    models = {
        name: ThreeDMoELLM(MMLLMConfig(llm=args.llm, moe=moe), llm=copy.deepcopy(llm), tokenizer=tok).eval()
        for name, moe in (("dense_lora", None), ("moe_e4_lora", "e4-top2"))
    }
    # What a deployed policy would run: LoRA folded into per-expert weights (no peft wrappers).
    merged = copy.deepcopy(models["moe_e4_lora"])
    unshare_experts(merged.llm)
    merged.llm = merged.llm.merge_and_unload()
    cloud = tabletop_cloud()
    instruction = "put the red block in the green bowl"
    batch = ([tabletop_cloud(s) for s in range(4)], ["Describe the scene."] * 4,
             ["six blocks on the table: a red block, a blue block and four others."] * 4)

    fns = {}
    with torch.inference_mode():
        scene = models["dense_lora"].encoder.objects([cloud])
        fns["encoder_3d"] = lambda: models["dense_lora"].encoder([cloud])
        fns["encoder_3d_pointnet_only"] = lambda: models["dense_lora"].encoder.encode_objects(scene)
        for name, m in {**models, "moe_e4_merged": merged}.items():
            fns[f"condition_{name}"] = lambda m=m: m([cloud], [instruction])
            fns[f"answer16_{name}"] = lambda m=m: m.llm.generate(
                **{k: v for k, v in m.build_inputs([cloud], [instruction]).items() if k in ("inputs_embeds", "attention_mask")},
                max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
        latency = time_round_robin(fns, args.repeats)

    train = {}
    for name, m in models.items():
        m.train()
        m.configure_stage(2)
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-5)

        def step(m=m, opt=opt):
            loss, _ = m.loss(*batch)
            opt.zero_grad()
            loss.backward()
            opt.step()

        t = time_round_robin({name: step}, args.repeats)[name]
        tokens = int(m.build_inputs(*batch)["attention_mask"].sum())
        train[name] = {**t, "samples_per_s": 4 / (t["min_ms"] / 1e3), "tokens_per_s": tokens / (t["min_ms"] / 1e3),
                       "tokens_per_batch": tokens,
                       "trainable_params": sum(p.numel() for p in m.parameters() if p.requires_grad)}

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
                    "torch": torch.__version__, "device": "cpu"},
        "llm": args.llm, "objects_in_cloud": len(scene[0]), "cloud_points": len(cloud),
        "latency_ms": latency,
        "moe_over_dense_condition": latency["condition_moe_e4_lora"]["min_ms"] / latency["condition_dense_lora"]["min_ms"],
        "moe_over_dense_answer16": latency["answer16_moe_e4_lora"]["min_ms"] / latency["answer16_dense_lora"]["min_ms"],
        "train_step_batch4": train,
    }
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for k, v in latency.items():
        print(f"{k:32s} {v['min_ms']:8.1f} ms")
    for k, v in train.items():
        print(f"train step {k:20s} {v['min_ms']:8.1f} ms  {v['tokens_per_s']:.0f} tokens/s")
    print(f"wrote {args.out} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
