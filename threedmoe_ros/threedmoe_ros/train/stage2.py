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
what `threedmoe-train-pose-dit --lm-init-top` starts a policy's trained top from.
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

from threedmoe_ros.models.checkpoint import CheckpointError, atomic
from threedmoe_ros.models.light_encoder import ObjectInputs
from threedmoe_ros.models.lm_condition import LMConditionConfig, LMConditionEncoder
from threedmoe_ros.train.loop import LoopConfig, add_config_arguments, config_from_arguments, fit

@dataclass
class Stage2Config(LoopConfig):
    # Training questions: a qa.jsonl or its directory (threedmoe-qa-data), or a compact file of this command's
    # --export-inputs; captions are left out.
    data: str = ""
    # The policy whose 3D-MoE is tuned: its object tokens, prompt and read layer ("" = the shipped default).
    init_from: str = ""
    # The trained top: how many of the read layer's layers, their experts (a MOE_PRESETS name or "dense") and LoRA.
    tune_layers: int = 4
    moe: str = "e4-top2"
    lora: str = "smollm2-135m"
    # The ablation without the scene: questions are asked with no object tokens.
    no_3d: bool = False
    # ScanQA, SQA3D or LEO annotations instead of simulator QA (scanqa | sqa3d | leo): --data and --eval-data
    # are then annotation files, with each scene's cloud in --scenes (formats in data/external.py).
    qa_format: str = ""
    scenes: str = ""
    # Train on this many of the questions, drawn at random with --seed (0 = all).
    questions: int = 0
    # Where the frozen layers' states are kept (default OUT/qa_states.pt).
    states: str = ""
    # Held-out questions scored after training (EM@1 per kind in OUT/eval.json), in either form; "" skips it.
    eval_data: str = ""
    lr: float = 5e-4
    warmup_steps: int = 30
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError("--data is required: a qa.jsonl or its directory (threedmoe-qa-data --out DIR)")
        if self.qa_format and not self.scenes:
            raise ValueError(f"--qa-format {self.qa_format} needs --scenes DIR: the clouds of its scenes")
        if self.tune_layers < 1:
            raise ValueError(f"--tune-layers must be >= 1 (Stage II trains the top), got {self.tune_layers}")


def load_encoder(init_from: str, **overrides) -> LMConditionEncoder:
    """The 3D-MoE of a policy checkpoint (its alignment and light side), rebuilt with `overrides` (the top).
    Only the checkpoint's config and its encoder's tensors are read, so the LM is built once, here."""
    from threedmoe_ros.checkpoints import DEFAULT_POLICY
    from threedmoe_ros.models.checkpoint import load_tensors, read_json
    from threedmoe_ros.policy import CONFIG_NAME, WEIGHTS_NAME, PolicyConfig

    path = Path(init_from or DEFAULT_POLICY)
    try:
        policy_config = PolicyConfig.from_dict(read_json(path / CONFIG_NAME, "policy config"))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG_NAME} is not a valid policy config: {e}") from None
    if policy_config.encoder != "lm":
        raise ValueError(f"{init_from} holds a {policy_config.encoder!r} policy; Stage II tunes an 'lm' policy's 3D-MoE")
    config = LMConditionConfig(**{**policy_config.encoder_config, **overrides})
    encoder = LMConditionEncoder(config)
    state = {k[len("encoder."):]: v for k, v in load_tensors(path / WEIGHTS_NAME).items() if k.startswith("encoder.")}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("tuned.")]:
        raise CheckpointError(f"{init_from}: its encoder does not fit {config} ({missing[:3]}, {unexpected[:3]})")
    return encoder


class Questions:
    """The questions (captions left out) of a qa.jsonl directory or of a compact file (--export-inputs): their
    records (scene, question, answer, kind) and each scene's objects as `light` reads them. A compact file holds
    the objects already (no clouds, no simulator: what a GPU host trains from). `limit` draws that many at
    random with `seed`, in file order (0 = all)."""

    def __init__(self, path: str | Path, light, limit: int = 0, seed: int = 0, qa_format: str = "",
                 scenes: str | Path = ""):
        path = Path(path)
        self.light = light
        if qa_format:  # ScanQA / SQA3D / LEO annotations, clouds from a scene directory (data/external.py)
            from threedmoe_ros.data.external import load_qa

            self._data, self._scenes = load_qa(qa_format, path, scenes), {}
            records = [{"scene": it.scene_id, "question": it.question, "answer": it.answers[0],
                        "answers": it.answers, "kind": qa_format} for it in self._data.items]
        elif path.is_file() and path.suffix == ".pt":
            blob = torch.load(path, weights_only=False)
            if blob.get("light") != dataclasses.asdict(light):
                raise ValueError(f"{path} holds objects made with {blob.get('light')}, not this model's {light}")
            records, self._scenes, self._data = blob["records"], blob["scenes"], None
        else:
            from threedmoe_ros.data.qa import QADataset

            self._data, self._scenes = QADataset(path), {}
            records = self._data.items
        self.records = [r for r in records if r["kind"] != "caption"]
        if 0 < limit < len(self.records):
            keep = sorted(np.random.default_rng(seed).choice(len(self.records), limit, replace=False).tolist())
            self.records = [self.records[i] for i in keep]

    def __len__(self) -> int:
        return len(self.records)

    def scene(self, name: str) -> ObjectInputs:
        if name not in self._scenes:
            from threedmoe_ros.models.light_encoder import object_inputs

            self._scenes[name] = object_inputs(self._data.cloud(name), self.light)
        return self._scenes[name]

    def batches(self, size: int, no_3d: bool = False):
        """(records, scenes, questions, answers) of consecutive batches."""
        for lo in range(0, len(self.records), size):
            rec = self.records[lo: lo + size]
            scenes = [self.scene(r["scene"]) for r in rec]
            yield rec, [no_objects(s) for s in scenes] if no_3d else scenes, [r["question"] for r in rec], \
                [r["answer"] for r in rec]

    def export(self, path: str | Path) -> Path:
        """The compact file: records and objects, a few MB for thousands of questions."""
        scenes = {r["scene"]: self.scene(r["scene"]) for r in self.records}
        with atomic(Path(path)) as tmp:
            torch.save({"light": dataclasses.asdict(self.light), "records": self.records, "scenes": scenes}, tmp)
        return Path(path)


