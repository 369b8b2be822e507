"""Table 1 of the 3D-MoE paper on simulator QA that a blind model cannot pass: does the model read
the scene, and does MoE + LoRA beat dense + LoRA?

1. Balanced simulator QA (data/qa.py): training scenes (--train-seeds) and held-out scenes
   (--test-seeds, disjoint), nine question kinds whose answers are uniform per template, and
   phrasings the training split never uses. A blind prior (data.qa.blind_prior: the answer position
   most often right per template on the training split) therefore scores chance on every kind.
2. Stage I once (spatial transformer + projection on captions; PointNet++ and the LLM frozen).
3. Stage II for each variant from the same Stage I encoder, on the same QA items, steps, batch order
   and seed: no-3D ablation (MoE×4 + LoRA, the question without the 3D tokens, `--no-3d`), dense + LoRA,
   MoE E=2 top-2 + LoRA, MoE E=4 top-2 + LoRA; then every held-out question once per model.

Reported per row: EM@1 with its binomial standard error, EM-R, BLEU-4, ROUGE-L, METEOR, CIDEr
(eval/qa_metrics.py), EM@1 per kind (beside its chance level) and on held-out phrasings, training and
answering wall times, text tokens/s; a paired exact McNemar test of MoE×4 against dense and against
the no-3D ablation on the same questions. Answers are one to three words, so corpus BLEU-4 has few
4-grams and stays low. Nothing is tuned on the held-out set: learning rates are fixed up front (the
paper's 2e-5 assumes thousands of steps; a run of ~100 steps needs a larger one).

    nice -n 15 python bench/bench_table1.py            # full: see --help for budgets; ~1 h on 2 shared cores
    python bench/bench_table1.py --quick               # smoke check, tiny LLM, a few steps (~2 min)
    accelerate launch --num_processes 1 bench/bench_table1.py --device cuda --batch-size 16 \
        --stage1-steps 2000 --stage2-steps 6000 --train-seeds 0:400 --threads 8   # on a GPU

Writes bench/results/table1.json and table1.png (--quick: table1_quick.*); runs and data under --work.
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
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "threedmoe_ros"))

import torch  # noqa: E402

from threedmoe_ros.data.qa import DEFAULT_TASKS, KINDS, QADataset, _seed_range, blind_prior, chance, generate  # noqa: E402
from threedmoe_ros.train.stage1 import StageConfig, evaluate, train  # noqa: E402

METRICS = ["EM@1", "EM-R", "BLEU-4", "ROUGE-L", "METEOR", "CIDEr"]
# name → (MoE preset or None for dense, what the LLM sees of the scene)
VARIANTS = {"no-3d": ("e4-top2", "none"), "dense": (None, "scene"), "moe-e2-top2": ("e2-top2", "scene"),
            "moe-e4-top2": ("e4-top2", "scene")}
# --quick: the tiny LLM, two scenes per task, a few steps: every stage and every row, end to end.
QUICK = {"llm": "tiny", "train_seeds": "0:2", "test_seeds": "10000:10001", "stage1_steps": 2, "stage2_steps": 2,
         "warmup_steps": 1, "min_test_questions": 0}


def make_data(root: Path, tasks: list[str], seeds: list[int], split: str) -> tuple[Path, float]:
    """Simulator QA for these seeds, written once and reused (a settings file says what it holds)."""
    stamp = {"tasks": tasks, "seeds": seeds, "split": split, "format": 2}
    if (root / "qa.jsonl").is_file() and (root / "settings.json").is_file() \
            and json.loads((root / "settings.json").read_text()) == stamp:
        return root, 0.0
    t0 = time.perf_counter()
    generate(root, tasks, seeds, split)
    (root / "settings.json").write_text(json.dumps(stamp))
    return root, time.perf_counter() - t0


def prior_scores(train: QADataset, test: QADataset) -> dict:
    """Scores of answering from the question alone (data.qa.blind_prior). A model must beat this."""
    from threedmoe_ros.eval.qa_metrics import qa_metrics

    t0 = time.perf_counter()
    preds = blind_prior(train.items, test.items)
    metrics = qa_metrics(preds, [[it["answer"]] for it in test.items])
    metrics["wall_s"] = round(time.perf_counter() - t0, 2)
    return by_kind(with_standard_error(metrics), preds, test)


def stage(cfg: StageConfig) -> dict:
    t0 = time.perf_counter()
    train(cfg)
    summary = json.loads((Path(cfg.out) / "summary.json").read_text())
    summary["wall_s"] = round(time.perf_counter() - t0, 1)  # model build and checkpoint writing included
    return summary


def scored(model_dir: Path, test: QADataset, args, scene_input: str = "scene") -> dict:
    from threedmoe_ros.models.mm_llm import ThreeDMoELLM

    t0 = time.perf_counter()
    model = ThreeDMoELLM.from_pretrained(model_dir).to(args.device)
    metrics = evaluate(model, test, len(test), args.max_new_tokens, samples=len(test), scene_input=scene_input,
                       seed=args.seed)
    metrics["answers_per_s"] = round(metrics["count"] / metrics["answer_seconds"], 2)
    predictions = [s["prediction"] for s in metrics.pop("samples")]
    (model_dir.parent / "predictions.json").write_text(json.dumps(predictions, indent=1))
    metrics["wall_s"] = round(time.perf_counter() - t0, 1)
    return by_kind(with_standard_error(metrics), predictions, test, samples=5)


def by_kind(metrics: dict, predictions: list[str], test: QADataset, samples: int = 0) -> dict:
    """EM@1 per question kind beside its chance level, EM@1 on the held-out phrasings, and per-item
    correctness for the paired comparison of variants."""
    from collections import defaultdict

    from threedmoe_ros.eval.qa_metrics import exact_match

    right = [exact_match(p, [it["answer"]]) for p, it in zip(predictions, test.items)]
    kinds: dict[str, list[bool]] = defaultdict(list)
    for ok, it in zip(right, test.items):
        kinds[it["kind"]].append(ok)
    items = defaultdict(list)
    for it in test.items:
        items[it["kind"]].append(it)
    metrics["EM@1_by_kind"] = {k: {"EM@1": round(100 * sum(v) / len(v), 1), "chance": round(100 * chance(items[k]), 1),
                                   "n": len(v)} for k, v in sorted(kinds.items())}
    held = [ok for ok, it in zip(right, test.items) if it.get("phrasing") == "held_out"]
    metrics["EM@1_held_out_phrasing"] = {"EM@1": round(100 * sum(held) / len(held), 1) if held else None, "n": len(held)}
    metrics["correct"] = "".join("1" if ok else "0" for ok in right)
    if samples:
        metrics["samples"] = [{"question": it["question"], "prediction": p, "answer": it["answer"]}
                              for p, it in list(zip(predictions, test.items))[:samples]]
    return metrics


def mcnemar(a: str, b: str) -> dict:
    """Paired comparison on the same questions: how many only a gets right, only b, and the exact
    two-sided McNemar p-value (binomial on the discordant pairs)."""
    from math import comb

    only_a = sum(x == "1" and y == "0" for x, y in zip(a, b))
    only_b = sum(x == "0" and y == "1" for x, y in zip(a, b))
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"only_first_right": only_a, "only_second_right": only_b, "p_value": round(p, 3)}


def with_standard_error(metrics: dict) -> dict:
    """Binomial standard error of EM@1 (×100): with ~100 questions, differences of a few points are noise."""
    p = metrics["EM@1"] / 100
    metrics["EM@1_se"] = 100 * (p * (1 - p) / metrics["count"]) ** 0.5
    return metrics


def table(result: dict) -> str:
    head = (f"{'row':<16}" + "".join(f"{m:>9}" for m in METRICS) + f"{'±EM':>6}{'held-out':>9}"
            + f"{'train s':>9}{'eval s':>8}{'tok/s':>7}")
    rows = [head, "-" * len(head)]
    for name, row, trained in table_rows(result):
        held = row["EM@1_held_out_phrasing"]["EM@1"]
        rows.append(f"{name:<16}" + "".join(f"{row[m]:9.1f}" for m in METRICS) + f"{row['EM@1_se']:6.1f}"
                    + (f"{held:9.1f}" if held is not None else f"{'-':>9}")
                    + (f"{trained['seconds']:9.0f}{row['wall_s']:8.0f}{trained['tokens_per_s']:7.0f}" if trained
                       else f"{'-':>9}{row['wall_s']:8.1f}{'-':>7}"))
    return "\n".join(rows)


def table_rows(result: dict) -> list[tuple[str, dict, dict | None]]:
    rows = [("blind prior", result["blind_prior"], None)]
    if result.get("before_stage2"):
        rows.append(("after Stage I", result["before_stage2"], result["stage1"]))
    rows += [(name if name == "no-3d" else f"{name}+LoRA", v["after"], v["train"]) for name, v in result["variants"].items()]
    return rows


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = table_rows(result)
    kinds = list(result["blind_prior"]["EM@1_by_kind"])
    fig, (ax, ax_k) = plt.subplots(1, 2, figsize=(14, 4), gridspec_kw={"width_ratios": [1, 1.4]})
    width = 0.8 / len(rows)
    for i, (name, row, _) in enumerate(rows):
        x = np.arange(len(METRICS))
        ax.bar(x + i * width, [row[m] for m in METRICS], width, label=name,
               yerr=[row["EM@1_se"]] + [0] * (len(METRICS) - 1))
        xk = np.arange(len(kinds))
        ax_k.bar(xk + i * width, [row["EM@1_by_kind"][k]["EM@1"] for k in kinds], width, label=name)
    ax.set_xticks(np.arange(len(METRICS)) + 0.4 - width / 2, METRICS)
    ax.set_ylabel("score (×100)")
    ax.set_title(f"held-out simulator QA ({int(rows[0][1]['count'])} questions)")
    ax.legend(fontsize=8)
    chance_levels = [result["blind_prior"]["EM@1_by_kind"][k]["chance"] for k in kinds]
    ax_k.scatter(np.arange(len(kinds)) + 0.4 - width / 2, chance_levels, marker="_", s=400, color="k", label="chance")
    ax_k.set_xticks(np.arange(len(kinds)) + 0.4 - width / 2, kinds, rotation=30)
    ax_k.set_ylabel("EM@1 by kind")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke check: {', '.join(f'{k}={v}' for k, v in QUICK.items())} unless given")
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    ap.add_argument("--train-seeds", default="0:40", help="scenes trained on (lo:hi), per task")
    ap.add_argument("--test-seeds", default="10000:10012", help="held-out scenes (lo:hi), disjoint from --train-seeds")
    ap.add_argument("--min-test-questions", type=int, default=500, help="refuse to report on fewer held-out questions")
    ap.add_argument("--stage1-steps", type=int, default=120)
    ap.add_argument("--stage2-steps", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--stage1-lr", type=float, default=5e-4, help="projection + spatial transformer")
    ap.add_argument("--stage2-lr", type=float, default=1e-4, help="LoRA, routers, projection")
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=8, help="answers are one to three words")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--score-stage1", action="store_true", help="also score the Stage I model (one more evaluation)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 1 on a shared machine")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--rescore", action="store_true",
                    help="score the checkpoints of a finished run in --work again, keeping --out's training records")
    args = ap.parse_args(argv)
    if args.quick:  # the quick values replace the defaults, not what was given on the command line
        for key, value in QUICK.items():
            if getattr(args, key) == ap.get_default(key):
                setattr(args, key, value)
    results = Path(__file__).parent / "results"
    args.out = args.out or results / ("table1_quick.json" if args.quick else "table1.json")
    args.work = args.work or Path("runs/table1_quick" if args.quick else "runs/table1")
    if args.rescore and not args.out.is_file():
        ap.error(f"--rescore needs the records of a finished run in {args.out}")
    previous = json.loads(args.out.read_text()) if args.rescore else None
    torch.set_num_threads(args.threads)

    try:
        train_seeds, test_seeds = _seed_range(args.train_seeds), _seed_range(args.test_seeds)
    except ValueError:
        ap.error("--train-seeds and --test-seeds are lo:hi ranges or comma lists of integers")
    if set(train_seeds) & set(test_seeds):
        ap.error(f"--train-seeds and --test-seeds overlap: {sorted(set(train_seeds) & set(test_seeds))[:5]}")
    t_start = time.perf_counter()
    try:
        train_dir, gen_train_s = make_data(args.work / "data_train", args.tasks, train_seeds, "train")
        test_dir, gen_test_s = make_data(args.work / "data_test", args.tasks, test_seeds, "test")
    except (KeyError, ValueError) as exc:  # an unknown task names the known ones
        print(f"bench_table1: {exc}", file=sys.stderr)
        return 2
    test = QADataset(test_dir, kinds=KINDS)
    if len(test) < args.min_test_questions:
        print(f"bench_table1: only {len(test)} held-out questions (< --min-test-questions {args.min_test_questions}); "
              "widen --test-seeds", file=sys.stderr)
        return 2
    train_qa = QADataset(train_dir, kinds=KINDS)
    n_train = {"captions": len(QADataset(train_dir, kinds=["caption"])), "qa": len(train_qa)}
    print(f"train: {len(train_seeds) * len(args.tasks)} scenes, {n_train}; held out: "
          f"{len(test_seeds) * len(args.tasks)} scenes, {len(test)} questions")

    common = {"batch_size": args.batch_size, "warmup_steps": args.warmup_steps, "seed": args.seed, "log_every": 5,
              "device": args.device}
    # Stage I on the dense LM: its weights are frozen in Stage I, so the MoE preset does not matter there.
    s1 = StageConfig(out=str(args.work / "stage1"), data=str(train_dir), stage=1, model={"llm": args.llm, "moe": None},
                     max_steps=args.stage1_steps, lr=args.stage1_lr, **common)
    result: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": args.threads, "torch": torch.__version__, "device": args.device,
                    "load_average_at_start": os.getloadavg()},
        # Paths relative to the repository, so results name no machine's directories.
        "settings": {k: (os.path.relpath(v, ROOT) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"train_scenes": len(train_seeds) * len(args.tasks), "train_items": n_train,
                 "test_scenes": len(test_seeds) * len(args.tasks), "test_questions": len(test),
                 "generate_s": round(gen_train_s + gen_test_s, 1)},
        "blind_prior": prior_scores(train_qa, test),
        "stage1": previous["stage1"] if previous else stage(s1),
    }
    if previous:
        result["machine"]["load_average_at_start"] = previous["machine"]["load_average_at_start"]
    if args.score_stage1:
        result["before_stage2"] = scored(Path(s1.out) / "checkpoint", test, args)

    result["variants"] = {}
    for name in args.variants:
        moe, scene_input = VARIANTS[name]
        cfg = StageConfig(out=str(args.work / f"stage2_{name}"), data=str(train_dir), stage=2,
                          model={"llm": args.llm, "moe": moe}, init_encoder=str(Path(s1.out) / "checkpoint"),
                          kinds=list(KINDS), max_steps=args.stage2_steps, lr=args.stage2_lr, scene_input=scene_input,
                          **common)
        v = {"train": previous["variants"][name]["train"] if previous else stage(cfg)}
        v["after"] = scored(Path(cfg.out) / "checkpoint", test, args, scene_input)
        result["variants"][name] = v
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))  # partial results survive an interrupted run
    variants = result["variants"]
    if "moe-e4-top2" in variants:
        result["paired"] = {f"moe-e4-top2 vs {other}": mcnemar(variants["moe-e4-top2"]["after"]["correct"],
                                                               variants[other]["after"]["correct"])
                            for other in ("dense", "no-3d") if other in variants}
    result["total_wall_s"] = previous["total_wall_s"] if previous else round(time.perf_counter() - t_start, 1)
    result["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    print(table(result))
    kinds = list(result["blind_prior"]["EM@1_by_kind"])
    print("EM@1 by kind   " + "".join(f"{k:>9}" for k in kinds))
    print(f"{'(chance)':<15}" + "".join(f"{result['blind_prior']['EM@1_by_kind'][k]['chance']:9.1f}" for k in kinds))
    for name, row, _ in table_rows(result):
        print(f"{name:<15}" + "".join(f"{row['EM@1_by_kind'][k]['EM@1']:9.1f}" for k in kinds))
    for pair, test_ in result.get("paired", {}).items():
        print(f"{pair} (same questions, exact McNemar): {test_}")
    print(f"total {result['total_wall_s']:.0f} s → {args.out}, {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
