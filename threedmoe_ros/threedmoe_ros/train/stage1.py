"""Stage I of 3D-MoE: align the 3D encoder with the LLM on scene captions.

Trains the spatial transformer and the projection; PointNet++ and the LLM stay frozen (paper §4).
Stage II (train/stage2.py) runs the same loop on captions + QA with the MoE routers and LoRA trainable.

    threedmoe-train-stage1 --data data_out/qa --out runs/stage1 --llm smollm2-135m
    threedmoe-train-stage2 --data data_out/qa --out runs/stage2 --init runs/stage1/checkpoint

--data is a directory written by `threedmoe-qa-data`. What a run leaves in --out:
  checkpoint/   ThreeDMoELLM.save_pretrained (config, 3D encoder, LoRA adapter with routers)
  train.json    the settings; metrics.csv the loss curve; eval.json the QA metrics when --eval-data is given
  summary.json  steps, wall seconds and text tokens/s of the run
Stage II ablations (same loop, same budget; only what the LLM sees of the scene changes, in training
and in the --eval-data scoring): --no-3d gives it the question without the 3D tokens, --shuffle-3d the
3D tokens of another scene of the batch (BatchBuilder).
--qa-format scanqa|sqa3d|leo with --qa-file and --scenes reads those sets' annotation files instead
(data/external.py); --data is then not needed.
Optimiser: AdamW, lr 2e-5 (the paper's) after a linear warm-up, 3 epochs by default. The loop,
resume (--resume), periodic checkpoints and several processes or GPUs (`accelerate launch -m
threedmoe_ros.train.stage1 ...`) are train/loop.py's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from threedmoe_ros.data.qa import QADataset
from threedmoe_ros.models.checkpoint import CheckpointError, write_json
from threedmoe_ros.models.mm_llm import MMLLMConfig, ThreeDMoELLM
from threedmoe_ros.train.loop import LoopConfig, add_config_arguments, config_from_arguments, fit


@dataclass
class StageConfig(LoopConfig):
    """One Stage I or Stage II run (saved as train.json); the optimisation fields are the loop's."""

    # A qa.jsonl directory (simulator format), or with qa_format another set's annotation file.
    data: str | None = None
    stage: int = 1
    # MMLLMConfig fields for a fresh model; ignored with `init`.
    model: dict = field(default_factory=lambda: {"llm": "smollm2-135m"})
    # A ThreeDMoELLM checkpoint to start from (Stage II starts from Stage I's).
    init: str | None = None
    # Only the 3D encoder (spatial transformer, projection) from this checkpoint; the LLM is built
    # from `model`. One Stage I run can so start Stage II for any MoE preset, or dense.
    init_encoder: str | None = None
    # "simulator" reads `data`; scanqa | sqa3d | leo read `qa_file` with clouds from `scenes`.
    qa_format: str = "simulator"
    qa_file: str | None = None
    scenes: str | None = None
    # Stage I trains on captions only; Stage II on every kind (captions keep the alignment).
    kinds: list[str] | None = None
    # Held-out qa.jsonl directory to score with greedy answers at the end (EM, BLEU, CIDEr, …);
    # with an external qa_format, an annotation file of that format (clouds from `scenes`).
    eval_data: str | None = None
    eval_items: int = 200
    # Kinds scored at the end (None: every kind); captions need more new tokens than short answers.
    eval_kinds: list[str] | None = None
    max_new_tokens: int = 48
    # What the LLM is shown of the scene, in training and in the evaluation at the end (the Stage II
    # ablations): "scene" its own 3D tokens; "none" the question alone (no 3D tokens); "shuffled"
    # the 3D tokens of another scene of the batch. The gap to "scene" is what the 3D tokens are worth.
    scene_input: str = "scene"
    # The paper's optimisation: lr 2e-5 after a linear warm-up, 3 epochs, no weight decay.
    epochs: int = 3
    batch_size: int = 4
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 100
    log_every: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stage not in (1, 2):
            raise ValueError(f"StageConfig.stage must be 1 or 2, got {self.stage}")
        if self.kinds is None:
            self.kinds = ["caption"] if self.stage == 1 else None
        if self.scene_input not in SCENE_INPUTS:
            raise ValueError(f"StageConfig.scene_input must be one of {SCENE_INPUTS}, got {self.scene_input!r}")
        if self.init and self.init_encoder:
            raise ValueError("StageConfig: give init (whole checkpoint) or init_encoder (3D encoder only), not both")
        from threedmoe_ros.data.external import FORMATS

        if self.qa_format != "simulator" and self.qa_format not in FORMATS:
            raise ValueError(f"StageConfig.qa_format must be 'simulator' or one of {FORMATS}, got {self.qa_format!r}")
        if self.qa_format == "simulator" and not self.data:
            raise ValueError("StageConfig.data is required: a directory written by threedmoe-qa-data")
        if self.qa_format != "simulator" and not (self.qa_file and self.scenes):
            raise ValueError(f"StageConfig.qa_format={self.qa_format!r} needs qa_file (annotations) and scenes "
                             "(a directory of per-scene point clouds)")