def no_objects(scene: ObjectInputs) -> ObjectInputs:
    return ObjectInputs(scene.features[:0], scene.anchors[:0], scene.boxes[:0], [])


def lower_states(encoder: LMConditionEncoder, data: Questions, no_3d: bool = False, batch_size: int = 16,
                 progress: bool = True) -> list:
    """Every question's frozen part (LowerStates, float16), its answer included."""
    from tqdm import tqdm

    from threedmoe_ros.train.pose_dit import half_states

    out = []
    with tqdm(total=len(data), desc="lower states", unit="question", disable=not progress) as bar:
        for _, scenes, qs, answers in data.batches(batch_size, no_3d):
            out += [half_states(s) for s in encoder.precompute(scenes, qs, answers)]
            bar.update(len(qs))
    return out


@torch.no_grad()
def score(encoder: LMConditionEncoder, data: Questions, no_3d: bool = False, batch_size: int = 32,
          progress: bool = True) -> dict:
    """Greedy answers to every question of `data`: EM@1 overall and per kind, with the predictions."""
    from tqdm import tqdm

    from threedmoe_ros.data.qa_metrics import exact_match

    encoder.eval()
    predictions = []
    with tqdm(total=len(data), desc="answers", unit="question", disable=not progress) as bar:
        for _, scenes, qs, _ in data.batches(batch_size, no_3d):
            predictions += encoder.answer_batch(scenes, qs)
            bar.update(len(qs))
    records = data.records
    hits = [exact_match(p, r.get("answers", [r["answer"]])) for p, r in zip(predictions, records)]
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


def train(cfg: Stage2Config, progress: bool = True) -> tuple[LMConditionEncoder, dict]:
    """Stage II: cache the frozen layers' states once, train the top, save OUT/checkpoint, score --eval-data."""
    from threedmoe_ros.train.pose_dit import Items

    encoder = load_encoder(cfg.init_from, tune_layers=cfg.tune_layers, lora=cfg.lora,
                           moe=None if cfg.moe == "dense" else cfg.moe)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    states_path = Path(cfg.states or out / "qa_states.pt")
    ec = encoder.config
    stamp = {"data": str(Path(cfg.data).resolve()), "qa_format": cfg.qa_format, "scenes": cfg.scenes,
             "cut": ec.cut, "llm": ec.llm, "order": ec.order, "system": ec.system_prompt, "light": ec.light,
             "no_3d": cfg.no_3d, "questions": cfg.questions, "seed": cfg.seed, "align": float(encoder.align.double().sum())}
    cached = torch.load(states_path, weights_only=False) if states_path.is_file() else None
    if cached is not None and cached["stamp"] == stamp:
        items = cached["items"]
    else:
        data = Questions(cfg.data, encoder.light.config, cfg.questions, cfg.seed, cfg.qa_format, cfg.scenes)
        items = lower_states(encoder, data, cfg.no_3d, progress=progress)
        with atomic(states_path) as tmp:  # runs in parallel may read it
            torch.save({"stamp": stamp, "items": items}, tmp)
    result = fit(cfg, QAObjective(encoder), Items(items), collate=list,
                 export=lambda model, path: model.encoder.save_pretrained(path), progress=progress, name="stage2")
    summary = {"steps": result.steps, "seconds": result.seconds, "samples": result.samples,
               "samples_per_s": result.samples / max(result.seconds, 1e-9), "trainable_params": result.trainable_params}
    if cfg.eval_data:
        test = Questions(cfg.eval_data, encoder.light.config, qa_format=cfg.qa_format, scenes=cfg.scenes)
        summary["eval"] = score(encoder, test, cfg.no_3d, progress=progress)
        (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    return encoder, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="threedmoe-train-stage2", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="run directory: checkpoint/, qa_states.pt, eval.json, metrics (required to train)")
    add_config_arguments(ap, Stage2Config)
    ap.add_argument("--export-inputs", nargs=2, metavar=("QA", "FILE"), action="append", default=[],
                    help="write the questions of QA (a qa.jsonl directory) with their objects to FILE, a compact "
                         "file --data and --eval-data read without clouds (for a GPU host); repeatable; then exit")
    args = ap.parse_args(argv)
    if not args.out and not args.export_inputs:
        ap.error("--out is required to train")
    try:
        if args.export_inputs:
            light = load_encoder(args.init_from).light.config
            for qa, file in args.export_inputs:
                data = Questions(qa, light)
                print(f"{len(data)} questions → {data.export(file)}")
            return 0
        _, summary = train(config_from_arguments(Stage2Config, args))
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"threedmoe-train-stage2: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "eval"}))
    if "eval" in summary:
        print(f"EM@1 {summary['eval']['EM@1']:.3f} on {summary['eval']['n']} held-out questions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
