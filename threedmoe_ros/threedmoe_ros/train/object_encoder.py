"""Pretrain the object encoder (models/object_attributes.py) on the simulator's per-object labels.

    threedmoe-train-object-encoder --out runs/object_encoder --scenes 60 --max-steps 3000

Scenes: every training task in the training look (train-split seeds), each after a random number of the oracle's
steps so stacked and contained objects are seen; every labelled object becomes one sample: its points,
white-balanced colours and extent, and its colour name, kind and size class. Only the training look
is used; the shifted look is for measuring. The run ends with each attribute's accuracy on scenes of
the test seeds in the training and the shifted look (OUT/accuracy.json), and OUT/checkpoint holds the
encoder a policy freezes (`--object-encoder OUT/checkpoint`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from threedmoe_ros.models.object_attributes import ATTRIBUTES, ObjectAttributeConfig, ObjectAttributeEncoder
from threedmoe_ros.train.loop import LoopConfig, add_config_arguments, config_from_arguments, fit


@dataclass
class ObjectEncoderTrainConfig(LoopConfig):
    """Settings of one object-encoder run (saved as train.json); the optimisation fields are the loop's."""

    # Scenes per task of the training look to learn from, and of the test seeds to measure on (per look).
    scenes: int = 60
    eval_scenes: int = 12
    batch_size: int = 64
    warmup_steps: int = 100


def object_samples(encoder: ObjectAttributeEncoder, split: str, look: str, scenes: int, progress: bool = True) -> list:
    """[(xyz (P, 3), rgb (P, 3), extent (3,), labels (3,))] of every labelled object in `scenes` scenes per task."""
    from tqdm import tqdm

    from threedmoe_ros.data.objects import group_objects
    from threedmoe_ros.sim import EnvConfig, TabletopEnv
    from threedmoe_ros.sim.tasks import resolve_tasks
    from threedmoe_ros.sim.seeds import seed_for

    samples = []
    tasks = resolve_tasks(["training-tasks"])  # held-out tasks stay unseen
    with tqdm(total=scenes * len(tasks), desc=f"object crops, {split} seeds, {look} look", unit="scene",
              disable=not progress) as bar:
        for t, task in enumerate(tasks):
            with TabletopEnv(EnvConfig(task=task, appearance=look)) as env:
                for i in range(scenes):
                    seed = seed_for(split, t * scenes + i)
                    obs, info = env.reset(seed)
                    plan = env.oracle_plan()
                    steps = int(np.random.default_rng(seed).integers(0, len(plan) + 1))
                    if steps:
                        obs, _, _, _, info = env.step(plan[:steps])
                    groups = group_objects(obs["cloud"], "labels")
                    described = {d["label"]: d for d in info["objects"]}
                    xyz, rgb, extent = encoder.crops(obs["cloud"], groups)
                    for k, label in enumerate(groups.ids):
                        d = described[label]
                        labels = [ATTRIBUTES["color"].index(d["color"]), ATTRIBUTES["kind"].index(d["kind"]),
                                  ATTRIBUTES["size"].index(d["size"] or "none")]
                        samples.append((xyz[k], rgb[k], extent[k], torch.tensor(labels)))
                    bar.update()
    return samples


def collate(samples: list) -> dict:
    return {key: torch.stack([s[i] for s in samples]) for i, key in enumerate(("xyz", "rgb", "extent", "labels"))}


class AttributeLoss(nn.Module):
    """The encoder under training: cross-entropy summed over the three attributes (fit's forward(batch))."""

    def __init__(self, encoder: ObjectAttributeEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = self.encoder.logits(self.encoder(batch["xyz"], batch["rgb"], batch["extent"]))
        losses = {name: F.cross_entropy(logits[name], batch["labels"][:, i]) for i, name in enumerate(ATTRIBUTES)}
        info = {f"{name}_acc": float((logits[name].argmax(-1) == batch["labels"][:, i]).float().mean())
                for i, name in enumerate(ATTRIBUTES)}
        return sum(losses.values()), info


@torch.no_grad()
def accuracy(encoder: ObjectAttributeEncoder, samples: list) -> dict[str, float]:
    """Share of objects whose colour name, kind and size class the encoder gets right."""
    batch = collate(samples)
    logits = encoder.logits(encoder(batch["xyz"], batch["rgb"], batch["extent"]))
    return {name: round(float((logits[name].argmax(-1) == batch["labels"][:, i]).float().mean()), 4)
            for i, name in enumerate(ATTRIBUTES)} | {"objects": len(samples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threedmoe-train-object-encoder", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="run directory: checkpoint/, accuracy.json, metrics")
    add_config_arguments(parser, ObjectEncoderTrainConfig)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_arguments(ObjectEncoderTrainConfig, args)
    except ValueError as e:
        parser.error(str(e))
    torch.manual_seed(cfg.seed)
    encoder = ObjectAttributeEncoder(ObjectAttributeConfig(seed=cfg.seed))
    train_set = object_samples(encoder, "train", "train", cfg.scenes)
    result = fit(cfg, AttributeLoss(encoder), train_set, collate,
                 lambda model, path: model.encoder.save_pretrained(path), name="object encoder")
    trained = result.model.encoder.eval()
    report = {look: accuracy(trained, object_samples(trained, "test", look, cfg.eval_scenes))
              for look in ("train", "shifted")}
    (Path(cfg.out) / "accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    for look, acc in report.items():
        print(f"{look} look, {acc['objects']} objects: " + ", ".join(f"{k} {acc[k]:.3f}" for k in ATTRIBUTES))
    print(f"checkpoint: {Path(cfg.out) / 'checkpoint'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
