"""Pose-DiT on the 3D-MoE condition vs the light encoder, at equal data and budget, scored closed loop.

Variants (each trained `--steps` steps of batch 32 on one thread from the same episodes, pointer head,
rectified flow, then `--episodes` test episodes per task, seen colours, RF-4, k = 1, no refine):
  light                       the light encoder, trained with the head (the shipped default's kind)
  <name>-final_token          the 3D-MoE LLM of checkpoint <name>, frozen, its condition cached once:
                              the last prompt token's state (the paper's) + the object tokens as anchors
  <name>-all_hidden           the same LLM, the states of the object tokens and the instruction
where --encoders names Stage II checkpoints (name=dir; name=fresh builds the untrained LLM, which
shows what Stage I and II buy). One variant is also sampled with 1, 2 and 10 RF steps, and the joint regime
(LoRA + routers + projection trained with the head) is timed for a few steps: on this CPU it is the
run that does not fit.

    python bench/bench_3dmoe_policy.py --data data_out/probe3 --encoders stage0=runs/stage0/checkpoint \\
        stage2=runs/table1/stage2_moe-e4-top2/checkpoint --steps 1500 --episodes 30

Writes bench/results/policy_3dmoe_frozen_llm.json after every variant; a finished run directory is not trained again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "threedmoe_ros"))

from threedmoe_ros.eval.closed_loop import evaluate  # noqa: E402
from threedmoe_ros.planner import Planner  # noqa: E402
from threedmoe_ros.policy import Policy  # noqa: E402
from threedmoe_ros.train.pose_dit import PolicyConfig, TrainConfig, build_policy, collate_plans, open_dataset, train  # noqa: E402

TASKS = ["put-block-in-zone", "put-block-in-bowl", "stack-blocks"]


def trained(cfg: TrainConfig, dataset) -> tuple[Policy, float | None]:
    """The policy of cfg.out: trained now, or (when its state says it reached cfg.max_steps) loaded."""
    state = Path(cfg.out) / "train_state" / "state.pt"
    if state.is_file() and torch.load(state, weights_only=False)["step"] >= cfg.max_steps:
        return Policy.from_pretrained(Path(cfg.out) / "checkpoint"), None
    t0 = time.perf_counter()
    policy = train(cfg, PolicyConfig(), dataset, resume=state.is_file(), progress=True)
    return policy, time.perf_counter() - t0


def joint_step_seconds(cfg: TrainConfig, dataset, steps: int = 3, batch_size: int = 8) -> float:
    """Seconds per optimiser step of the joint regime (LLM LoRA + head) at `batch_size`, forward and backward."""
    policy = build_policy(TrainConfig(**{**cfg.__dict__, "regime": "joint"}), PolicyConfig()).train()
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batch = collate_plans([dataset[i] for i in range(batch_size)], policy.config.head.horizon)
    times = []
    for _ in range(steps + 1):  # the first step also builds caches: not counted
        t0 = time.perf_counter()
        loss, _ = policy(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="recorded episodes (threedmoe-collect)")
    p.add_argument("--encoders", nargs="*", default=[], metavar="NAME=DIR", help="Stage II checkpoints to condition on")
    p.add_argument("--conditions", nargs="+", default=["final_token", "all_hidden"])
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--episodes", type=int, default=30, help="closed-loop test episodes per task")
    p.add_argument("--variants", nargs="+", help="run only these (e.g. light stage0-final_token)")
    p.add_argument("--sweep", help="variant also sampled with 1, 2 and 10 RF steps")
    p.add_argument("--joint", action="store_true", help="time the joint regime's steps for the first encoder")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_3dmoe")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "policy_3dmoe_frozen_llm.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    encoders = dict(e.split("=", 1) for e in args.encoders)
    for name, directory in encoders.items():
        if directory == "fresh":  # the untrained 3D-MoE LLM (SmolLM2-135M, E=4 top-2, LoRA): what pre-training buys
            from threedmoe_ros.models.mm_llm import MMLLMConfig, ThreeDMoELLM

            encoders[name] = str(args.work / "fresh_encoder")
            if not (args.work / "fresh_encoder").is_dir():
                ThreeDMoELLM(MMLLMConfig(seed=0)).save_pretrained(encoders[name])
    variants = {"light": None} | {f"{n}-{c}": (d, c) for n, d in encoders.items() for c in args.conditions}
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.setdefault("settings", {}).update(data=str(args.data), tasks=args.tasks, steps=args.steps, batch_size=32,
                                              test_episodes=args.episodes, sampling="RF-4, k=1, seen colours, pointer head")
    results["settings"].setdefault("encoders", {}).update(encoders)  # every invocation's, kept
    runs = results.setdefault("variants", {})
    dataset = None
    for name, spec in variants.items():
        if args.variants and name not in args.variants:
            continue
        extra = {} if spec is None else {"encoder": "3dmoe", "encoder_checkpoint": spec[0], "condition": spec[1]}
        cfg = TrainConfig(out=str(args.work / name), data=str(args.data), max_steps=args.steps, lr=5e-4,
                          warmup_steps=min(300, args.steps // 5), save_every=500, device="cpu", **extra)
        dataset = dataset or open_dataset(cfg)
        policy, train_s = trained(cfg, dataset)
        planner = Planner(policy)
        run = runs.setdefault(name, {})
        if train_s is not None:
            run["train_s"] = round(train_s, 1)  # with the condition cache's computation for a 3D-MoE variant
        run["by_steps"] = {}
        for steps in ([1, 2, 4, 10] if name == args.sweep else [4]):
            outcomes, times = evaluate(planner, args.tasks, args.episodes, ["seen"], 1, steps, progress=False)
            per_task = {t: sum(o.success for o in outcomes if o.task == t) / args.episodes for t in args.tasks}
            row = {"success": sum(o.success for o in outcomes) / len(outcomes), "per_task": per_task,
                   "plan_ms_p50": sorted(times)[len(times) // 2],
                   "endings": {r: sum(o.reason == r for o in outcomes) for r in sorted({o.reason for o in outcomes})}}
            run["by_steps"][str(steps)] = row
            if steps == 4:
                run.update(row)
            print(f"{name}, RF-{steps}: success {row['success']:.2f} {per_task}, plan p50 {row['plan_ms_p50']:.0f} ms",
                  flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.joint and encoders:
        name, directory = next(iter(encoders.items()))
        cfg = TrainConfig(out=str(args.work / "joint"), data=str(args.data), encoder="3dmoe", encoder_checkpoint=directory,
                          condition="all_hidden", device="cpu")
        seconds = joint_step_seconds(cfg, dataset or open_dataset(cfg))
        results["joint_regime"] = {"encoder": name, "batch_size": 8, "seconds_per_step": round(seconds, 2),
                                   "hours_for_steps_at_batch_32": round(seconds * 4 * args.steps / 3600, 1)}
        print(f"joint regime: {seconds:.1f} s per step of batch 8", flush=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
