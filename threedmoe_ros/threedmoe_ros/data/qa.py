"""Captions and question–answer pairs about tabletop scenes, for Stage I (captions) and Stage II (QA).

The simulator knows every object (kind, colour, size, pose), so questions are written from that
ground truth with templates, and the answer is short and exact (EM@1 is meaningful):

    caption   "Describe the scene."               → "four blocks: a brown block, …. the red block is …"
    count     "How many blocks are there?"         → "four"
    color     "What color is the bowl?"            → "green"
    exists    "Is there a purple block?"           → "no"
    relation  "Is the red block left of the green bowl?" → "yes"
    closer    "Which is closer to the robot, the red block or the blue block?" → "the blue block"
    position  "Where is the red block?"            → "front left"
    on_top    "What is on top of the yellow block?" → "the red block" / "nothing"
    inside    "What is in the green bowl?"         → "the red block" / "nothing"

Directions are the robot's (REP 103: the base at the origin looks along +x, +y is its left):
"left of" means larger y, "closer to the robot" smaller x. Pairs closer than `margin` along the
asked axis are never asked about, so no answer depends on a few millimetres.

    python -m threedmoe_ros.data.qa --out data_out/qa --tasks stack-blocks put-block-in-bowl --seeds 0:200

writes scenes/<task>_<seed>.npz (xyz, rgb, label) and qa.jsonl (one line per question: scene,
question, answer, kind). `QADataset` reads them back as (Cloud, question, answer).
This module uses numpy only; the simulator is imported by `generate` alone.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from threedmoe_ros.types import Cloud

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]
CAPTION_PROMPTS = ["Describe the scene.", "What is on the table?", "Describe the objects on the table."]
# Colours the simulator may use, for "is there a … block?" questions with the answer "no".
COLOR_NAMES = ["red", "green", "blue", "yellow", "brown", "gray", "cyan", "purple", "orange", "pink", "white"]


@dataclass
class SceneObject:
    """What a question may mention about one object (from TabletopEnv info["objects"])."""

    label: int  # instance id in the cloud
    kind: str  # block | bowl | zone
    color: str
    size: str  # small | medium | large
    position: np.ndarray  # (3,) world, metres
    extent: float  # footprint side / diameter, metres

    @classmethod
    def from_info(cls, d: dict) -> "SceneObject":
        return cls(int(d["label"]), str(d["kind"]), str(d["color"]), str(d.get("size", "medium")),
                   np.asarray(d["position"], dtype=float), float(d.get("extent", 0.04)))


@dataclass
class QA:
    question: str
    answer: str
    kind: str


def number(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def names(objects: Sequence[SceneObject]) -> dict[int, str]:
    """A unique name per object where one exists: 'red block', else 'small red block'; ambiguous ones left out."""
    out: dict[int, str] = {}
    short = Counter(f"{o.color} {o.kind}" for o in objects)
    full = Counter(f"{o.size} {o.color} {o.kind}" for o in objects)
    for o in objects:
        if short[f"{o.color} {o.kind}"] == 1:
            out[o.label] = f"{o.color} {o.kind}"
        elif full[f"{o.size} {o.color} {o.kind}"] == 1:
            out[o.label] = f"{o.size} {o.color} {o.kind}"
    return out


def _plural(kind: str, n: int) -> str:
    return kind if n == 1 else kind + "s"


def _with_article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def is_on_top(a: SceneObject, b: SceneObject) -> bool:
    """a rests on b: overlapping footprints and a higher by about one block."""
    return (b.kind == "block" and np.linalg.norm(a.position[:2] - b.position[:2]) < 0.6 * b.extent
            and 0.5 * b.extent < a.position[2] - b.position[2] < 1.5 * max(a.extent, b.extent))


def is_inside(a: SceneObject, container: SceneObject) -> bool:
    """a lies in a bowl or zone: its centre within the container's footprint."""
    return (container.kind in ("bowl", "zone") and a.kind == "block"
            and np.linalg.norm(a.position[:2] - container.position[:2]) < 0.5 * container.extent)


