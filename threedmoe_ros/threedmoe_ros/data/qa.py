"""Captions and question–answer pairs about tabletop scenes (Stage II trains on the questions),
balanced so that a question alone does not give its answer away.

The simulator knows every object (kind, colour, size, pose), so questions are written from that
ground truth and every answer is short and exact (EM@1 is meaningful). Nine kinds, each with a fixed
set of answer options, so chance is 1 / (number of options) for every question of a kind:

    kind      example                                                            options
    exists    "Is there a cyan bowl?"                                            yes / no
    count     "How many blocks are in the green zone?"                           one / two / three
    color     "What color is the block on top of the red block?"                 the simulator's palette
    size      "What size is the blue block?"                                     small / medium / big
    relation  "Is the red block left of the green bowl?" (left of, right of,     yes / no
              in front of, behind, closer to the robot than)
    on_top    "Is the red block stacked on the yellow block?"                    yes / no
    inside    "Is the gray block in the green bowl?"                             yes / no
    position  "Where is the red block?"                                          nine table regions
    refer     "'Pick up the leftmost block.' Which block does this instruction   the two blocks it names
              refer to, the red block or the blue block?"

How the balance is built (by construction, not hoped for):
1. Per scene and kind, every question the scene can answer exactly is a candidate, with its answer.
   Objects are named only when the name is unique, descriptions of the object asked about never name
   the property asked for, and pairs closer than `margin` along the asked axis are never asked about.
2. A `Balancer` keeps, per split, how often each answer option has been the answer, for three keys:
   the kind, the question form, and the question's text without its phrasing. A candidate is
   admissible only if its answer is one its text has had least often — so "yes" and "no" stay even
   for "Is there a cyan bowl?" itself, not only over all existence questions, and a text the tasks
   always answer alike ("How many zones are there?") is asked once, not every scene. Of the
   admissible ones it picks the one whose answer its kind lacks most, then its form. For choice
   questions ("refer") the option balanced is the position in the question (first / second named).
3. The phrasing is chosen by cycling, per form and answer, through the phrasings the split allows,
   so no phrasing goes with one answer more than another.
4. After all scenes of a split, each template (phrasing) is trimmed to the same count per answer
   option, the excess dropped at random: exactly uniform per template, so per kind too. An option no
   scene could give is reported.
Scenes are the simulator's tasks after a random number of the oracle's steps, so stacks, blocks in
bowls and blocks in zones occur and on-top / inside questions have "yes" answers too.

Held out: scenes by seed (the caller gives each split its own seeds) and phrasings: every form has
phrasings used only in the test split (`phrasing: "held_out"` in the item), so a model that matches
surface strings is caught. `blind_prior` answers from the question alone (the answer position most
often right per template on the training split, else per kind); on a balanced split it scores chance.

Directions are the robot's (REP 103: the base at the origin looks along +x, +y is its left):
"left of" means larger y, "in front of" smaller x (nearer the robot), "closer to the robot" a smaller
horizontal distance from the base. Regions split the workspace box into thirds along x and y.

    threedmoe-qa-data --out data_out/qa_train --split train --seeds 0:300
    threedmoe-qa-data --out data_out/qa_test --split test --seeds 10000:10080

writes scenes/<task>_<seed>.npz (xyz, rgb, label) and qa.jsonl (one line per item: scene, question,
answer, kind, template, options, phrasing). `QADataset` reads them back as (Cloud, question, answer).
This module uses numpy only; the simulator is imported by `simulate_scenes` alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from threedmoe_ros.types import Cloud
from threedmoe_ros.workspace import WORKSPACE

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]
CAPTION_PROMPTS = ["Describe the scene.", "What is on the table?", "Describe the objects on the table."]
# Colours a scene may have when the caller does not pass the simulator's palette.
COLOR_NAMES = ["red", "green", "blue", "yellow", "brown", "gray", "cyan", "purple", "orange", "pink", "white"]
KINDS = ("exists", "count", "color", "size", "relation", "on_top", "inside", "position", "refer")
YES_NO = ("yes", "no")
COUNTS = ("one", "two", "three")  # "four" is rare in these tasks; asking it would cost most count questions
SIZES = ("small", "medium", "big")
# Thirds of the workspace: x (depth) low → "front" (nearer the robot), y (side) high → "left".
DEPTHS, SIDES = ("front", "", "back"), ("right", "", "left")
REGIONS = tuple(" ".join(w for w in (d, s) if w) or "center" for d in DEPTHS for s in SIDES)
# Tasks whose scenes together have every kind of object, size and arrangement the questions need.
DEFAULT_TASKS = ["put-block-in-bowl", "put-block-in-matching-bowl", "stack-blocks", "stack-blocks-by-size",
                 "put-block-in-zone", "stack-same-color-on-zone", "stack-by-color-and-size",
                 "move-blocks-between-positions-by-size"]

# Phrasings per form: the last one of each list is held out (used in the test split only).
PHRASINGS: dict[str, list[str]] = {
    "exists": ["Is there a {color} {kind}?", "Do you see a {color} {kind}?",
               "Can you find a {color} {kind} on the table?"],
    "count": ["How many {np} are there?", "Count the {np}.", "What is the number of {np}?"],
    "color": ["What color is the {desc}?", "Which color does the {desc} have?", "Tell me the color of the {desc}."],
    "size": ["What size is the {name}?", "Is the {name} small, medium or big?", "How big is the {name}?"],
    "relation": ["Is the {a} {rel} the {b}?", "From the robot's view, is the {a} {rel} the {b}?",
                 "Would you say the {a} is {rel} the {b}?"],
    "on_top": ["Is the {a} on top of the {b}?", "Is the {a} stacked on the {b}?", "Does the {a} sit on the {b}?"],
    "inside": ["Is the {a} in the {c}?", "Does the {c} contain the {a}?", "Has the {a} been put in the {c}?"],
    "position": ["Where is the {name}?", "In which part of the table is the {name}?",
                 "Which area of the table holds the {name}?"],
    "refer": ["'{instr}' Which block does this instruction refer to, the {a} or the {b}?",
              "Which block should be moved for '{instr}': the {a} or the {b}?",
              "The instruction is '{instr}'. Is that the {a} or the {b}?"],
}
REFER_VERBS = ["Pick up", "Move", "Push"]
# How many times more one answer may follow a question text than another (see Balancer.choose).
TEXT_SLACK = 1


@dataclass
class SceneObject:
    """What a question may mention about one object (from TabletopEnv info["objects"])."""

    label: int  # instance id in the cloud
    kind: str  # block | bowl | zone
    color: str
    size: str  # small | medium | big (blocks); "" for bowls and zones
    position: np.ndarray  # (3,) world, metres
    extent: float  # blocks: edge; bowls: outer radius; zones: side (metres)

    @classmethod
    def from_info(cls, d: dict) -> "SceneObject":
        return cls(int(d["label"]), str(d["kind"]), str(d["color"]), str(d.get("size", "medium")),
                   np.asarray(d["position"], dtype=float), float(d.get("extent", 0.04)))


@dataclass
class QA:
    question: str
    answer: str
    kind: str
    template: str = ""  # the phrasing with its slots, e.g. "Is there a {color} {kind}?"
    options: list[str] = field(default_factory=list)  # every answer the question allows; chance = 1/len
    phrasing: str = "seen"  # "held_out": a phrasing the training split never uses


@dataclass
class Candidate:
    """A question a scene can answer, before it is phrased."""

    kind: str
    form: str  # key of PHRASINGS
    slots: dict  # values for the phrasing's {fields}
    answer: str
    options: tuple[str, ...]

    @property
    def slot(self) -> int:  # the balanced quantity: which option is right
        return self.options.index(self.answer)

    @property
    def text_key(self) -> str:  # the question without its phrasing
        return self.form + "|" + "|".join(f"{k}={v}" for k, v in sorted(self.slots.items()))


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
        elif o.size and full[f"{o.size} {o.color} {o.kind}"] == 1:
            out[o.label] = f"{o.size} {o.color} {o.kind}"
    return out


def _plural(kind: str, n: int) -> str:
    return kind if n == 1 else kind + "s"


def _with_article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def _horizontal(a: SceneObject, b: SceneObject) -> float:
    return float(np.linalg.norm(a.position[:2] - b.position[:2]))


def is_on_top(a: SceneObject, b: SceneObject) -> bool:
    """a rests on b: overlapping footprints and a higher by about one block."""
    return (a.kind == "block" and b.kind == "block" and _horizontal(a, b) < 0.6 * b.extent
            and 0.5 * b.extent < a.position[2] - b.position[2] < 1.5 * max(a.extent, b.extent))


def _inside_depth(a: SceneObject, container: SceneObject) -> float:
    """How far a's centre is inside the container's rim (negative: outside); bowls are round, zones square."""
    d = a.position[:2] - container.position[:2]
    if container.kind == "bowl":
        return container.extent - float(np.linalg.norm(d))
    return container.extent / 2 - float(np.abs(d).max())


def is_inside(a: SceneObject, container: SceneObject) -> bool:
    """a lies in a bowl or zone: its centre well within the container's footprint."""
    return container.kind in ("bowl", "zone") and a.kind == "block" and _inside_depth(a, container) > 0.02