SCENE_INPUTS = ("scene", "none", "shuffled")


class NoScene(nn.Module):
    """Stands in for the 3D encoder in the no-3D ablation: zero object tokens per sample, so the
    prompt the LLM reads is the text alone (the chat template is unchanged)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, clouds: list) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(clouds), 0, self.dim), torch.zeros(len(clouds), 0, dtype=torch.bool)


@contextmanager
def scene_tokens(model: ThreeDMoELLM, clouds: list | None, n: int):
    """The clouds to give the model for a batch of n; for None (the no-3D ablation) n placeholders,
    while NoScene stands in for the 3D encoder."""
    if clouds is not None:
        yield clouds
        return
    encoder = model.encoder
    model.encoder = NoScene(model.cond_dim).to(model.llm.get_input_embeddings().weight.device)
    try:
        yield [None] * n
    finally:
        model.encoder = encoder


class BatchBuilder:
    """collate_fn of every stage and of `evaluate`: (cloud, question, answer) items → (clouds,
    questions, answers), with `scene_input` deciding the clouds (one loop for the model and its
    ablations). clouds is None for "none"; for "shuffled" every item gets another scene's cloud."""

    def __init__(self, scene_input: str = "scene", seed: int = 0):
        if scene_input not in SCENE_INPUTS:
            raise ValueError(f"scene_input must be one of {SCENE_INPUTS}, got {scene_input!r}")
        self.scene_input = scene_input
        self.rng = np.random.default_rng(seed)
        self.spare: list = []  # the last batch's scenes, for a batch that holds only one scene

    def __call__(self, batch: list[tuple]) -> tuple[list | None, list[str], list[str]]:
        clouds, questions, answers = (list(x) for x in zip(*batch))
        return self.clouds(clouds), questions, answers

    def clouds(self, clouds: list) -> list | None:
        if self.scene_input == "none":
            return None
        if self.scene_input == "shuffled":
            clouds = self.swap_scenes(clouds)
        return clouds

    def swap_scenes(self, clouds: list) -> list:
        """Each item gets the cloud of a different scene: the distinct scenes (the dataset caches one
        Cloud object per scene) are permuted with no scene left in place."""
        scenes = list({id(c): c for c in clouds}.values())
        pool = scenes + [c for c in self.spare if all(c is not s for s in scenes)]
        self.spare = scenes
        if len(pool) < 2:
            raise ValueError("scene_input='shuffled' needs at least two scenes to swap between")
        order = self.rng.permutation(len(pool))
        # A cyclic shift of a random order is a permutation with no fixed point.
        target = {id(pool[order[i]]): pool[order[(i + 1) % len(pool)]] for i in range(len(pool))}
        return [target[id(c)] for c in clouds]


def load_dataset(cfg: StageConfig, kinds: list[str] | None):
    """The training items of a run: simulator qa.jsonl, or a ScanQA / SQA3D / LEO annotation file."""
    if cfg.qa_format == "simulator":
        return QADataset(cfg.data, kinds=kinds)
    from threedmoe_ros.data.external import load_qa

    return load_qa(cfg.qa_format, cfg.qa_file, cfg.scenes)