def scene_caption(objects: Sequence[SceneObject], rng: np.random.Generator, relations: int = 2,
                  margin: float = 0.05) -> str:
    """Objects grouped by kind, then a few left/right facts: what Stage I aligns the encoder on."""
    kinds = Counter(o.kind for o in objects)
    parts = []
    for kind, n in sorted(kinds.items()):
        members = ", ".join(_with_article(f"{o.color} {o.kind}") for o in objects if o.kind == kind)
        parts.append(f"{number(n)} {_plural(kind, n)}: {members}")
    text = "; ".join(parts) + "."
    named = names(objects)
    pairs = [(a, b) for a in objects for b in objects
             if a.label < b.label and a.label in named and b.label in named and abs(a.position[1] - b.position[1]) > margin]
    for i in rng.permutation(len(pairs))[:relations]:
        a, b = pairs[i]
        side = "left" if a.position[1] > b.position[1] else "right"
        text += f" the {named[a.label]} is {side} of the {named[b.label]}."
    return text


def scene_questions(objects: Sequence[SceneObject], rng: np.random.Generator, count: int = 8,
                    margin: float = 0.05) -> list[QA]:
    """Up to `count` distinct questions about one scene, kinds mixed, each answerable exactly."""
    named = names(objects)
    pool: list[QA] = []
    kinds = Counter(o.kind for o in objects)
    for kind, n in kinds.items():
        pool.append(QA(f"How many {kind}s are there?", number(n), "count"))
        if n == 1:
            only = next(o for o in objects if o.kind == kind)
            pool.append(QA(f"What color is the {kind}?", only.color, "color"))
    present = {(o.color, o.kind) for o in objects}
    for kind in kinds:
        absent = [c for c in COLOR_NAMES if (c, kind) not in present]
        if absent:
            pool.append(QA(f"Is there a {rng.choice(absent)} {kind}?", "no", "exists"))
        color = next(o.color for o in objects if o.kind == kind)
        pool.append(QA(f"Is there a {color} {kind}?", "yes", "exists"))
    for a in objects:
        for b in objects:
            if a.label == b.label or a.label not in named or b.label not in named:
                continue
            na, nb = named[a.label], named[b.label]
            if a.label < b.label and abs(a.position[1] - b.position[1]) > margin:
                pool.append(QA(f"Is the {na} left of the {nb}?", "yes" if a.position[1] > b.position[1] else "no",
                               "relation"))
            if a.label < b.label and abs(a.position[0] - b.position[0]) > margin:
                nearer = na if a.position[0] < b.position[0] else nb
                pool.append(QA(f"Which is closer to the robot, the {na} or the {nb}?", f"the {nearer}", "closer"))
    for b in objects:
        if b.label not in named:
            continue
        if b.kind == "block":
            above = [a for a in objects if a.label != b.label and is_on_top(a, b)]
            if len(above) <= 1 and all(a.label in named for a in above):
                pool.append(QA(f"What is on top of the {named[b.label]}?",
                               f"the {named[above[0].label]}" if above else "nothing", "on_top"))
        else:
            inside = [a for a in objects if is_inside(a, b)]
            if len(inside) <= 1 and all(a.label in named for a in inside):
                pool.append(QA(f"What is in the {named[b.label]}?",
                               f"the {named[inside[0].label]}" if inside else "nothing", "inside"))
    xs = np.array([o.position[0] for o in objects])
    ys = np.array([o.position[1] for o in objects])
    for o in objects:
        if o.label in named and len(objects) > 1:
            depth = "front" if o.position[0] < np.median(xs) - margin else "back" if o.position[0] > np.median(xs) + margin else ""
            side = "left" if o.position[1] > np.median(ys) + margin else "right" if o.position[1] < np.median(ys) - margin else ""
            where = " ".join(w for w in (depth, side) if w) or "in the middle"
            pool.append(QA(f"Where is the {named[o.label]}?", where, "position"))
    # Mix the kinds: one of each kind first, then the rest, so a short list is not all counting.
    order = rng.permutation(len(pool))
    firsts, rest, seen = [], [], set()
    for i in order:
        (rest if pool[i].kind in seen else firsts).append(pool[i])
        seen.add(pool[i].kind)
    unique, questions = set(), []
    for qa in firsts + rest:
        if qa.question not in unique:
            unique.add(qa.question)
            questions.append(qa)
    return questions[:count]