def region(position: np.ndarray, margin: float = 0.02) -> str | None:
    """The region name of a point (thirds of the workspace), or None within `margin` of a border."""
    cells = []
    for axis in (0, 1):
        lo, hi = WORKSPACE[axis]
        edges = lo + (hi - lo) * np.array([1 / 3, 2 / 3])
        if np.min(np.abs(position[axis] - edges)) < margin:
            return None
        cells.append(int(np.searchsorted(edges, position[axis])))
    return REGIONS[3 * cells[0] + cells[1]]


def scene_caption(objects: Sequence[SceneObject], rng: np.random.Generator, relations: int = 2,
                  margin: float = 0.05) -> str:
    """Objects grouped by kind, what is stacked or contained, then a few left/right facts."""
    kinds = Counter(o.kind for o in objects)
    parts = []
    for kind, n in sorted(kinds.items()):
        members = ", ".join(_with_article(f"{o.color} {o.kind}") for o in objects if o.kind == kind)
        parts.append(f"{number(n)} {_plural(kind, n)}: {members}")
    text = "; ".join(parts) + "."
    named = names(objects)
    for a in objects:
        for b in objects:
            if a.label in named and b.label in named and a.label != b.label:
                if is_on_top(a, b):
                    text += f" the {named[a.label]} is on the {named[b.label]}."
                elif is_inside(a, b):
                    text += f" the {named[a.label]} is in the {named[b.label]}."
    pairs = [(a, b) for a in objects for b in objects
             if a.label < b.label and a.label in named and b.label in named and abs(a.position[1] - b.position[1]) > margin]
    for i in rng.permutation(len(pairs))[:relations]:
        a, b = pairs[i]
        side = "left" if a.position[1] > b.position[1] else "right"
        text += f" the {named[a.label]} is {side} of the {named[b.label]}."
    return text


