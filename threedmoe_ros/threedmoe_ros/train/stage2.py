"""Stage II of the 3D-MoE at this machine's budget: experts, LoRA and routers of the LM's top layers learn to
answer questions about scenes, over the frozen layers' states computed once per question.

    threedmoe-train-stage2 --data runs/qa/train --out runs/stage2 --moe e4-top2 --tune-layers 4
    threedmoe-train-stage2 ... --eval-data runs/qa/test      # and score EM@1 on held-out questions

The model is the policy's own 3D-MoE (models/lm_condition.py): its object tokens (Stage I, the least-squares
alignment onto the LM's word embeddings) and prompt come from a policy checkpoint (--init-from, the shipped
default by default), so a Stage II encoder plugs into that policy. The frozen lower layers run once per question
(cached in OUT/qa_states.pt, or --states, shared by runs with the same data, cut and object tokens); then each
step runs only the top: its loss is the LM loss on the answer plus the experts' Switch balance loss.
The loop is train/loop.py's. The checkpoint (OUT/checkpoint) holds the encoder's config and weights:
what `threedmoe-train-pose-dit --init-encoder` starts a policy's encoder from.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from threedmoe_ros.models.checkpoint import CheckpointError, atomic, read_json, save_tensors, write_json
from threedmoe_ros.models.light_encoder import ObjectInputs
from threedmoe_ros.models.lm_condition import LMConditionConfig, LMConditionEncoder
from threedmoe_ros.train.loop import LoopConfig, add_config_arguments, config_from_arguments, fit

ENCODER_CONFIG = "encoder_config.json"
ENCODER_WEIGHTS = "encoder.safetensors"


@dataclass
class Stage2Config(LoopConfig):
    # qa.jsonl (or its directory) of training questions (threedmoe-qa-data); captions are left out.
    data: str = ""
    # The policy whose 3D-MoE is tuned: its object tokens, prompt and read layer ("" = the shipped default).
    init_from: str = ""
    # The trained top: how many of the read layer's layers, their experts (a MOE_PRESETS name or "dense") and LoRA.
    tune_layers: int = 4
    moe: str = "e4-top2"
    lora: str = "smollm2-135m"
    # The ablation without the scene: questions are asked with no object tokens.
    no_3d: bool = False
    # Train on this many of the questions, drawn at random with --seed (0 = all).
    questions: int = 0
    # Where the frozen layers' states are kept (default OUT/qa_states.pt).
    states: str = ""
    # Held-out questions scored after training (EM@1 per kind in OUT/eval.json); "" skips it.
    eval_data: str = ""
    lr: float = 5e-4
    warmup_steps: int = 30
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError("--data is required: a qa.jsonl or its directory (threedmoe-qa-data --out DIR)")
        if self.tune_layers < 1:
            raise ValueError(f"--tune-layers must be >= 1 (Stage II trains the top), got {self.tune_layers}")


def load_encoder(init_from: str, **overrides) -> LMConditionEncoder:
    """The 3D-MoE of a policy checkpoint (its alignment and light side), rebuilt with `overrides` (the top)."""
    from threedmoe_ros.checkpoints import DEFAULT_POLICY
    from threedmoe_ros.policy import Policy

    policy = Policy.from_pretrained(init_from or DEFAULT_POLICY)
    if policy.config.encoder != "lm":
        raise ValueError(f"{init_from} holds a {policy.config.encoder!r} policy; Stage II tunes an 'lm' policy's 3D-MoE")
    config = LMConditionConfig(**{**policy.config.encoder_config, **overrides})
    encoder = LMConditionEncoder(config)
    missing, unexpected = encoder.load_state_dict(policy.encoder.state_dict(), strict=False)
    if unexpected or [k for k in missing if not k.startswith("tuned.")]:
        raise CheckpointError(f"{init_from}: its encoder does not fit {config} ({missing[:3]}, {unexpected[:3]})")
    return encoder


def questions(path: str | Path, limit: int = 0, seed: int = 0):
    """The questions of a qa.jsonl (captions left out): the QADataset and the indices of its questions
    (`limit` of them drawn at random with `seed`, in file order; 0 = all)."""
    from threedmoe_ros.data.qa import QADataset

    data = QADataset(path)
    keep = [i for i, item in enumerate(data.items) if item["kind"] != "caption"]
    if 0 < limit < len(keep):
        keep = sorted(np.random.default_rng(seed).choice(keep, limit, replace=False).tolist())
    return data, keep


def no_objects(scene: ObjectInputs) -> ObjectInputs:
    return ObjectInputs(scene.features[:0], scene.anchors[:0], scene.boxes[:0], [])


def lower_states(encoder: LMConditionEncoder, path: str | Path, no_3d: bool = False, batch_size: int = 16,
                 progress: bool = True, limit: int = 0, seed: int = 0) -> list:
    """Every training question's frozen part (LowerStates, float16), its answer included."""
    from tqdm import tqdm

    from threedmoe_ros.models.light_encoder import object_inputs
    from threedmoe_ros.train.pose_dit import half_states

    data, keep = questions(path, limit, seed)
    scenes: dict[str, ObjectInputs] = {}
    out = []
    for lo in tqdm(range(0, len(keep), batch_size), desc="lower states", unit="batch", disable=not progress):
        items = [data.items[i] for i in keep[lo: lo + batch_size]]
        for it in items:
            if it["scene"] not in scenes:
                scenes[it["scene"]] = object_inputs(data.cloud(it["scene"]), encoder.light.config)
        batch = [no_objects(scenes[it["scene"]]) if no_3d else scenes[it["scene"]] for it in items]
        out += [half_states(s) for s in encoder.precompute(batch, [it["question"] for it in items],
                                                             [it["answer"] for it in items])]
    return out