def evaluate(model: ThreeDMoELLM, data, items: int, max_new_tokens: int = 48, kinds: list[str] | None = None,
             samples: int = 0, progress: bool = True, scene_input: str = "scene", seed: int = 0) -> dict:
    """Greedy answers on the first `items` questions of a qa.jsonl directory (or a dataset object),
    scored with eval.qa_metrics against every reference answer an item has. Adds the answering time
    and, with `samples`, the first few (question, prediction, references) to read. `scene_input` is
    the ablation's (BatchBuilder): the model is scored on what it was trained to see."""
    from tqdm import tqdm

    from threedmoe_ros.eval.qa_metrics import qa_metrics

    ds = QADataset(data, kinds=kinds) if isinstance(data, (str, Path)) else data
    n = min(items, len(ds))
    if n == 0:
        raise ValueError(f"{data} has no items of kinds {kinds} to evaluate")
    preds, refs, questions = [], [], []
    model.eval()
    t0 = time.perf_counter()
    builder = BatchBuilder(scene_input, seed)
    # Shuffled: the whole set is one batch for the builder, so a question gets any other held-out scene.
    swapped = builder.clouds([ds[i][0] for i in range(n)]) if scene_input == "shuffled" else None
    for i in tqdm(range(n), desc="eval", unit="q", disable=not progress, dynamic_ncols=True):
        cloud, question, answer = ds[i]
        clouds = [swapped[i]] if swapped else builder.clouds([cloud])  # None: no 3D tokens
        with scene_tokens(model, clouds, 1) as scene:
            preds.append(model.answer_batch(scene, [question], max_new_tokens)[0])
        refs.append(ds.references(i) if hasattr(ds, "references") else [answer])
        questions.append(question)
    metrics: dict = qa_metrics(preds, refs)
    metrics["answer_seconds"] = round(time.perf_counter() - t0, 1)
    if samples:
        metrics["samples"] = [{"question": q, "prediction": p, "references": r}
                              for q, p, r in list(zip(questions, preds, refs))[:samples]]
    return metrics


def text_tokens(model: ThreeDMoELLM, questions: list[str], answers: list[str]) -> int:
    """Prompt + answer tokens of a batch, without padding and without the 3D object tokens."""
    return sum(len(b) + len(a) + len(model.answer_ids(ans))
               for (b, a), ans in zip(map(model.prompt_ids, questions), answers))


def build_model(cfg: StageConfig) -> ThreeDMoELLM:
    if cfg.init:
        return ThreeDMoELLM.from_pretrained(cfg.init)
    model = ThreeDMoELLM(MMLLMConfig(**cfg.model))
    if cfg.init_encoder:
        model.load_3d_encoder(cfg.init_encoder)
    return model


class StageObjective(nn.Module):
    """A stage's objective as the training loop's module: (clouds, questions, answers) → (loss, info),
    with what the LLM sees of the scene decided by the batch (BatchBuilder, scene_tokens)."""

    def __init__(self, model: ThreeDMoELLM):
        super().__init__()
        self.model = model

    def forward(self, batch: tuple) -> tuple[torch.Tensor, dict]:
        clouds, questions, answers = batch
        with scene_tokens(self.model, clouds, len(questions)) as scene:
            loss, info = self.model.loss(scene, questions, answers)
        info["n_text_tokens"] = text_tokens(self.model, questions, answers)
        return loss, info


def train(cfg: StageConfig, progress: bool = True, resume: bool = False, stop_after: int | None = None) -> ThreeDMoELLM:
    """Run the stage through the one training loop (train/loop.py) and score it on cfg.eval_data."""
    from accelerate import PartialState

    torch.manual_seed(cfg.seed)  # routers, LoRA and the 3D encoder come from the config's seed anyway
    model = build_model(cfg)
    model.configure_stage(cfg.stage)
    dataset = load_dataset(cfg, cfg.kinds)
    if len(dataset) == 0:
        raise ValueError(f"{cfg.data or cfg.qa_file} has no items of kinds {cfg.kinds}")
    result = fit(cfg, StageObjective(model), dataset, BatchBuilder(cfg.scene_input, cfg.seed),
                 lambda objective, path: objective.model.save_pretrained(path), resume=resume, progress=progress,
                 stop_after=stop_after, name=f"stage {cfg.stage}")
    model = result.model.model
    if not PartialState().is_main_process:
        return model
    out = Path(cfg.out)
    tokens = result.totals.get("n_text_tokens", 0.0)
    summary = {"steps": result.steps, "seconds": round(result.seconds, 1), "text_tokens": int(tokens),
               "tokens_per_s": round(tokens / result.seconds, 1), "samples_per_s": round(result.samples / result.seconds, 2),
               "trainable_params": result.trainable_params}
    write_json(summary, out / "summary.json")
    if cfg.eval_data:
        if cfg.qa_format == "simulator":
            eval_set = cfg.eval_data
        else:  # an annotation file of the same set (e.g. ScanQA_v1.0_val.json), clouds from the same directory
            from threedmoe_ros.data.external import load_qa

            eval_set = load_qa(cfg.qa_format, cfg.eval_data, cfg.scenes)
        metrics = evaluate(model, eval_set, cfg.eval_items, cfg.max_new_tokens, cfg.eval_kinds, progress=progress,
                           scene_input=cfg.scene_input, seed=cfg.seed)
        write_json(metrics, out / "eval.json")
        print(json.dumps(metrics, indent=2))
    return model