# ----- candidates per kind ------------------------------------------------------------------------

def _descriptions(objects: Sequence[SceneObject], margin: float) -> dict[int, list[tuple[str, set[int]]]]:
    """Colour-free unique descriptions of objects, with the labels each description mentions.

    "bowl" (the only bowl), "small block" (the only small one), "leftmost block", "block closest to
    the robot", "block on top of the red block", "block in the green zone", … — what a colour question
    or an instruction may call an object without saying its colour."""
    named = names(objects)
    blocks = [o for o in objects if o.kind == "block"]
    out: dict[int, list[tuple[str, set[int]]]] = defaultdict(list)
    for kind, n in Counter(o.kind for o in objects).items():
        if n == 1:
            out[next(o for o in objects if o.kind == kind).label].append((kind, set()))
    sizes = Counter(o.size for o in blocks)
    if len(sizes) > 1:
        for o in blocks:
            if sizes[o.size] == 1:
                out[o.label].append((f"{o.size} block", set()))
    extremes = {"leftmost block": lambda o: o.position[1], "rightmost block": lambda o: -o.position[1],
                "block farthest from the robot": lambda o: np.linalg.norm(o.position[:2]),
                "block closest to the robot": lambda o: -np.linalg.norm(o.position[:2])}
    if len(blocks) > 1:
        for desc, score in extremes.items():
            ranked = sorted(blocks, key=score, reverse=True)
            if score(ranked[0]) - score(ranked[1]) > margin:
                out[ranked[0].label].append((desc, set()))
    for b in objects:
        if b.label not in named:
            continue
        held = [a for a in blocks if a.label != b.label and (is_on_top(a, b) or is_inside(a, b))]
        if len(held) == 1:
            relation = "on top of" if b.kind == "block" else "in"
            out[held[0].label].append((f"block {relation} the {named[b.label]}", {b.label}))
    return out


