"""Instructions in many phrasings: a grammar over each task's templates, with a part of every
vocabulary and of every template family reserved for evaluation.

    phrasing = phrasing_for("train", [seed, task.stream])
    family = phrasing.family(task)           # templates this split may draw
    text = phrasing.rewrite(template.format(...))

A sentence is made in three moves:
1. a template of the task's family: `train` draws every template of the task but its last, plus the
   task's `train_templates`; `heldout` draws the last one and the task's `heldout_templates`;
2. words of a class (block, bowl, zone nouns; the verbs put, move, stack, build; big and small;
   the spellings colour and gray) are replaced by one synonym per class and sentence, from the
   split's part of that class's vocabulary;
3. politeness (a prefix, a suffix or a question), capitals and punctuation.
Capitals and punctuation carry no words, so both splits share them; every word the `heldout`
split can add (`HELDOUT_WORDS`) is one the `train` split never produces, and the tests check it.
`plain` (None) is the original: the task's own templates, verbatim.
"""

from __future__ import annotations

import re

import numpy as np

PHRASING_STREAM = 0x9A5E  # last word of the phrasing's seed sequence: [episode seed, task.stream, PHRASING_STREAM]
PHRASINGS = ("plain", "train", "heldout")

# class -> (words it replaces, the train split's synonyms, the heldout split's synonyms).
# A word's plural is made by the class's `plural` map, so "blocks" stays plural.
VOCABULARY: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "block": (("block",), ("block", "cube"), ("brick", "cuboid")),
    "bowl": (("bowl",), ("bowl", "dish"), ("container", "basin")),
    "zone": (("zone",), ("zone", "square"), ("region", "mat")),
    "put": (("put", "place"), ("put", "place", "set"), ("drop", "lay")),
    "move": (("move",), ("move", "shift"), ("transfer", "carry")),
    "stack": (("stack",), ("stack",), ("heap",)),
    "build": (("build",), ("build", "make"), ("assemble", "form")),
    "big": (("big", "large"), ("big", "large"), ("huge",)),
    "small": (("small", "little"), ("small", "little"), ("tiny",)),
    "colour": (("colour",), ("colour",), ("color",)),
    "gray": (("gray",), ("gray",), ("grey",)),
}
PLURAL = {"block": "blocks", "cube": "cubes", "brick": "bricks", "cuboid": "cuboids", "bowl": "bowls", "dish": "dishes",
          "container": "containers", "basin": "basins", "zone": "zones", "square": "squares", "region": "regions",
          "mat": "mats", "colour": "colours", "color": "colors"}
SINGULAR = {v: k for k, v in PLURAL.items()}

# Politeness: (prefix, suffix, question?) per split. The empty wrapper is the train split's too.
POLITENESS = {
    "train": (("", "", False), ("please ", "", False), ("", ", please", False), ("can you ", "", True)),
    "heldout": (("could you ", "", True), ("kindly ", "", False), ("i would like you to ", "", False),
                ("", " for me", False), ("", ", thanks", False)),
}
# Every word only the heldout split can produce: its synonyms (and their plurals) and its politeness.
HELDOUT_WORDS = frozenset(
    [w for _, _, held in VOCABULARY.values() for s in held for w in (s, PLURAL.get(s, s))]
    + ["could", "kindly", "would", "like", "me", "thanks"]
)

_WORD = re.compile(r"[A-Za-z]+")


def _classes() -> dict[str, tuple[str, bool]]:
    """Word (singular or plural) -> (its class, whether it is plural)."""
    table = {}
    for cls, (words, _, _) in VOCABULARY.items():
        for w in words:
            table[w] = (cls, False)
            if w in PLURAL:
                table[PLURAL[w]] = (cls, True)
    return table


_CLASS_OF = _classes()


class Phrasing:
    """Draws a task's template family and rewrites its sentences for one split (`train` or `heldout`)."""

    def __init__(self, split: str, rng: np.random.Generator):
        if split not in ("train", "heldout"):
            raise ValueError(f"phrasing split must be 'train' or 'heldout' (or 'plain' for none), got {split!r}")
        self.split = split
        self.rng = rng

    def family(self, task) -> tuple[str, ...]:
        """Templates this split draws for `task`: the train split never sees the heldout family, nor any
        template of a task held out from training (sim.tasks.HELDOUT_TASKS)."""
        if self.split == "train":
            if task.heldout:
                raise ValueError(f"task '{task.name}' is held out from training; the train phrasing never draws "
                                 "its templates (evaluate it with phrasing plain or heldout)")
            return tuple(task.templates[:-1]) + tuple(task.train_templates)
        return tuple(task.templates[-1:]) + tuple(task.heldout_templates)

    def rewrite(self, text: str) -> str:
        """Synonyms, then politeness, capitals and punctuation."""
        side = 1 if self.split == "train" else 2
        chosen: dict[str, str] = {}

        def swap(match: re.Match) -> str:
            word = match.group(0)
            key = word.lower()
            if key not in _CLASS_OF:
                return word
            cls, plural = _CLASS_OF[key]
            if cls not in chosen:  # one synonym per class and sentence
                options = VOCABULARY[cls][side]
                chosen[cls] = options[int(self.rng.integers(len(options)))]
            out = chosen[cls]
            return PLURAL.get(out, out + "s") if plural else out

        text = _WORD.sub(swap, text)
        prefix, suffix, question = POLITENESS[self.split][int(self.rng.integers(len(POLITENESS[self.split])))]
        text = f"{prefix}{text}{suffix}"
        style = int(self.rng.integers(3))  # lower case, sentence case, upper case
        if style == 1:
            text = text[:1].upper() + text[1:]
        elif style == 2:
            text = text.upper()
        end = "?" if question else str(self.rng.choice(["", ".", "!"]))
        return text + end


def check_phrasing(split: str) -> str:
    """`split` when it names a phrasing split; ValueError naming the known ones."""
    if split not in PHRASINGS:
        raise ValueError(f"unknown phrasing split '{split}'; known: {', '.join(PHRASINGS)}")
    return split


def phrasing_for(split: str, seed: list[int]) -> Phrasing | None:
    """The phrasing of an episode: None for `plain`, else its own stream seeded by `seed` (the episode's
    seed and its task's stream number)."""
    check_phrasing(split)
    return None if split == "plain" else Phrasing(split, np.random.default_rng([*seed, PHRASING_STREAM]))