@torch.no_grad()
def score(encoder: LMConditionEncoder, path: str | Path, no_3d: bool = False, batch_size: int = 32,
          progress: bool = True) -> dict:
    """Greedy answers to every held-out question: EM@1 overall and per kind, with the predictions."""
    from tqdm import tqdm

    from threedmoe_ros.eval.qa_metrics import exact_match
    from threedmoe_ros.models.light_encoder import object_inputs

    data, keep = questions(path)
    encoder.eval()
    predictions = []
    for lo in tqdm(range(0, len(keep), batch_size), desc="answers", unit="batch", disable=not progress):
        items = [data.items[i] for i in keep[lo: lo + batch_size]]
        scenes = [object_inputs(data.cloud(it["scene"]), encoder.light.config) for it in items]
        scenes = [no_objects(s) for s in scenes] if no_3d else scenes
        predictions += encoder.answer_batch(scenes, [it["question"] for it in items])
    records = [data.items[i] for i in keep]
    hits = [exact_match(p, [r["answer"]]) for p, r in zip(predictions, records)]
    kinds = sorted({r["kind"] for r in records})
    per_kind = {k: float(np.mean([h for h, r in zip(hits, records) if r["kind"] == k])) for k in kinds}
    return {"EM@1": float(np.mean(hits)), "n": len(hits), "per_kind": per_kind,
            "predictions": [{"question": r["question"], "answer": r["answer"], "kind": r["kind"], "prediction": p}
                            for p, r in zip(predictions, records)]}


class QAObjective(nn.Module):
    """The encoder's question loss as the training loop's module."""

    def __init__(self, encoder: LMConditionEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: list) -> tuple[torch.Tensor, dict]:
        loss, info = self.encoder.qa_loss(batch)
        info["n_answer_tokens"] = sum(len(s.answer) for s in batch)
        return loss, info


def save_encoder(encoder: LMConditionEncoder, path: Path) -> Path:
    save_tensors(encoder.state_dict(), path / ENCODER_WEIGHTS)
    write_json(dataclasses.asdict(encoder.config), path / ENCODER_CONFIG)
    return path


def read_encoder(path: str | Path) -> LMConditionEncoder:
    """A Stage II checkpoint; CheckpointError naming the file that is missing or does not fit."""
    from threedmoe_ros.models.checkpoint import load_module

    path = Path(path)
    raw = read_json(path / ENCODER_CONFIG, "Stage II encoder config (write one with threedmoe-train-stage2)")
    try:
        encoder = LMConditionEncoder(LMConditionConfig(**raw))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / ENCODER_CONFIG} is not a valid 3D-MoE config: {e}") from None
    load_module(encoder, path / ENCODER_WEIGHTS)
    return encoder.eval()


def train(cfg: Stage2Config, progress: bool = True) -> tuple[LMConditionEncoder, dict]:
    """Stage II: cache the frozen layers' states once, train the top, save OUT/checkpoint, score --eval-data."""
    from threedmoe_ros.train.pose_dit import Items

    encoder = load_encoder(cfg.init_from, tune_layers=cfg.tune_layers, lora=cfg.lora,
                           moe=None if cfg.moe == "dense" else cfg.moe)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    states_path = Path(cfg.states or out / "qa_states.pt")
    ec = encoder.config
    stamp = {"data": str(Path(cfg.data).resolve()), "cut": ec.cut, "llm": ec.llm, "order": ec.order,
             "system": ec.system_prompt, "light": ec.light, "no_3d": cfg.no_3d, "questions": cfg.questions,
             "seed": cfg.seed,
             "align": float(encoder.align.double().sum())}
    cached = torch.load(states_path, weights_only=False) if states_path.is_file() else None
    if cached is not None and cached["stamp"] == stamp:
        items = cached["items"]
    else:
        items = lower_states(encoder, cfg.data, cfg.no_3d, progress=progress, limit=cfg.questions, seed=cfg.seed)
        with atomic(states_path) as tmp:  # runs in parallel may read it
            torch.save({"stamp": stamp, "items": items}, tmp)
    result = fit(cfg, QAObjective(encoder), Items(items), collate=list,
                 export=lambda model, path: save_encoder(model.encoder, path), progress=progress, name="stage2")
    summary = {"steps": result.steps, "seconds": result.seconds, "samples": result.samples,
               "samples_per_s": result.samples / max(result.seconds, 1e-9), "trainable_params": result.trainable_params}
    if cfg.eval_data:
        summary["eval"] = score(encoder, cfg.eval_data, cfg.no_3d, progress=progress)
        (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    return encoder, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="threedmoe-train-stage2", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run directory: checkpoint/, qa_states.pt, eval.json, metrics")
    add_config_arguments(ap, Stage2Config)
    args = ap.parse_args(argv)
    try:
        cfg = config_from_arguments(Stage2Config, args)
        _, summary = train(cfg)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"threedmoe-train-stage2: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "eval"}))
    if "eval" in summary:
        print(f"EM@1 {summary['eval']['EM@1']:.3f} on {summary['eval']['n']} held-out questions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