def parse_args(stage: int, argv: list[str] | None = None,
               description: str = __doc__) -> tuple[StageConfig, argparse.Namespace]:
    """Command line of threedmoe-train-stage1 / -stage2 (one set of options, each stage's own --help text):
    the stage's own flags, then one per training-loop field (train/loop.py) with the stage's defaults."""
    ap = argparse.ArgumentParser(prog=f"threedmoe-train-stage{stage}", description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="directory with qa.jsonl (written by threedmoe-qa-data)")
    ap.add_argument("--qa-format", default="simulator", choices=["simulator", "scanqa", "sqa3d", "leo"],
                    help="scanqa | sqa3d | leo read --qa-file with clouds from --scenes (data/external.py)")
    ap.add_argument("--qa-file", help="ScanQA / LEO JSON, or SQA3D questions JSON (annotations found beside it)")
    ap.add_argument("--scenes", help="directory of per-scene clouds: <scene_id>.npy / .npz / .pth (x y z r g b label)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/train_state/")
    ap.add_argument("--stop-after", type=int, help="end after this step with a checkpoint; --resume continues")
    ap.add_argument("--init", help="ThreeDMoELLM checkpoint to start from")
    ap.add_argument("--init-encoder", help="checkpoint whose 3D encoder to start from (LLM built from --llm/--moe)")
    ap.add_argument("--llm", default="smollm2-135m", help="LLM preset for a fresh model")
    ap.add_argument("--llm-path", help="local directory of the llama-3.2-1b preset")
    ap.add_argument("--moe", default="e4-top2", help="MoE preset (e4-top2, e2-top2) or 'dense'")
    ap.add_argument("--eval-data", help="held-out qa.jsonl directory, or with --qa-format that set's val file")
    ap.add_argument("--eval-items", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    if stage == 2:  # the ablations that show what the 3D tokens are worth, trained the same way otherwise
        scene = ap.add_mutually_exclusive_group()
        scene.add_argument("--no-3d", dest="scene_input", action="store_const", const="none", default="scene",
                           help="ablation: the LLM gets the question without the 3D tokens (training and --eval-data)")
        scene.add_argument("--shuffle-3d", dest="scene_input", action="store_const", const="shuffled",
                           help="ablation: each question gets the 3D tokens of another scene of its batch")
    loop = ap.add_argument_group("training loop (train/loop.py)")
    add_config_arguments(loop, StageConfig, skip=tuple(f.name for f in dataclasses.fields(StageConfig)
                                                       if f.name not in {g.name for g in dataclasses.fields(LoopConfig)}))
    a = ap.parse_args(argv)
    model = {"llm": a.llm, "llm_path": a.llm_path, "moe": None if a.moe == "dense" else a.moe}
    if a.qa_format == "simulator" and not a.data:
        ap.error("--data is required (or --qa-format scanqa|sqa3d|leo with --qa-file and --scenes)")
    if a.qa_format == "simulator" and not (Path(a.data) / "qa.jsonl").is_file():
        ap.error(f"--data {a.data} has no qa.jsonl; write one with threedmoe-qa-data --out {a.data}")
    for flag, path in (("--init", a.init), ("--init-encoder", a.init_encoder)):
        if path and not Path(path).is_dir():
            ap.error(f"{flag} {path} is not a checkpoint directory")
    try:
        return config_from_arguments(StageConfig, a, stage=stage, model=model,
                                     scene_input=getattr(a, "scene_input", "scene")), a
    except ValueError as exc:  # StageConfig checks its own fields
        ap.error(str(exc))


def run_cli(stage: int, argv: list[str] | None, description: str = __doc__) -> int:
    """Parse and train; a bad input is a message and exit status 2, not a traceback."""
    cfg, args = parse_args(stage, argv, description)
    try:
        train(cfg, resume=args.resume, stop_after=args.stop_after)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        print(f"threedmoe-train-stage{cfg.stage}: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(1, argv)


if __name__ == "__main__":
    raise SystemExit(main())