def generate(out: str | Path, tasks: Sequence[str], seeds: Sequence[int], questions_per_scene: int = 8,
             progress: bool = True) -> Path:
    """Reset the simulator on every (task, seed), save its cloud and write captions + QA to qa.jsonl."""
    from tqdm import tqdm

    from threedmoe_ros.sim import EnvConfig, TabletopEnv

    out = Path(out)
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    lines = []
    jobs = [(t, s) for t in tasks for s in seeds]
    for task in tasks:
        with TabletopEnv(EnvConfig(task=task)) as env:
            for seed in tqdm(seeds, desc=f"qa {task}", disable=not progress, unit="scene"):
                obs, info = env.reset(seed=int(seed))
                cloud: Cloud = obs["cloud"]
                scene = f"scenes/{task}_{seed}.npz"
                np.savez_compressed(out / scene, xyz=cloud.xyz, rgb=cloud.rgb, label=cloud.label)
                objects = [SceneObject.from_info(d) for d in info["objects"]]
                rng = np.random.default_rng([int(seed), len(lines)])
                lines.append({"scene": scene, "question": str(rng.choice(CAPTION_PROMPTS)),
                              "answer": scene_caption(objects, rng), "kind": "caption"})
                lines += [{"scene": scene, **asdict(qa)} for qa in scene_questions(objects, rng, questions_per_scene)]
    with open(out / "qa.jsonl", "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    print(f"{len(lines)} captions and questions about {len(jobs)} scenes → {out / 'qa.jsonl'}")
    return out / "qa.jsonl"


class QADataset(Sequence):
    """(Cloud, question, answer) items of a qa.jsonl; `kinds` selects e.g. ["caption"] for Stage I."""

    def __init__(self, path: str | Path, kinds: Sequence[str] | None = None):
        path = Path(path)
        if path.is_dir():
            path = path / "qa.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; write one with python -m threedmoe_ros.data.qa --out DIR")
        self.root = path.parent
        with open(path) as f:
            self.items = [json.loads(line) for line in f if line.strip()]
        if kinds is not None:
            self.items = [it for it in self.items if it["kind"] in set(kinds)]
        self._cache: dict[str, Cloud] = {}

    def __len__(self) -> int:
        return len(self.items)

    def cloud(self, scene: str) -> Cloud:
        if scene not in self._cache:
            with np.load(self.root / scene) as z:
                self._cache[scene] = Cloud(z["xyz"], z["rgb"], z["label"])
        return self._cache[scene]

    def __getitem__(self, index: int) -> tuple[Cloud, str, str]:
        item = self.items[index]
        return self.cloud(item["scene"]), item["question"], item["answer"]


def _seed_range(text: str) -> list[int]:
    if ":" in text:
        lo, hi = text.split(":")
        return list(range(int(lo), int(hi)))
    return [int(s) for s in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write captions and QA about simulator scenes (qa.jsonl + scenes/*.npz).")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", nargs="+", default=["put-block-in-bowl", "stack-blocks", "put-block-in-zone"])
    ap.add_argument("--seeds", default="0:100", help="a range lo:hi or a comma list")
    ap.add_argument("--questions-per-scene", type=int, default=8)
    args = ap.parse_args(argv)
    generate(args.out, args.tasks, _seed_range(args.seeds), args.questions_per_scene)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