def _count_candidates(objects, named, margin) -> list[Candidate]:
    blocks = [o for o in objects if o.kind == "block"]
    phrases: dict[str, int] = {}
    for kind, n in Counter(o.kind for o in objects).items():
        phrases[kind + "s"] = n
    for color, n in Counter(o.color for o in blocks).items():
        phrases[f"{color} blocks"] = n
    for size, n in Counter(o.size for o in blocks).items():
        phrases[f"{size} blocks"] = n
    for c in objects:
        if c.kind in ("bowl", "zone") and c.label in named:
            phrases[f"blocks in the {named[c.label]}"] = sum(is_inside(a, c) for a in blocks)
            if any(abs(_inside_depth(a, c) - 0.02) < 0.01 for a in blocks):
                del phrases[f"blocks in the {named[c.label]}"]  # a block on the rim: not countable exactly
    return [Candidate("count", "count", {"np": np_}, number(n), COUNTS)
            for np_, n in phrases.items() if number(n) in COUNTS]


def _pair_relations(a: SceneObject, b: SceneObject, margin: float) -> dict[str, bool]:
    """Relations of a to b that hold or fail clearly (by more than `margin`)."""
    out = {}
    dy, dx = a.position[1] - b.position[1], a.position[0] - b.position[0]
    if abs(dy) > margin:
        out["left of"], out["right of"] = dy > 0, dy < 0
    if abs(dx) > margin:
        out["in front of"], out["behind"] = dx < 0, dx > 0
    da, db = np.linalg.norm(a.position[:2]), np.linalg.norm(b.position[:2])
    if abs(da - db) > margin:
        out["closer to the robot than"] = da < db
    return out


