"""Table 1 of the 3D-MoE paper on simulator QA that a blind model cannot pass: does the 3D-MoE read the scene,
and do experts beat a dense top? Every row is the shipped policy's own 3D-MoE (its object tokens and prompt),
trained by Stage II (train/stage2.py) over the frozen layers' states, on the same questions, steps, batch and seed.

Rows:
  blind prior   the answer option most often right per template on the training questions (data.qa.blind_prior)
  frozen LM     the shipped default's LM as it is: nothing of it trained, answers read at the head's layer
  no-3D         MoE x4 + LoRA trained on the questions with no object tokens
  dense LoRA    the top layers dense, with LoRA
  MoE x2/x4     the top layers upcycled to E = 2 / 4 experts, top-2, with LoRA and routers

Reported: EM@1 with its binomial standard error and per kind of question beside chance; training samples/s;
for the MoE rows the routing on held-out questions (entropy per layer against log E, expert shares).

    python bench/bench_table1.py --data runs/qa/train --test runs/qa/test --rows moe-e4 dense frozen &
    python bench/bench_table1.py --data runs/qa/train --test runs/qa/test --rows no-3d moe-e2     # the other core
    python bench/bench_table1.py --data runs/qa/train --test runs/qa/test --report                 # table + plots

Make the data with `threedmoe-qa-data --out runs/qa/train --split train --seeds 0:200 --per-kind 2` and
`--out runs/qa/test --split test --seeds 10000:10030`. Each row's result is kept in --work/ROW.json, so rows run
in any order and in parallel. Writes bench/results/table1.json, table1.png and table1_routing.png.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

# row → (MoE preset, "dense", or None for the untrained LM; whether the questions come with the scene)
ROWS = {"frozen": (None, True), "no-3d": ("e4-top2", False), "dense": ("dense", True),
        "moe-e2": ("e2-top2", True), "moe-e4": ("e4-top2", True)}
LABELS = {"prior": "blind prior", "frozen": "frozen LM", "no-3d": "no-3D (MoE x4)", "dense": "dense LoRA",
          "moe-e2": "MoE x2 + LoRA", "moe-e4": "MoE x4 + LoRA"}


def routing(encoder, path: str, no_3d: bool = False, batch_size: int = 32) -> dict:
    """Routing of the trained top over every held-out question: per layer, entropy (nats and / log E) and shares."""
    from threedmoe_ros.models.moe import RoutingTally, routing_entropy_max
    from threedmoe_ros.train.stage2 import Questions, lower_states

    states = lower_states(encoder, Questions(path, encoder.light.config), no_3d, progress=False)
    tally = RoutingTally()
    with torch.no_grad():
        for lo in range(0, len(states), batch_size):
            encoder._top(states[lo: lo + batch_size])
            tally.update(encoder.top)
    out = {}
    for layer, s in tally.stats().items():
        E = len(s.fraction)
        out[str(layer)] = {"entropy": s.entropy, "entropy_over_logE": s.entropy / routing_entropy_max(E),
                           "fraction": [float(f) for f in s.fraction], "tokens": s.num_tokens}
    return out


def linear_probe(Xtr: np.ndarray, ytr: list, Xte: np.ndarray, yte: list, weight_decay: float = 1e-2) -> float:
    """Accuracy of a multinomial logistic regression (standardised features, L-BFGS) fitted on (Xtr, ytr)."""
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    Xtr, Xte = (torch.tensor((x - mu) / sd, dtype=torch.float32) for x in (Xtr, Xte))
    classes = sorted(set(ytr))
    target = torch.tensor([classes.index(v) for v in ytr])
    W = torch.zeros(Xtr.shape[1], len(classes), requires_grad=True)
    b = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=300)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Xtr @ W + b, target) + weight_decay * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        predicted = (Xte @ W + b).argmax(1).tolist()
    return float(np.mean([classes[p] == v for p, v in zip(predicted, yte)]))


def probe(args) -> dict:
    """Is the answer in the frozen layers' states already? Per kind, a linear probe on the state of the position
    that predicts the answer's first token (after the frozen layers, as cached for the rows), fitted on 3/4 of
    the training questions and scored on the rest, beside the majority answer of that quarter."""
    from threedmoe_ros.models.lm_condition import LMConditionConfig
    from threedmoe_ros.train.stage2 import Questions

    states = torch.load(Path(args.work) / "qa_states.pt", weights_only=False)["items"]
    records = Questions(args.data, LMConditionConfig().light_config(), args.questions, args.seed).records
    if len(states) != len(records):
        raise SystemExit(f"{args.work}/qa_states.pt holds {len(states)} questions, --data/--questions give {len(records)}")
    X = np.stack([s.hidden[len(s.hidden) - len(s.answer) - 1].float().numpy() for s in states])
    answers = np.array([r["answer"] for r in records])
    rng = np.random.default_rng(args.seed)
    out = {}
    for kind in sorted({r["kind"] for r in records}):
        idx = rng.permutation([i for i, r in enumerate(records) if r["kind"] == kind])
        train, test = idx[: 3 * len(idx) // 4], idx[3 * len(idx) // 4:]
        majority = max(np.mean(answers[test] == a) for a in set(answers[test]))
        out[kind] = {"questions": len(idx), "majority": float(majority),
                     "probe": linear_probe(X[train], list(answers[train]), X[test], list(answers[test]))}
        print(f"{kind:<10} probe {out[kind]['probe']:.2f}  majority {majority:.2f}  ({len(idx)} questions)")
    return out


def run_row(row: str, args) -> dict:
    from threedmoe_ros.train.stage2 import Questions, Stage2Config, load_encoder, score, train

    moe, scene = ROWS[row]
    t0 = time.perf_counter()
    if moe is None:
        encoder = load_encoder(args.init_from)
        result = {"train": None}
    else:
        cfg = Stage2Config(out=str(Path(args.work) / row), data=args.data, init_from=args.init_from,
                           tune_layers=args.tune_layers, moe=moe, no_3d=not scene, max_steps=args.steps,
                           questions=args.questions,
                           batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                           log_every=25, save_every=10 ** 9, seed=args.seed, device="cpu", threads=1,
                           states=str(Path(args.work) / ("qa_states.pt" if scene else "qa_states_no3d.pt")))
        encoder, summary = train(cfg)
        result = {"train": summary}
    result["eval"] = score(encoder, Questions(args.test, encoder.light.config), no_3d=not scene)
    if moe not in (None, "dense"):
        result["routing"] = routing(encoder, args.test, no_3d=not scene)
    result["seconds"] = time.perf_counter() - t0
    return result


def report(args) -> dict:
    from threedmoe_ros.data.qa import blind_prior, chance
    from threedmoe_ros.data.qa_metrics import exact_match
    from threedmoe_ros.models.lm_condition import LMConditionConfig
    from threedmoe_ros.train.stage2 import Questions

    light = LMConditionConfig().light_config()  # records only: the objects are never read here
    train_items = Questions(args.data, light, args.questions, args.seed).records  # what the rows trained on
    test_items = Questions(args.test, light).records
    kinds = sorted({it["kind"] for it in test_items})
    prior = blind_prior(train_items, test_items)
    hits = [exact_match(p, [it["answer"]]) for p, it in zip(prior, test_items)]
    rows = {"prior": {"eval": {"EM@1": float(np.mean(hits)), "n": len(hits), "per_kind": {
        k: float(np.mean([h for h, it in zip(hits, test_items) if it["kind"] == k])) for k in kinds}}}}
    for row in ROWS:
        f = Path(args.work) / f"{row}.json"
        if f.is_file():
            rows[row] = json.loads(f.read_text())
    for extra in args.also:  # a row of another budget, reported beside the table (not one of its equal-budget rows)
        label, _, path = extra.partition("=")
        rows[label] = json.loads(Path(path).read_text())
        LABELS[label] = label
    for r in rows.values():
        r["eval"].pop("predictions", None)
        p, n = r["eval"]["EM@1"], r["eval"]["n"]
        r["eval"]["EM@1_se"] = (p * (1 - p) / n) ** 0.5
    result = {
        "machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "threads": 1, "torch": torch.__version__},
        "settings": {k: v for k, v in vars(args).items() if k not in ("rows", "report", "out")},
        "data": {"train_questions": len(train_items), "test_questions": len(test_items),
                 "chance": {k: chance([it for it in test_items if it["kind"] == k]) for k in kinds}},
        "rows": rows,
    }
    if "moe-e4" in rows:
        best = rows["moe-e4"]["eval"]["EM@1"]
        result["targets"] = {"moe_e4_minus_prior": best - rows["prior"]["eval"]["EM@1"],
                             "moe_e4_minus_no3d": best - rows["no-3d"]["eval"]["EM@1"] if "no-3d" in rows else None}
    return result


def table(result: dict) -> str:
    kinds = list(result["data"]["chance"])
    head = f"{'row':<16}{'EM@1':>7}{'±':>5}" + "".join(f"{k[:8]:>9}" for k in kinds) + f"{'samples/s':>10}"
    lines = [head, f"{'chance':<16}{'':>12}" + "".join(f"{100 * result['data']['chance'][k]:9.1f}" for k in kinds)]
    for name, r in result["rows"].items():
        e, t = r["eval"], r.get("train")
        lines.append(f"{LABELS[name]:<16}{100 * e['EM@1']:7.1f}{100 * e['EM@1_se']:5.1f}"
                     + "".join(f"{100 * e['per_kind'][k]:9.1f}" for k in kinds)
                     + (f"{t['samples_per_s']:10.1f}" if t else f"{'-':>10}"))
    return "\n".join(lines)


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(result["data"]["chance"])
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(13, 4.5))
    width = 0.8 / len(rows)
    x = np.arange(len(kinds) + 1)
    for i, (name, r) in enumerate(rows.items()):
        values = [r["eval"]["EM@1"]] + [r["eval"]["per_kind"][k] for k in kinds]
        ax.bar(x + i * width, values, width, label=LABELS[name])
    chance = [np.mean(list(result["data"]["chance"].values()))] + [result["data"]["chance"][k] for k in kinds]
    ax.scatter(x + 0.4 - width / 2, chance, marker="_", s=500, color="k", label="chance", zorder=3)
    ax.set_xticks(x + 0.4 - width / 2, ["all"] + kinds, rotation=20)
    ax.set_ylabel("EM@1 on held-out questions")
    ax.set_title(f"Table 1 on simulator QA: {result['data']['test_questions']} held-out questions, "
                 f"{result['data']['train_questions']} training questions, equal steps")
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(out / "table1.png", dpi=120)
    plt.close(fig)
    moe = [(n, r["routing"]) for n, r in rows.items() if r.get("routing")]
    if not moe:
        return
    fig, axes = plt.subplots(1, len(moe), figsize=(6 * len(moe), 4), squeeze=False)
    for ax, (name, routes) in zip(axes[0], moe):
        layers = sorted(routes, key=int)
        E = len(routes[layers[0]]["fraction"])
        bottom = np.zeros(len(layers))
        for e in range(E):
            share = np.array([routes[layer]["fraction"][e] for layer in layers])
            ax.bar(layers, share, bottom=bottom, label=f"expert {e}")
            bottom += share
        ax2 = ax.twinx()
        ax2.plot(layers, [routes[layer]["entropy_over_logE"] for layer in layers], "ko-", label="entropy / log E")
        ax2.axhline(0.9, color="r", ls="--", label="0.9 log E")
        ax2.set_ylim(0, 1.05)
        ax.set_xlabel("layer of the trained top (0 = its lowest)")
        ax.set_ylabel("share of token assignments")
        ax.set_title(f"{LABELS[name]}: routing on held-out questions")
        ax.legend(loc="lower left", fontsize=7)
        ax2.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "table1_routing.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/qa/train", help="training questions (qa.jsonl or its directory)")
    ap.add_argument("--test", default="runs/qa/test", help="held-out questions (other scenes, held-out phrasings)")
    ap.add_argument("--init-from", default="", help="the policy whose 3D-MoE is tuned (default: the shipped default)")
    ap.add_argument("--rows", nargs="*", default=[], choices=list(ROWS), help="rows to train and score now")
    ap.add_argument("--report", action="store_true", help="write the table and plots from the rows done so far")
    ap.add_argument("--probe", action="store_true",
                    help="linear probes of the answer on the cached frozen states (writes table1_probe.json)")
    ap.add_argument("--work", default="runs/table1")
    ap.add_argument("--also", nargs="*", default=[], metavar="LABEL=ROW.json",
                    help="--report: rows trained at another budget or learning rate, shown after the table's rows")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--tune-layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--questions", type=int, default=4800, help="training questions drawn (0 = all)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    for row in args.rows:
        result = run_row(row, args)
        (Path(args.work) / f"{row}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"{row}: EM@1 {result['eval']['EM@1']:.3f} ({result['seconds']:.0f} s)", flush=True)
    if args.probe:
        (Path(args.out) / "table1_probe.json").write_text(json.dumps(probe(args), indent=2) + "\n")
    if args.report:
        result = report(args)
        out = Path(args.out)
        (out / "table1.json").write_text(json.dumps(result, indent=2) + "\n")
        plot(result, out)
        print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
