"""What each kind of object feature knows of an object under the training and the shifted light.

    python bench/bench_object_features.py --object-encoder runs/object_encoder/checkpoint
        → bench/results/object_features.json + .png

Three object features, the candidates for the policy's object tokens:
  explicit raw        centroid, extent, mean rgb, log count, orientation, top-face CIELAB (as the camera saw it)
  explicit balanced   the same with colours white-balanced against the table (data/objects.py)
  pretrained encoder  the frozen object encoder (models/object_attributes.py), with the same geometry

For each, a linear probe (multinomial logistic regression) per attribute — colour name, kind, size
class — is fitted on objects of training-look scenes (train-split seeds) and scored on objects of
test-split scenes in the training look and in the shifted look. Same objects, same probe, same budget
for every feature: what differs is what the feature carries. Labelled objects, every task, scenes after
a random number of oracle steps (stacked and contained objects included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from threedmoe_ros.data.objects import group_objects
from threedmoe_ros.models.light_encoder import LightEncoderConfig, object_features
from threedmoe_ros.models.object_attributes import ATTRIBUTES
from threedmoe_ros.sim import EnvConfig, TabletopEnv
from threedmoe_ros.sim.tasks import resolve_tasks
from threedmoe_ros.sim.seeds import seed_for

RESULTS = Path(__file__).resolve().parent / "results"


def scenes(split: str, look: str, per_task: int, tasks: list[str]):
    """(cloud, {label: description}) of `per_task` scenes per task, each after a random number of oracle steps."""
    with tqdm(total=per_task * len(tasks), desc=f"{split} seeds, {look} look", unit="scene") as bar:
        for t, task in enumerate(tasks):
            with TabletopEnv(EnvConfig(task=task, appearance=look)) as env:
                for i in range(per_task):
                    seed = seed_for(split, 500_000 + t * per_task + i)  # apart from the encoder's training scenes
                    obs, info = env.reset(seed)
                    plan = env.oracle_plan()
                    steps = int(np.random.default_rng(seed).integers(0, len(plan) + 1))
                    if steps:
                        obs, _, _, _, info = env.step(plan[:steps])
                    yield obs["cloud"], {d["label"]: d for d in info["objects"]}
                    bar.update()


def features_and_labels(variants: dict[str, LightEncoderConfig], split: str, look: str, per_task: int,
                        tasks: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    feats: dict[str, list] = {name: [] for name in variants}
    labels = []
    for cloud, described in scenes(split, look, per_task, tasks):
        ids = group_objects(cloud, "labels").ids
        for name, cfg in variants.items():
            f, objs = object_features(cloud, cfg)
            assert objs.ids == ids  # the same objects in the same order for every feature
            feats[name].append(f)
        for label in ids:
            d = described[label]
            labels.append([ATTRIBUTES["color"].index(d["color"]), ATTRIBUTES["kind"].index(d["kind"]),
                           ATTRIBUTES["size"].index(d["size"] or "none")])
    return {name: np.concatenate(f) for name, f in feats.items()}, np.asarray(labels)


def probe(x_train: np.ndarray, y_train: np.ndarray, tests: dict[str, np.ndarray], classes: int, seed: int = 0) -> dict:
    """Logistic regression (full batch, L-BFGS, standardised inputs, L2 1e-3): accuracy on each test set."""
    torch.manual_seed(seed)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x = torch.as_tensor((x_train - mean) / std, dtype=torch.float32)
    y = torch.as_tensor(y_train)
    layer = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(layer.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(x), y) + 1e-3 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return {name: round(float((layer(torch.as_tensor((xt - mean) / std, dtype=torch.float32)).argmax(-1).numpy()
                                   == yt).mean()), 4) for name, (xt, yt) in tests.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--object-encoder", required=True, help="a threedmoe-train-object-encoder checkpoint/")
    parser.add_argument("--train-scenes", type=int, default=10, help="training-look scenes per task to fit the probes on")
    parser.add_argument("--test-scenes", type=int, default=5, help="test scenes per task and look")
    parser.add_argument("--out", type=Path, default=RESULTS / "object_features.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    variants = {
        "explicit raw": LightEncoderConfig(top_color=True, white_balance=False),
        "explicit balanced": LightEncoderConfig(top_color=True),
        "pretrained encoder": LightEncoderConfig(object_encoder=args.object_encoder),
    }
    tasks = resolve_tasks(["training-tasks"])
    train_x, train_y = features_and_labels(variants, "train", "train", args.train_scenes, tasks)
    tests = {look: features_and_labels(variants, "test", look, args.test_scenes, tasks) for look in ("train", "shifted")}
    result = {"machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
              "object_encoder": args.object_encoder, "objects": {"fit": len(train_y), **{k: len(v[1]) for k, v in tests.items()}},
              "probe": "multinomial logistic regression per attribute, L-BFGS, standardised features", "variants": {}}
    for name in variants:
        result["variants"][name] = {"dim": int(train_x[name].shape[1])} | {
            attribute: probe(train_x[name], train_y[:, i], {look: (x[name], y[:, i]) for look, (x, y) in tests.items()},
                             len(ATTRIBUTES[attribute]))
            for i, attribute in enumerate(ATTRIBUTES)}
        print(name, json.dumps(result["variants"][name]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ATTRIBUTES), figsize=(4 * len(ATTRIBUTES), 3.6), sharey=True)
    names = list(result["variants"])
    width = 0.8 / len(names)
    for ax, attribute in zip(axes, ATTRIBUTES):
        for j, name in enumerate(names):
            values = [result["variants"][name][attribute][look] for look in ("train", "shifted")]
            ax.bar(np.arange(2) + (j - (len(names) - 1) / 2) * width, values, width, label=name)
        ax.set_xticks(range(2), ["training look", "shifted look"])
        ax.set_title(f"{attribute} (linear probe)")
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("accuracy on test-seed objects")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