def candidates(objects: Sequence[SceneObject], colors: Sequence[str], margin: float = 0.05) -> dict[str, list[Candidate]]:
    """Every question of every kind that this scene answers exactly, grouped by kind."""
    named = names(objects)
    colors = tuple(colors)
    blocks = [o for o in objects if o.kind == "block"]
    out: dict[str, list[Candidate]] = defaultdict(list)
    present = {(o.color, o.kind) for o in objects}
    for kind in sorted({o.kind for o in objects}):
        for color in colors:
            out["exists"].append(Candidate("exists", "exists", {"color": color, "kind": kind},
                                           "yes" if (color, kind) in present else "no", YES_NO))
    out["count"] = _count_candidates(objects, named, margin)
    descriptions = _descriptions(objects, margin)
    for o in objects:
        if o.color in colors:
            for desc, _ in descriptions.get(o.label, []):
                out["color"].append(Candidate("color", "color", {"desc": desc}, o.color, colors))
    for o in blocks:  # named by colour alone, so the name never says the size
        if named.get(o.label) == f"{o.color} block" and o.size in SIZES:
            out["size"].append(Candidate("size", "size", {"name": named[o.label]}, o.size, SIZES))
    for a in objects:
        for b in objects:
            if a.label == b.label or a.label not in named or b.label not in named:
                continue
            na, nb = named[a.label], named[b.label]
            for rel, holds in _pair_relations(a, b, margin).items():
                out["relation"].append(Candidate("relation", "relation", {"a": na, "rel": rel, "b": nb},
                                                 "yes" if holds else "no", YES_NO))
            if a.kind == "block" and b.kind == "block":
                out["on_top"].append(Candidate("on_top", "on_top", {"a": na, "b": nb},
                                               "yes" if is_on_top(a, b) else "no", YES_NO))
            if a.kind == "block" and b.kind in ("bowl", "zone") and abs(_inside_depth(a, b) - 0.02) > 0.01:
                out["inside"].append(Candidate("inside", "inside", {"a": na, "c": nb},
                                               "yes" if is_inside(a, b) else "no", YES_NO))
    for o in objects:
        where = region(o.position) if o.label in named else None
        if where is not None:
            out["position"].append(Candidate("position", "position", {"name": named[o.label]}, where, REGIONS))
    for target in blocks:
        for desc, mentioned in descriptions.get(target.label, []):
            # The other option is a named block the description does not mention: "the block on the red
            # block — the red block or …?" would give the answer away.
            for other in blocks:
                if other.label in (target.label, *mentioned) or other.label not in named or target.label not in named:
                    continue
                for first, second in ((target, other), (other, target)):
                    opts = (f"the {named[first.label]}", f"the {named[second.label]}")
                    out["refer"].append(Candidate("refer", "refer", {"instr": f"{{verb}} the {desc}.",
                                                                     "a": named[first.label], "b": named[second.label]},
                                                  f"the {named[target.label]}", opts))
    return out


# ----- balancing ---------------------------------------------------------------------------------

class Balancer:
    """Counts of the answer option per kind, form and question text within one split, so the next
    question picked is the one whose answer those lack most (see the module docstring)."""

    def __init__(self, held_out: bool):
        self.held_out = held_out  # may the held-out phrasings be used (test split)
        self.counts: dict[str, Counter] = defaultdict(Counter)

    def _keys(self, c: Candidate) -> list[str]:
        return [f"kind|{c.kind}", f"form|{c.form}", f"text|{c.text_key}"]

    def _lack(self, key: str, c: Candidate) -> int:
        seen = self.counts[key]
        return seen[c.slot] - min(seen[i] for i in range(len(c.options)))

    def choose(self, cands: list[Candidate], rng: np.random.Generator) -> Candidate | None:
        """The candidate whose answer its kind, then form, most lacks; None when none is admissible.

        Admissible: its answer is one its text has had least often, so no question text ever has one
        answer more than once more often than another ("How many zones are there?" is always "one"
        in these tasks: it is asked once, then no more)."""
        cands = [c for c in cands if self._lack(f"text|{c.text_key}", c) <= TEXT_SLACK]
        if not cands:
            return None
        scores = [tuple(self._lack(k, c) for k in self._keys(c)[:2]) + (rng.random(),) for c in cands]
        best = cands[min(range(len(cands)), key=scores.__getitem__)]
        for k in self._keys(best):
            self.counts[k][best.slot] += 1
        return best

    def phrase(self, c: Candidate, rng: np.random.Generator) -> QA:
        """Phrase a chosen candidate: the phrasing cycles per (form, answer), so none leans to an answer."""
        allowed = PHRASINGS[c.form] if self.held_out else PHRASINGS[c.form][:-1]
        turn = self.counts[f"phrasing|{c.form}|{c.slot}"]
        index = turn["n"] % len(allowed)
        turn["n"] += 1
        template = allowed[index]
        slots = dict(c.slots)
        if "instr" in slots:
            slots["instr"] = slots["instr"].format(verb=REFER_VERBS[int(rng.integers(len(REFER_VERBS)))])
        question = template.format(**slots)
        return QA(question, c.answer, c.kind, template, list(c.options),
                  "held_out" if index == len(PHRASINGS[c.form]) - 1 else "seen")


