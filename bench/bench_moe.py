"""MoE layer speed and upcycled-model memory at Llama-3.2-1B shapes (DESIGN.md §7.2).

Speed: one E=4 top-2 MoEFeedForward vs the dense FFN it came from, and vs a naive loop that runs
every expert over the full batch and masks (E × dense). Grouped dispatch (independent experts)
should cost about top_k × dense (target ≤ 1.15 × 2 × dense). Experts sharing one frozen base (the
LoRA default) run the base matmuls once: about 1 × dense, plus the LoRA deltas (timed with the
paper's r=128 on every expert projection).

Memory: parameters of a Llama-3.2-1B-shaped model built on the meta device (shapes only, no
weights), dense vs upcycled to E=4 with shared frozen experts vs with E independent copies, with
and without the paper's LoRA (r=128 on q, k, v, o and every expert projection).

    python bench/bench_moe.py [--threads 2] [--tokens 512] [--repeats 5] [--out bench/results/moe.json]
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

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "threedmoe_ros"))

from threedmoe_ros.models.llm import LORA_PRESETS, apply_lora  # noqa: E402
from threedmoe_ros.models.moe import FFN_PROJECTIONS, MoEFeedForward, count_parameters, upcycle_to_moe  # noqa: E402

# Llama 3.2 1B (config.json of meta-llama/Llama-3.2-1B).
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True)


def naive_masked_moe(layer: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """The baseline grouped dispatch replaces: every expert over every token, masked by routing."""
    flat = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(layer.router(flat).float(), dim=-1)
    top_w, top_i = probs.topk(layer.top_k, dim=-1)
    top_w = top_w / top_w.sum(-1, keepdim=True)
    out = torch.zeros_like(flat)
    for e, expert in enumerate(layer.experts):
        weight = (top_w * (top_i == e)).sum(-1, keepdim=True).to(flat.dtype)  # (N, 1), 0 where not routed
        out += expert(flat) * weight
    return out.reshape(x.shape)


def time_interleaved(fns: dict, repeats: int) -> dict:
    """Time each variant `repeats` times, round-robin, so load from other processes hits all alike.

    The minimum is the figure compared: on a shared machine, noise only ever adds time.
    """
    for fn in fns.values():
        fn()  # warm-up: allocator and kernel selection
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: {"min_s": min(ts), "median_s": statistics.median(ts), "times_s": ts} for name, ts in times.items()}


def bench_speed(tokens: int, repeats: int) -> dict:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    dense = LlamaMLP(LlamaConfig(**LLAMA_1B)).eval()
    # All variants read the dense weights (shared, frozen): no extra memory per variant.
    grouped = MoEFeedForward.from_dense(dense, num_experts=4, top_k=2).eval()
    grouped.shared_dispatch = False  # what independent (fully fine-tuned) experts cost
    shared = MoEFeedForward.from_dense(dense, num_experts=4, top_k=2).eval()
    shared.router.load_state_dict(grouped.router.state_dict())
    lora = copy.deepcopy(shared)  # deepcopy keeps the four experts on one weight
    lora_cfg = LORA_PRESETS["llama-3.2-1b"]
    inject_adapter_in_model(LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, target_modules=list(FFN_PROJECTIONS)), lora)
    with torch.no_grad():  # trained-looking adapters (B starts at zero)
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.01)
    x = torch.randn(1, tokens, LLAMA_1B["hidden_size"])
    with torch.inference_mode():
        results = time_interleaved({
            "dense": lambda: dense(x),
            "moe_grouped": lambda: grouped(x),
            "moe_shared": lambda: shared(x),
            "moe_shared_lora_r128": lambda: lora(x),
            "moe_naive_masked": lambda: naive_masked_moe(grouped, x),
        }, repeats)
        same = (grouped(x) - naive_masked_moe(grouped, x)).abs().max().item()
        same_shared = (shared(x) - grouped(x)).abs().max().item()
    d = results["dense"]["min_s"]
    stats = grouped.last_stats
    return {
        **results,
        "grouped_over_dense": results["moe_grouped"]["min_s"] / d,
        "grouped_over_2x_dense": results["moe_grouped"]["min_s"] / (2 * d),
        "shared_over_dense": results["moe_shared"]["min_s"] / d,
        "shared_lora_over_dense": results["moe_shared_lora_r128"]["min_s"] / d,
        "naive_over_dense": results["moe_naive_masked"]["min_s"] / d,
        "naive_over_grouped": results["moe_naive_masked"]["min_s"] / results["moe_grouped"]["min_s"],
        "target_grouped_over_2x_dense": 1.15,
        "grouped_vs_naive_max_abs_diff": same,
        "shared_vs_grouped_max_abs_diff": same_shared,
        "expert_token_fraction": [round(f, 4) for f in stats.fraction.tolist()],
    }


def bench_memory() -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        dense = LlamaForCausalLM(LlamaConfig(**LLAMA_1B))
    variants: dict[str, nn.Module] = {"dense": dense}
    for name, share in (("moe_e4_shared", True), ("moe_e4_copies", False)):
        variants[name] = upcycle_to_moe(copy.deepcopy(dense), 4, 2, share_frozen_experts=share)
    lora = LORA_PRESETS["llama-3.2-1b"]
    with torch.device("meta"):  # LoRA matrices on meta too: counted, never allocated
        variants["moe_e4_shared_lora_r128"] = apply_lora(copy.deepcopy(variants["moe_e4_shared"]), lora)
        variants["moe_e4_copies_lora_r128"] = apply_lora(copy.deepcopy(variants["moe_e4_copies"]), lora)
        variants["dense_lora_r128"] = apply_lora(copy.deepcopy(dense), lora)
    base = count_parameters(dense).total
    out = {}
    for name, model in variants.items():
        c = count_parameters(model)
        out[name] = {
            "params": c.total,
            "trainable": c.trainable,
            "bf16_GiB": round(c.total * 2 / 2**30, 3),
            "over_dense": round(c.total / base, 3),
        }
    out["targets"] = {"moe_e4_shared_over_dense": 1.2, "moe_e4_copies_over_dense_expected": 2.9}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "moe.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": args.threads, "torch": torch.__version__, "device": "cpu"},
        "shapes": {"D": LLAMA_1B["hidden_size"], "I": LLAMA_1B["intermediate_size"], "tokens": args.tokens,
                   "experts": 4, "top_k": 2, "dtype": "float32"},
        "speed": bench_speed(args.tokens, args.repeats),
        "memory": bench_memory(),
    }
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    s, m = result["speed"], result["memory"]
    print(f"dense {s['dense']['min_s'] * 1e3:.0f} ms | grouped {s['moe_grouped']['min_s'] * 1e3:.0f} ms "
          f"({s['grouped_over_2x_dense']:.2f} × 2·dense, target ≤ 1.15) | naive {s['moe_naive_masked']['min_s'] * 1e3:.0f}"
          f" ms ({s['naive_over_grouped']:.2f} × grouped)")
    print(f"shared base {s['moe_shared']['min_s'] * 1e3:.0f} ms ({s['shared_over_dense']:.2f} × dense) | "
          f"shared + LoRA r=128 {s['moe_shared_lora_r128']['min_s'] * 1e3:.0f} ms ({s['shared_lora_over_dense']:.2f} × dense)")
    for name in ("moe_e4_shared", "moe_e4_copies", "moe_e4_shared_lora_r128"):
        print(f"{name}: {m[name]['params'] / 1e9:.3f} B params = {m[name]['over_dense']:.2f} × dense")
    print(f"wrote {args.out} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
