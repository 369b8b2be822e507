"""The shape of the 3D-MoE paper's Table 1 on this machine: does Stage II with MoE + LoRA beat dense + LoRA?

Small but honest. On smollm2-135m:
1. simulator captions and QA for training scenes (seeds --train-seeds) and held-out scenes
   (--test-seeds, a disjoint range: no held-out scene is ever trained on);
2. Stage I once (spatial transformer + projection on captions; PointNet++ and the LLM frozen);
3. the held-out QA scored after Stage I ("before" Stage II). Every variant starts from these weights
   and the same answers: upcycled experts are copies of the dense FFN and LoRA's B starts at zero,
   so at the start of Stage II each variant's logits equal the dense model's;
4. Stage II for each variant — dense + LoRA, MoE E=2 top-2 + LoRA, MoE E=4 top-2 + LoRA — from the
   same Stage I encoder, on the same QA items, steps, batch order and seed; then the held-out QA again.

Reported: EM@1 (with its binomial standard error), refined EM, BLEU-4, ROUGE-L, METEOR, CIDEr
(eval/qa_metrics.py) before and after, wall time of every stage and evaluation, and Stage I/II text
tokens/s. Beside them, a blind prior (the most common training answer to the same question): the
templates make yes/no, "nothing" and counts guessable, so the scene only shows in what beats it.
Answers are one to three words, so corpus BLEU-4 has no 4-grams to match and is ~0 here. Nothing is tuned on the
held-out set: the learning rates are fixed up front (the paper's 2e-5 assumes thousands of steps;
a run of ~100 steps needs a larger one) and the held-out set is scored once per model.

    nice -n 15 python bench/bench_table1.py            # ~30-40 min on 2 shared cores, 1 thread
    python bench/bench_table1.py --llm tiny --stage1-steps 2 --stage2-steps 2 --train-seeds 0:2 --test-seeds 100:101

Writes bench/results/table1.json and table1.png; runs and data under --work (default runs/table1).
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "threedmoe_ros"))

import torch  # noqa: E402

from threedmoe_ros.data.qa import QADataset, _seed_range, generate  # noqa: E402
from threedmoe_ros.train.stage1 import StageConfig, evaluate, train  # noqa: E402

QA_KINDS = ["count", "color", "exists", "relation", "closer", "position", "on_top", "inside"]
METRICS = ["EM@1", "EM-R", "BLEU-4", "ROUGE-L", "METEOR", "CIDEr"]
VARIANTS = {"dense": None, "moe-e2-top2": "e2-top2", "moe-e4-top2": "e4-top2"}


def make_data(root: Path, tasks: list[str], seeds: list[int], questions: int) -> tuple[Path, float]:
    """Simulator QA for these seeds, written once and reused (a settings file says which seeds)."""
    stamp = {"tasks": tasks, "seeds": seeds, "questions_per_scene": questions}
    if (root / "qa.jsonl").is_file() and (root / "settings.json").is_file() \
            and json.loads((root / "settings.json").read_text()) == stamp:
        return root, 0.0
    t0 = time.perf_counter()
    generate(root, tasks, seeds, questions)
    (root / "settings.json").write_text(json.dumps(stamp))
    return root, time.perf_counter() - t0


def blind_prior(train: QADataset, test: QADataset) -> dict:
    """Scores of answering without looking: the training set's most common answer to the same question
    text, else to the same kind of question. A model that reads the scene must beat this."""
    from collections import Counter, defaultdict

    from threedmoe_ros.eval.qa_metrics import qa_metrics

    by_text, per_kind = defaultdict(Counter), defaultdict(Counter)
    for it in train.items:
        by_text[it["question"]][it["answer"]] += 1
        per_kind[it["kind"]][it["answer"]] += 1
    preds = [(by_text.get(it["question"]) or per_kind[it["kind"]]).most_common(1)[0][0] for it in test.items]
    return by_kind(with_standard_error(qa_metrics(preds, [[it["answer"]] for it in test.items])), preds, test)


def stage(cfg: StageConfig) -> dict:
    t0 = time.perf_counter()
    train(cfg)
    summary = json.loads((Path(cfg.out) / "summary.json").read_text())
    summary["wall_s"] = round(time.perf_counter() - t0, 1)  # model build and checkpoint writing included
    return summary


def scored(model_dir: Path, test: QADataset, args) -> dict:
    from threedmoe_ros.models.mm_llm import ThreeDMoELLM

    model = ThreeDMoELLM.from_pretrained(model_dir)
    metrics = evaluate(model, test, len(test), args.max_new_tokens, samples=len(test))
    metrics["answers_per_s"] = round(metrics["count"] / metrics["answer_seconds"], 2)
    predictions = [s["prediction"] for s in metrics.pop("samples")]
    (model_dir.parent / "predictions.json").write_text(json.dumps(predictions, indent=1))
    return by_kind(with_standard_error(metrics), predictions, test, samples=5)


def by_kind(metrics: dict, predictions: list[str], test: QADataset, samples: int = 0) -> dict:
    """EM@1 per question kind (which kinds read the scene, which a prior answers), and per-item
    correctness for the paired comparison of variants."""
    from collections import defaultdict

    from threedmoe_ros.eval.qa_metrics import exact_match

    right = [exact_match(p, [it["answer"]]) for p, it in zip(predictions, test.items)]
    kinds: dict[str, list[bool]] = defaultdict(list)
    for ok, it in zip(right, test.items):
        kinds[it["kind"]].append(ok)
    metrics["EM@1_by_kind"] = {k: {"EM@1": round(100 * sum(v) / len(v), 1), "n": len(v)} for k, v in sorted(kinds.items())}
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
    head = (f"{'variant':<14}{'when':<8}" + "".join(f"{m:>9}" for m in METRICS) + f"{'±EM':>6}"
            + f"{'train s':>9}{'tok/s':>8}")
    rows = [head, "-" * len(head)]
    prior = result["blind_prior"]
    rows.append(f"{'(no scene)':<14}{'prior':<8}" + "".join(f"{prior[m]:9.1f}" for m in METRICS)
                + f"{prior['EM@1_se']:6.1f}")
    before = result["before_stage2"]
    rows.append(f"{'(stage I)':<14}{'before':<8}" + "".join(f"{before[m]:9.1f}" for m in METRICS)
                + f"{before['EM@1_se']:6.1f}{result['stage1']['seconds']:9.0f}{result['stage1']['tokens_per_s']:8.0f}")
    for name, v in result["variants"].items():
        rows.append(f"{name:<14}{'after':<8}" + "".join(f"{v['after'][m]:9.1f}" for m in METRICS)
                    + f"{v['after']['EM@1_se']:6.1f}{v['train']['seconds']:9.0f}{v['train']['tokens_per_s']:8.0f}")
    return "\n".join(rows)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = ["no scene (prior)", "after Stage I"] + [f"{n} + LoRA" for n in result["variants"]]
    rows = [result["blind_prior"], result["before_stage2"]] + [v["after"] for v in result["variants"].values()]
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(rows)
    x = np.arange(len(METRICS))
    for i, (name, row) in enumerate(zip(names, rows)):
        ax.bar(x + i * width, [row[m] for m in METRICS], width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, METRICS)
    ax.set_ylabel("score (×100)")
    ax.set_title(f"held-out simulator QA ({int(rows[0]['count'])} questions)")
    ax.legend(fontsize=8)
    ax_t.bar(list(result["variants"]), [v["train"]["seconds"] for v in result["variants"].values()])
    ax_t.set_ylabel("Stage II wall time (s)")
    ax_t.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--tasks", nargs="+", default=["put-block-in-bowl", "stack-blocks", "put-block-in-zone"])
    ap.add_argument("--train-seeds", default="0:20", help="scenes trained on (lo:hi), per task")
    ap.add_argument("--test-seeds", default="1000:1005", help="held-out scenes (lo:hi), disjoint from --train-seeds")
    ap.add_argument("--questions-per-scene", type=int, default=8)
    ap.add_argument("--stage1-steps", type=int, default=60)
    ap.add_argument("--stage2-steps", type=int, default=80)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--stage1-lr", type=float, default=5e-4, help="projection + spatial transformer")
    ap.add_argument("--stage2-lr", type=float, default=1e-4, help="LoRA, routers, projection")
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=8, help="answers are one to four words")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 1 on a shared machine")
    ap.add_argument("--work", type=Path, default=Path("runs/table1"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "table1.json")
    ap.add_argument("--rescore", action="store_true",
                    help="score the checkpoints of a finished run in --work again, keeping --out's training records")
    args = ap.parse_args(argv)
    previous = json.loads(args.out.read_text()) if args.rescore else None
    torch.set_num_threads(args.threads)

    train_seeds, test_seeds = _seed_range(args.train_seeds), _seed_range(args.test_seeds)
    if set(train_seeds) & set(test_seeds):
        ap.error(f"--train-seeds and --test-seeds overlap: {sorted(set(train_seeds) & set(test_seeds))[:5]}")
    t_start = time.perf_counter()
    train_dir, gen_train_s = make_data(args.work / "data_train", args.tasks, train_seeds, args.questions_per_scene)
    test_dir, gen_test_s = make_data(args.work / "data_test", args.tasks, test_seeds, args.questions_per_scene)
    test = QADataset(test_dir, kinds=QA_KINDS)
    n_train = {"captions": len(QADataset(train_dir, kinds=["caption"])), "qa": len(QADataset(train_dir, kinds=QA_KINDS))}
    print(f"train: {len(train_seeds) * len(args.tasks)} scenes, {n_train}; held out: "
          f"{len(test_seeds) * len(args.tasks)} scenes, {len(test)} questions")

    common = {"batch_size": args.batch_size, "warmup_steps": args.warmup_steps, "seed": args.seed, "log_every": 5}
    # Stage I on the dense LM: its weights are frozen in Stage I, so the MoE preset does not matter there.
    s1 = StageConfig(out=str(args.work / "stage1"), data=str(train_dir), stage=1, model={"llm": args.llm, "moe": None},
                     max_steps=args.stage1_steps, lr=args.stage1_lr, **common)
    result: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": args.threads, "torch": torch.__version__, "device": "cpu",
                    "load_average_at_start": os.getloadavg()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"train_scenes": len(train_seeds) * len(args.tasks), "train_items": n_train,
                 "test_scenes": len(test_seeds) * len(args.tasks), "test_questions": len(test),
                 "generate_s": round(gen_train_s + gen_test_s, 1)},
        "blind_prior": blind_prior(QADataset(train_dir, kinds=QA_KINDS), test),
        "stage1": previous["stage1"] if previous else stage(s1),
    }
    if previous:
        result["machine"]["load_average_at_start"] = previous["machine"]["load_average_at_start"]
    t0 = time.perf_counter()
    result["before_stage2"] = scored(Path(s1.out) / "checkpoint", test, args)
    result["before_stage2"]["wall_s"] = round(time.perf_counter() - t0, 1)

    result["variants"] = {}
    for name in args.variants:
        cfg = StageConfig(out=str(args.work / f"stage2_{name}"), data=str(train_dir), stage=2,
                          model={"llm": args.llm, "moe": VARIANTS[name]}, init_encoder=str(Path(s1.out) / "checkpoint"),
                          kinds=QA_KINDS, max_steps=args.stage2_steps, lr=args.stage2_lr, **common)
        v = {"train": previous["variants"][name]["train"] if previous else stage(cfg)}
        t0 = time.perf_counter()
        v["after"] = scored(Path(cfg.out) / "checkpoint", test, args)
        v["after"]["wall_s"] = round(time.perf_counter() - t0, 1)
        v["vs_dense"] = mcnemar(v["after"]["correct"], result["variants"]["dense"]["after"]["correct"]) \
            if "dense" in result["variants"] else None
        result["variants"][name] = v
        args.out.write_text(json.dumps(result, indent=2))  # partial results survive an interrupted run
    result["total_wall_s"] = previous["total_wall_s"] if previous else round(time.perf_counter() - t_start, 1)
    result["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    print(table(result))
    kinds = list(result["blind_prior"]["EM@1_by_kind"])
    print("EM@1 by kind   " + "".join(f"{k:>10}" for k in kinds))
    for name, row in [("prior", result["blind_prior"]), ("stage I", result["before_stage2"])] + \
            [(n, v["after"]) for n, v in result["variants"].items()]:
        print(f"{name:<15}" + "".join(f"{row['EM@1_by_kind'][k]['EM@1']:10.1f}" for k in kinds))
    for name, v in result["variants"].items():
        if v.get("vs_dense"):
            print(f"{name} vs dense (same questions): {v['vs_dense']}")
    print(f"total {result['total_wall_s']:.0f} s → {args.out}, {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