def scene_questions(objects: Sequence[SceneObject], rng: np.random.Generator, count: int = 9,
                    margin: float = 0.05, colors: Sequence[str] = COLOR_NAMES, balancer: Balancer | None = None,
                    per_kind: int = 1) -> list[QA]:
    """Up to `per_kind` questions of each kind this scene can answer (kinds in random order), at most `count`.

    With a `balancer` shared over a split, answers are balanced over the split; alone, over this scene."""
    balancer = balancer or Balancer(held_out=False)
    pool = candidates(objects, colors, margin)
    out: list[QA] = []
    for kind in [KINDS[i] for i in rng.permutation(len(KINDS))]:
        cands = list(pool.get(kind, []))
        for _ in range(per_kind):
            if not cands:
                break
            best = balancer.choose(cands, rng)
            if best is None:
                break
            # Never twice the same question about a scene.
            cands = [c for c in cands if c.text_key != best.text_key]
            out.append(balancer.phrase(best, rng))
    return out[:count]


def trim_to_balance(items: list[dict], rng: np.random.Generator, warn=print) -> list[dict]:
    """Drop items at random until every template (phrasing) has as many items per answer option as its
    rarest option has; captions are kept. Then every kind is uniform too, and a prior that gives one
    answer per template scores exactly chance. A kind with an option no item gives is balanced over
    the options that occur, with a warning."""
    groups: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    options: dict[str, int] = {}
    for i, it in enumerate(items):
        if it["kind"] != "caption":
            groups[it["template"]][it["options"].index(it["answer"])].append(i)
            options[it["template"]] = max(options.get(it["template"], 0), len(it["options"]))
    keep = {i for i, it in enumerate(items) if it["kind"] == "caption"}
    short = [t for t, slots in groups.items() if len(slots) < options[t]]
    if short:
        warn(f"qa: {len(short)} of {len(groups)} templates never got some of their answers (e.g. '{short[0]}'), "
             "so they are balanced over the answers that occur and a prior can beat chance on them; "
             "more scenes fix this")
    for template, slots in groups.items():
        n = min(len(v) for v in slots.values())
        for members in slots.values():
            keep.update(int(i) for i in rng.choice(members, n, replace=False))
    return [it for i, it in enumerate(items) if i in keep]


def blind_prior(train: Sequence[dict], test: Sequence[dict]) -> list[str]:
    """Answers to `test` from the question alone: per template, the answer position most often right in
    `train`; for a template `train` never used (held-out phrasings), the one most often right per kind.
    A model must beat this to show it reads the scene; on balanced splits it scores chance."""
    by_template: dict[str, Counter] = defaultdict(Counter)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for it in train:
        slot = it["options"].index(it["answer"])
        by_template[it["template"]][slot] += 1
        by_kind[it["kind"]][slot] += 1
    out = []
    for it in test:
        votes = by_template.get(it["template"]) or by_kind.get(it["kind"]) or Counter({0: 1})
        out.append(it["options"][min(votes.most_common(1)[0][0], len(it["options"]) - 1)])
    return out


def chance(kind_items: Sequence[dict]) -> float:
    """Expected EM@1 of a random guess among each item's options."""
    return float(np.mean([1 / len(it["options"]) for it in kind_items]))


# ----- the simulator's scenes --------------------------------------------------------------------

@dataclass
class Scene:
    """One simulator scene: where its cloud goes, its objects, and the cloud (empty when not observed)."""

    name: str
    objects: list[SceneObject]
    cloud: Cloud
    seed: int


def simulate_scenes(tasks: Sequence[str], seeds: Sequence[int], observe: bool = True,
                    progress: bool = True) -> Iterator[Scene]:
    """Reset each (task, seed) and run a random number of the oracle's steps (the same for the same
    seed), so scenes show blocks stacked, in bowls and in zones as often as apart."""
    from tqdm import tqdm

    from threedmoe_ros.sim import EnvConfig, TabletopEnv

    for t, task in enumerate(tasks):
        with TabletopEnv(EnvConfig(task=task, observe=observe)) as env:
            for seed in tqdm(seeds, desc=f"qa {task}", disable=not progress, unit="scene"):
                obs, info = env.reset(seed=int(seed))
                plan = env.oracle_plan()
                steps = int(np.random.default_rng([int(seed), t, 7]).integers(0, len(plan) + 1))
                if steps:
                    obs, _, _, _, info = env.step(plan[:steps])
                yield Scene(f"scenes/{task}_{seed}.npz", [SceneObject.from_info(d) for d in info["objects"]],
                            obs["cloud"], int(seed))


def simulator_colors() -> list[str]:
    """The palette of the simulator's (seen-colour) scenes: the options of colour questions."""
    from threedmoe_ros.sim.assets import TRAIN_COLORS

    return list(TRAIN_COLORS)


def split_items(scenes: Iterator[Scene] | Sequence[Scene], split: str, per_kind: int = 1,
                colors: Sequence[str] | None = None, out: Path | None = None, seed: int = 0,
                warn=print) -> list[dict]:
    """Caption + balanced questions for every scene of one split (`out`: also save each scene's cloud)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    colors = list(colors) if colors is not None else simulator_colors()
    balancer = Balancer(held_out=split == "test")
    lines = []
    for scene in scenes:
        if out is not None:
            np.savez_compressed(out / scene.name, xyz=scene.cloud.xyz, rgb=scene.cloud.rgb, label=scene.cloud.label)
        rng = np.random.default_rng([scene.seed, len(lines), seed])
        lines.append({"scene": scene.name, "question": str(rng.choice(CAPTION_PROMPTS)),
                      "answer": scene_caption(scene.objects, rng), "kind": "caption", "template": "caption",
                      "options": [], "phrasing": "seen"})
        lines += [{"scene": scene.name, **asdict(qa)}
                  for qa in scene_questions(scene.objects, rng, len(KINDS) * per_kind, colors=colors,
                                            balancer=balancer, per_kind=per_kind)]
    return trim_to_balance(lines, np.random.default_rng(seed), warn=warn)


def generate(out: str | Path, tasks: Sequence[str], seeds: Sequence[int], split: str = "train", per_kind: int = 1,
             progress: bool = True) -> Path:
    """Simulate every (task, seed), save its cloud and write its caption + balanced QA to qa.jsonl."""
    out = Path(out)
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    lines = split_items(simulate_scenes(tasks, seeds, progress=progress), split, per_kind, out=out,
                        warn=lambda m: print(m, file=sys.stderr))
    with open(out / "qa.jsonl", "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    kinds = Counter(line["kind"] for line in lines)
    print(f"{split}: {kinds.pop('caption', 0)} captions and {sum(kinds.values())} questions "
          f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}) → {out / 'qa.jsonl'}")
    return out / "qa.jsonl"


class QADataset(Sequence):
    """(Cloud, question, answer) items of a qa.jsonl; `kinds` selects some kinds (e.g. ["caption"])."""

    def __init__(self, path: str | Path, kinds: Sequence[str] | None = None):
        path = Path(path)
        if path.is_dir():
            path = path / "qa.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; write one with threedmoe-qa-data --out DIR")
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
    ap = argparse.ArgumentParser(prog="threedmoe-qa-data",
                                 description="Write captions and balanced QA about simulator scenes (qa.jsonl + scenes/*.npz).")
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", choices=["train", "test"], default="train",
                    help="test also uses the held-out phrasings; give each split its own --seeds")
    ap.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    ap.add_argument("--seeds", default="0:100", help="a range lo:hi or a comma list")
    ap.add_argument("--per-kind", type=int, default=1, help="questions of each kind per scene (before balancing)")
    args = ap.parse_args(argv)
    try:
        seeds = _seed_range(args.seeds)
    except ValueError:
        ap.error(f"--seeds {args.seeds!r} is not lo:hi or a comma list of integers")
    if not seeds or args.per_kind < 1:
        ap.error("--seeds must name at least one seed and --per-kind must be ≥ 1")
    try:
        generate(args.out, args.tasks, seeds, args.split, args.per_kind)
    except (KeyError, ValueError) as exc:  # an unknown task names the known ones
        print(f"threedmoe-qa-data: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
