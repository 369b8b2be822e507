"""Tasks of the tabletop: a scene sampler, instruction templates (with paraphrases), goals the oracle
satisfies in order, a success check and a step limit — one class each, listed in TASKS.

Families: the paper's three (zone, bowl, stacking), LoHoRavens' pick-and-place primitives (one block
named by size or by where it lies) and its long-horizon tasks. Where two tasks differ only in how
they name their objects or where they put them, they are one class with a parameter (a variant).
HELDOUT_TASKS, LoHoRavens' unseen tasks, are never collected for training: each composes what
training tasks teach (an area word from one, stacking from another).
Words for places on the table, as a person standing at the far side looking at the robot would
not say them, so we fix them from the top-down image: "top" is far from the robot (+x), "left"
is +y.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from threedmoe_ros.sim.assets import BLOCK_SIZES, Object
from threedmoe_ros.sim.goals import Goal, InBowl, InRegion, OnTop
from threedmoe_ros.sim.scene import SAMPLE_BOUNDS, Pose2, Region, Scene, in_bowl, in_region, on_top

FAMILIES = ("zone", "bowl", "stacking", "primitive", "long-horizon")
SPLITS = ("training-tasks", "heldout-tasks")  # names `resolve_tasks` accepts for the two task splits
SIZE_ORDER = ("big", "medium", "small")


@dataclass
class Episode:
    """What a task made of one seed."""

    instruction: str
    goals: list[Goal]
    """In the order the oracle achieves them (stacks bottom-up)."""
    targets: list[int]
    """Objects (indices into scene.objects) the instruction is about."""
    reward_fn: Callable[[list[Object], list[Pose2]], float]
    """Fraction of the task done, in [0, 1]; 1 means success."""
    keep_out: list[Region] = field(default_factory=list)
    """Where the oracle must not park a block it moves out of the way (goal zones and areas)."""
    order: Callable[[list[Object], list[Pose2]], list[Goal]] | None = None
    """The goals in canonical order for the current state, where the task lets objects be
    interchangeable or goals come in any order (see `reading_order`); None: `goals` as they are."""

    def goals_now(self, objects: list[Object], poses: list[Pose2]) -> list[Goal]:
        """What the oracle achieves, in order, from the state `poses`: one right next step for every state."""
        return self.goals if self.order is None else self.order(objects, poses)


def reading_order(indices: list[int], poses: list[Pose2]) -> list[int]:
    """The canonical order of interchangeable objects: left to right in the top-down image
    (descending y, to the millimetre), nearer the robot first (ascending x) on a tie.

    Demonstrations must have one right next step: when three red blocks may go to the zone in any
    order, the oracle used to take them in the order the scene created them, which no observation
    shows, and a policy trained on that averaged between blocks. Reading order is a function of
    the positions the cloud shows, so a policy can learn it.
    """
    return sorted(indices, key=lambda i: (-round(float(poses[i].position[1]), 3), float(poses[i].position[0])))


def on_table(obj: Object, pose: Pose2) -> bool:
    return pose.position[2] <= obj.height / 2 + 0.01


def canonical_tower(levels: list[list[int]], objects: list[Object], poses: list[Pose2],
                    base_ok: Callable[[int], bool] = lambda i: True) -> list[int]:
    """Blocks of a tower bottom-up, one per level; `levels[k]` are the blocks allowed at level k.

    The part of a tower already standing is kept (the tallest one whose base is on the table and
    passes `base_ok`; ties go to reading order); every level above it takes the first allowed
    block in reading order that is not yet used.
    """
    tower: list[int] = []
    for base in reading_order(levels[0], poses):
        if not (on_table(objects[base], poses[base]) and base_ok(base)):
            continue
        chain = [base]
        for allowed in levels[1:]:
            above = [b for b in allowed if b not in chain
                     and on_top(objects[b], poses[b], objects[chain[-1]], poses[chain[-1]])]
            if not above:
                break
            chain.append(above[0])
        if len(chain) > len(tower):
            tower = chain
    for allowed in levels[len(tower):]:
        tower.append(reading_order([b for b in allowed if b not in tower], poses)[0])
    return tower


def goal_fraction(goals: list[Goal]) -> Callable:
    def reward(objects, poses) -> float:
        return sum(g.holds(objects, poses) for g in goals) / max(len(goals), 1)
    return reward


def stack_score(objects, poses, members: list[int], keys: list | None = None, key: str | None = None,
                base: Region | None = None) -> int:
    """How many of `members` form a correct tower, counted from the bottom.

    The tower is read bottom-up by height; block i counts if it sits squarely on block i-1 (or, for
    the bottom one, lies in `base` when given) and, when `keys` is given, its `key` attribute
    (color/size) is keys[i]. Blocks with equal keys are interchangeable.
    """
    order = sorted(members, key=lambda i: poses[i].position[2])
    count = 0
    for i, index in enumerate(order):
        obj = objects[index]
        if keys is not None and getattr(obj, key) != keys[i]:
            break
        if i == 0:
            if base is not None and not in_region(obj, poses[index], base):
                break
            if poses[index].position[2] > obj.height / 2 + 0.01:  # the bottom block stands on the table
                break
        elif not on_top(obj, poses[index], objects[order[i - 1]], poses[order[i - 1]]):
            break
        count += 1
    return count


def matching_fraction(objects, poses, blocks: list[int], bowls: list[int], allowed: Callable[[Object, Object], bool]) -> float:
    """Largest share of `blocks` that sit each in a distinct bowl of `bowls` they are allowed in."""
    inside = {(b, w) for b in blocks for w in bowls
              if allowed(objects[b], objects[w]) and in_bowl(objects[b], poses[b], objects[w], poses[w])}
    best = 0
    for perm in itertools.permutations(bowls, len(blocks)) if len(bowls) >= len(blocks) else []:
        best = max(best, sum((b, w) in inside for b, w in zip(blocks, perm)))
    return best / max(len(blocks), 1)


class Task:
    """Base class. Subclasses set name, family, templates and implement build().

    `templates` are the task's own sentences (what the `plain` phrasing draws); sim/phrasing.py's
    `train` split draws all but the last of them plus `train_templates`, its `heldout` split the last
    plus `heldout_templates`. `distractors` are the kinds of object appearance randomization may add
    without changing what the instruction asks (no extra block where "all the blocks" are meant).
    """

    name: str = ""
    family: str = ""
    heldout: bool = False
    """One of HELDOUT_TASKS: never collected for training, never phrased by the training sampler."""
    templates: tuple[str, ...] = ()
    train_templates: tuple[str, ...] = ()
    heldout_templates: tuple[str, ...] = ()
    distractors: tuple[str, ...] = ("bowl", "zone")

    @property
    def stream(self) -> int:
        """A number of the task's own for seed sequences (crc32 of its name: stable across processes),
        so two tasks' episodes of one seed do not share their look and phrasing."""
        return zlib.crc32(self.name.encode())

    def build(self, scene: Scene) -> Episode:
        raise NotImplementedError

    def step_limit(self, oracle_steps: int) -> int:
        """Steps allowed: the oracle's count plus room to recover from a slip or two."""
        return oracle_steps + max(2, oracle_steps // 2)

    def say(self, scene: Scene, **words) -> str:
        # One draw from the scene's stream whatever the phrasing, so the rest of the scene is the same.
        family = self.templates if scene.phrasing is None else scene.phrasing.family(self)
        text = family[int(scene.rng.integers(len(family)))].format(**words)
        return text if scene.phrasing is None else scene.phrasing.rewrite(text)


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


# ---------------------------------------------------------------- paper families


class PutBlockInZone(Task):
    """The blocks of a colour into the {z} zone (the paper's zone task), or, `every`, every block
    into a corner of the table."""

    name, family = "put-block-in-zone", "zone"
    templates = (
        "put all the {c} blocks in the {z} zone",
        "move every {c} block into the {z} zone",
        "place the {c} blocks inside the {z} zone",
        "gather the {c} blocks in the {z} area",
    )
    train_templates = ("into the {z} zone, put every {c} block",)
    heldout_templates = ("the {c} blocks all go in the {z} zone", "get each {c} block over to the {z} zone")
    distractors = ("block", "bowl", "zone")

    def __init__(self, every: bool = False):
        self.every = every
        if every:
            self.name, self.family = "put-all-blocks-in-corner", "long-horizon"
            self.templates = (
                "put all the blocks in the {a} corner",
                "move every block to the {a} corner of the table",
                "place each block in the {a} corner",
            )
            self.train_templates = ("into the {a} corner, put every block",)
            self.heldout_templates = ("all of the blocks end up in the {a} corner",)
            self.distractors = ("bowl", "zone")  # "all the blocks": no block that is not meant

    def build(self, scene):
        if self.every:
            a = str(scene.rng.choice(list(AREAS)))
            region = AREAS[a]
            n = int(scene.rng.integers(3, 5))
            targets = [scene.add_block(str(scene.rng.choice(scene.colors)), str(scene.rng.choice(["small", "medium"])),
                                       avoid=[region]) for _ in range(n)]
            goals = [InRegion(t, region) for t in targets]
            return Episode(self.say(scene, a=a), goals, targets, goal_fraction(goals), [region], _in_reading_order(goals))
        zc, c, *others = scene.pick_colors(4)
        zone = scene.add_zone(zc)
        region = scene.zone_region(zone)
        targets = [scene.add_block(c, str(scene.rng.choice(["small", "medium"])), avoid=[region]) for _ in range(3)]
        for color in others[: int(scene.rng.integers(1, 3))]:
            scene.add_block(color, "medium", avoid=[region])
        goals = [InRegion(t, region) for t in targets]

        def order(objects, poses):
            return [InRegion(t, region) for t in reading_order(targets, poses)]

        return Episode(self.say(scene, c=c, z=zc), goals, targets, goal_fraction(goals), [region], order)


# Where a block lies beside a reference object, in the words of the top-down image: unit xy direction.
SIDES = {"left of": (0.0, 1.0), "right of": (0.0, -1.0), "behind": (1.0, 0.0), "in front of": (-1.0, 0.0)}


class PutBlockInBowl(Task):
    """Blocks into bowls of a named colour, the blocks named `by` their colour (the paper's bowl task),
    their size, the side of a reference bowl they lie on ("relative") or the corner of the table they
    lie in ("absolute"); or, `by="all"`, every block into one bowl."""

    name, family = "put-block-in-bowl", "bowl"
    templates = (
        "put the {c} {blocks} in {a}{bc} {bowls}",
        "place each {c} block into a {bc} bowl",
        "move the {c} {blocks} into {a}{bc} {bowls}",
    )
    train_templates = ("into {a}{bc} {bowls}, put the {c} {blocks}",)
    heldout_templates = ("the {c} {blocks} should end up in {a}{bc} {bowls}",)
    distractors = ("block", "bowl", "zone")
    # by -> (name, family, templates, train_templates, heldout_templates) of the variants
    VARIANTS = {
        "size": ("put-block-in-bowl-by-size", "primitive", (
            "put the {s} {blocks} in {a}{bc} {bowls}",
            "place each {s} block into a {bc} bowl",
            "move the {s} {blocks} into {a}{bc} {bowls}",
        ), ("into {a}{bc} {bowls}, put the {s} {blocks}",), ("every {s} block should end up in a {bc} bowl",)),
        "relative": ("put-block-in-bowl-by-relative-position", "primitive", (
            "put the block {r} the {rc} bowl in the {bc} bowl",
            "place the block that lies {r} the {rc} bowl into the {bc} bowl",
            "move the block {r} the {rc} bowl into the {bc} bowl",
        ), ("into the {bc} bowl, put the block {r} the {rc} bowl",),
            ("the block sitting {r} the {rc} bowl goes into the {bc} bowl",)),
        "absolute": ("put-block-in-bowl-by-absolute-position", "primitive", (
            "put the block in the {p} corner into the {bc} bowl",
            "place the block lying in the {p} corner in the {bc} bowl",
            "move the block from the {p} corner into the {bc} bowl",
        ), ("into the {bc} bowl, put the block from the {p} corner",),
            ("the block found in the {p} corner goes into the {bc} bowl",)),
        "all": ("put-all-blocks-in-one-bowl", "long-horizon", (
            "put all the blocks in the {bc} bowl",
            "place every block into the {bc} bowl",
            "move both blocks into the {bc} bowl",
        ), ("into the {bc} bowl, put every block",), ("the {bc} bowl should hold all of the blocks",)),
    }
    SLOTS = ((0.0, 0.02), (0.0, -0.02))  # two small blocks side by side in one bowl, square to the axes

    def __init__(self, by: str = "color"):
        self.by = by
        if by != "color":
            self.name, self.family, self.templates, self.train_templates, self.heldout_templates = self.VARIANTS[by]
        if by in ("size", "all"):
            self.distractors = ("bowl", "zone")  # "the small blocks", "all the blocks" would take in a distractor block

    def build(self, scene):
        if self.by == "relative":
            return self._build_relative(scene)
        if self.by == "absolute":
            return self._build_absolute(scene)
        if self.by == "all":
            return self._build_all(scene)
        if self.by == "size":
            bc, dbc = scene.pick_colors(2)
            s = str(scene.rng.choice(["big", "small"]))
            block_colors = [c for c in scene.colors if c not in (bc, dbc)]
            n = int(scene.rng.integers(1, 4))
            bowls = [scene.add_bowl(bc) for _ in range(n)]
            scene.add_bowl(dbc)
            blocks = [scene.add_block(str(scene.rng.choice(block_colors)), s) for _ in range(n)]
            for _ in range(int(scene.rng.integers(1, 3))):  # blocks of the other sizes, in the same colours
                scene.add_block(str(scene.rng.choice(block_colors)), str(scene.rng.choice([z for z in SIZE_ORDER if z != s])))
            words = dict(s=s)
        else:
            c, bc, dc, dbc = scene.pick_colors(4)
            n = int(scene.rng.integers(1, 4))
            bowls = [scene.add_bowl(bc) for _ in range(n)]
            scene.add_bowl(dbc)
            blocks = [scene.add_block(c) for _ in range(n)]
            scene.add_block(dc)
            words = dict(c=c)
        goals = [InBowl(b, w) for b, w in zip(blocks, bowls)]

        def reward(objects, poses):
            return matching_fraction(objects, poses, blocks, bowls, lambda b, w: True)

        def order(objects, poses):
            # Blocks in reading order, each to the nearest bowl that holds no block yet.
            holding = {b: w for b in blocks for w in bowls if in_bowl(objects[b], poses[b], objects[w], poses[w])}
            free = [w for w in bowls if w not in holding.values()]
            goals = []
            for b in reading_order(blocks, poses):
                if b not in holding:
                    xy = poses[b].position[:2]
                    holding[b] = min(free, key=lambda w: float(np.linalg.norm(poses[w].position[:2] - xy)))
                    free.remove(holding[b])
                goals.append(InBowl(b, holding[b]))
            return goals

        text = self.say(scene, bc=bc, blocks=_plural(n, "block"), bowls=_plural(n, "bowl"), a="a " if n == 1 else "", **words)
        return Episode(text, goals, blocks + bowls, reward, order=order)

    def _build_relative(self, scene):
        """One block on a side of a reference bowl, one of its colour on the opposite side; every other
        object keeps out of the square around the bowl, so "the block left of the red bowl" is one block."""
        rc, bc, c = scene.pick_colors(3)
        side = str(scene.rng.choice(list(SIDES)))
        direction = np.array(SIDES[side])
        # A block's centre lies `gap` + `half_side` beyond the bowl's rim, so the bowl keeps that much and
        # the block's half diagonal (and a margin) inside the sampling bounds along the side's axis.
        gap, half_side = 0.015, 0.028
        beyond = gap + half_side + 0.035 + 0.005
        centre = SAMPLE_BOUNDS.mean(axis=1)
        half = (SAMPLE_BOUNDS[:, 1] - SAMPLE_BOUNDS[:, 0]) / 2 - np.abs(direction) * beyond
        ref = scene.add_bowl(rc, within=Region(tuple(centre), tuple(half)))
        xy = scene.pose(ref).position[:2]
        offset = scene.objects[ref].extent + gap + half_side
        target = scene.add_block(c, xy=xy + direction * offset)
        scene.add_block(c, xy=xy - direction * offset)
        square = Region((float(xy[0]), float(xy[1])), (offset + 0.045, offset + 0.045), f"around the {rc} bowl")
        bowl = scene.add_bowl(bc, avoid=[square])
        for _ in range(int(scene.rng.integers(0, 2))):
            scene.add_block(c, avoid=[square])
        goals = [InBowl(target, bowl)]
        text = self.say(scene, r=side, rc=rc, bc=bc)
        return Episode(text, goals, [target, bowl, ref], goal_fraction(goals), [square])

    def _build_absolute(self, scene):
        """One block in a named corner, blocks of its colour in other corners; nothing else in that corner."""
        c, bc = scene.pick_colors(2)
        names = list(AREAS)
        where = [names[i] for i in scene.rng.permutation(len(names))[:3]]
        target = scene.add_block(c, within=AREAS[where[0]])
        for name in where[1:]:
            scene.add_block(c, within=AREAS[name])
        bowl = scene.add_bowl(bc, avoid=[AREAS[where[0]]])
        goals = [InBowl(target, bowl)]
        return Episode(self.say(scene, p=where[0], bc=bc), goals, [target, bowl], goal_fraction(goals), [AREAS[where[0]]])

    def _build_all(self, scene):
        """Two small blocks into one bowl, side by side (SLOTS)."""
        bc, dbc = scene.pick_colors(2)
        bowl = scene.add_bowl(bc)
        scene.add_bowl(dbc)
        blocks = [scene.add_block(str(scene.rng.choice(scene.colors)), "small") for _ in self.SLOTS]
        goals = [InBowl(b, bowl, slot) for b, slot in zip(blocks, self.SLOTS)]

        def reward(objects, poses):
            return sum(in_bowl(objects[b], poses[b], objects[bowl], poses[bowl]) for b in blocks) / len(blocks)

        def order(objects, poses):
            # Blocks already in the bowl stay; the others, in reading order, take the slots no block holds.
            inside = [b for b in blocks if in_bowl(objects[b], poses[b], objects[bowl], poses[bowl])]
            centre = poses[bowl].position[:2]
            taken = [s for s in self.SLOTS if any(np.linalg.norm(poses[b].position[:2] - centre - s) < 0.01 for b in inside)]
            free = [s for s in self.SLOTS if s not in taken] + taken
            rest = reading_order([b for b in blocks if b not in inside], poses)
            return [InBowl(b, bowl) for b in reading_order(inside, poses)] + [InBowl(b, bowl, s) for b, s in zip(rest, free)]

        return Episode(self.say(scene, bc=bc), goals, blocks + [bowl], reward, order=order)


class PutBlockInMatchingBowl(Task):
    name, family = "put-block-in-matching-bowl", "bowl"
    templates = (
        "put each block in the bowl of the same colour",
        "place every block into the bowl that matches its colour",
        "sort the blocks into the bowls with matching colours",
    )
    train_templates = ("put every block in the bowl that has its colour",)
    heldout_templates = ("each block goes into the bowl of its own colour",)
    distractors = ("bowl", "zone")

    def build(self, scene):
        colors = scene.pick_colors(int(scene.rng.integers(2, 4)))
        bowls = [scene.add_bowl(c) for c in colors]
        blocks = [scene.add_block(c) for c in colors]
        goals = [InBowl(b, w) for b, w in zip(blocks, bowls)]

        def reward(objects, poses):
            return matching_fraction(objects, poses, blocks, bowls, lambda b, w: b.color == w.color)

        return Episode(self.say(scene), goals, blocks + bowls, reward, order=_in_reading_order(goals))


def _tower(blocks: list[int]) -> list[Goal]:
    return [OnTop(top, below) for below, top in zip(blocks, blocks[1:])]


def _in_reading_order(goals: list[Goal]) -> Callable:
    """Goals about distinct objects that may be reached in any order: in reading order of their objects."""
    def order(objects, poses):
        by_obj = {g.obj: g for g in goals}
        return [by_obj[i] for i in reading_order(list(by_obj), poses)]
    return order


class StackBlocks(Task):
    """Every block into one tower: anywhere (the paper's stacking task), `on` the {z} zone, or `on` a
    corner of the table ("area")."""

    name, family = "stack-blocks", "stacking"
    templates = (
        "stack all the blocks",
        "build one tower out of all the blocks",
        "pile all the blocks on top of each other",
    )
    train_templates = ("stack every block into a single tower",)
    heldout_templates = ("make a single stack using every block",)
    VARIANTS = {
        "zone": ("stack-blocks-on-zone", (
            "stack all the blocks on the {z} zone",
            "build one tower out of all the blocks on the {z} zone",
            "pile every block on top of each other in the {z} zone",
        ), ("on the {z} zone, stack every block into a single tower",), ("make a single stack of every block on the {z} zone",)),
        "area": ("stack-blocks-in-area", (
            "stack all the blocks in the {a} corner",
            "build one tower out of all the blocks in the {a} corner of the table",
            "pile every block on top of each other in the {a} corner",
        ), ("in the {a} corner, stack every block into a single tower",), ("make a single stack of every block in the {a} corner",)),
    }

    def __init__(self, on: str | None = None):
        self.on = on
        if on is not None:
            self.name, self.templates, self.train_templates, self.heldout_templates = self.VARIANTS[on]
            self.family = "long-horizon"

    def build(self, scene):
        if self.on is not None:
            return self._build_on(scene)
        n = int(scene.rng.integers(3, 5))
        colors = [str(c) for c in scene.rng.choice(scene.colors, size=n)]
        blocks = [scene.add_block(c) for c in colors]
        goals = _tower(blocks)

        def reward(objects, poses):
            return max(stack_score(objects, poses, blocks) - 1, 0) / (n - 1)

        def order(objects, poses):
            return _tower(canonical_tower([blocks] * n, objects, poses))

        return Episode(self.say(scene), goals, blocks, reward, order=order)

    def _build_on(self, scene):
        if self.on == "zone":
            zc = scene.pick_colors(1)[0]
            places = [scene.add_zone(zc)]
            region, words = scene.zone_region(places[0]), dict(z=zc)
        else:
            a = str(scene.rng.choice(list(AREAS)))
            places, region, words = [], AREAS[a], dict(a=a)
        n = int(scene.rng.integers(3, 5))
        blocks = [scene.add_block(str(c), avoid=[region]) for c in scene.rng.choice(scene.colors, size=n)]
        goals, reward, order = _region_stacks([blocks], [region], None, None)
        return Episode(self.say(scene, **words), goals, blocks + places, reward, [region], order)


class StackBlocksByColor(Task):
    name, family = "stack-blocks-by-color", "stacking"
    templates = (
        "stack the blocks with {c0} at the bottom, then {c1}, then {c2} on top",
        "build a tower: {c0} block first, {c1} on it, and {c2} at the top",
        "put the {c1} block on the {c0} block and the {c2} block on the {c1} block",
    )
    train_templates = ("stack {c0}, then {c1}, then {c2}, with {c0} at the bottom",)
    heldout_templates = ("from the bottom up the tower should be {c0}, {c1}, {c2}",)
    distractors = ("block", "bowl", "zone")

    def build(self, scene):
        colors = scene.pick_colors(3)
        blocks = [scene.add_block(c) for c in colors]
        goals = _tower(blocks)

        def reward(objects, poses):
            return max(stack_score(objects, poses, blocks, colors, "color") - 1, 0) / 2

        return Episode(self.say(scene, c0=colors[0], c1=colors[1], c2=colors[2]), goals, blocks, reward)


class StackBlocksBySize(Task):
    name, family = "stack-blocks-by-size", "stacking"
    templates = (
        "stack the blocks from the biggest at the bottom to the smallest on top",
        "build a tower with the largest block at the base and the smallest at the top",
        "stack the blocks in order of size, big ones below",
    )
    train_templates = ("stack the blocks by size with the biggest one at the bottom",)
    heldout_templates = ("make a tower ordered by size, smallest block on top",)

    def build(self, scene):
        colors = [str(c) for c in scene.rng.choice(scene.colors, size=3)]
        sizes = list(SIZE_ORDER)
        order = [int(i) for i in scene.rng.permutation(3)]  # creation order random, so labels do not give it away
        made = {i: scene.add_block(colors[i], sizes[i]) for i in order}
        blocks = [made[i] for i in range(3)]
        goals = _tower(blocks)

        def reward(objects, poses):
            return max(stack_score(objects, poses, blocks, sizes, "size") - 1, 0) / 2

        return Episode(self.say(scene), goals, blocks, reward)


# ---------------------------------------------------------------- long-horizon (LoHoRavens-style)


def _region_stacks(groups: list[list[int]], regions: list[Region], keys_of: Callable | None, key: str | None):
    """One tower per region (a zone or an area), its base at the centre. `keys_of` None: a group's blocks
    are interchangeable; else each group is bottom-up. Returns (goals, reward, order)."""
    goals = []
    for blocks, region in zip(groups, regions):
        goals.append(InRegion(blocks[0], region, center=True))
        goals += _tower(blocks)

    def reward(objects, poses):
        done = sum(stack_score(objects, poses, g, keys_of(g) if keys_of else None, key, r) for g, r in zip(groups, regions))
        return done / sum(len(g) for g in groups)

    def order(objects, poses):
        # Regions in reading order of their centres; in each, the tower standing on it is kept and continued.
        goals = []
        for k in sorted(range(len(regions)), key=lambda k: (-round(regions[k].center[1], 3), regions[k].center[0])):
            blocks, region = groups[k], regions[k]
            levels = [blocks] * len(blocks) if keys_of is None else [[b] for b in blocks]
            tower = canonical_tower(levels, objects, poses, base_ok=lambda b: in_region(objects[b], poses[b], region))
            goals += [InRegion(tower[0], region, center=True)] + _tower(tower)
        return goals

    return goals, reward, order


class StackSameKind(Task):
    """One tower per `key` (colour or size) of the blocks: on the zone of that colour (`on_zone`), or
    where the tower's base block lies."""

    name, family = "stack-same-color-on-zone", "long-horizon"
    templates = (
        "stack the blocks of each colour on the zone of the same colour",
        "for every colour, build a tower of its blocks on the matching zone",
        "pile up the blocks on the zones that share their colour",
    )
    VARIANTS = {
        "color": ("stack-same-color", (
            "stack the blocks of each colour into a tower of their own",
            "for every colour, build one tower out of its blocks",
            "pile up the blocks that share a colour on top of each other",
        ), ("make one stack for each block colour",), ("blocks of one colour should form one tower",)),
        "size": ("stack-same-size", (
            "stack the blocks of each size into a tower of their own",
            "for every size, build one tower out of the blocks of that size",
            "pile up the blocks that share a size on top of each other",
        ), ("make one stack for each block size",), ("blocks that are the same size should form one tower",)),
    }

    def __init__(self, key: str = "color", on_zone: bool = True):
        self.key, self.on_zone = key, on_zone
        if not on_zone:
            self.name, self.templates, self.train_templates, self.heldout_templates = self.VARIANTS[key]

    def build(self, scene):
        if self.on_zone:
            colors = scene.pick_colors(2)
            zones = [scene.add_zone(c) for c in colors]
            regions = [scene.zone_region(z) for z in zones]
            groups = [[scene.add_block(c, avoid=regions) for _ in range(2)] for c in colors]
            goals, reward, order = _region_stacks(groups, regions, None, None)
            return Episode(self.say(scene), goals, sum(groups, []) + zones, reward, regions, order)
        if self.key == "color":
            groups = [[scene.add_block(c) for _ in range(int(scene.rng.integers(2, 4)))] for c in scene.pick_colors(2)]
        else:
            sizes = scene.rng.choice(SIZE_ORDER, size=2, replace=False)
            groups = [[scene.add_block(str(scene.rng.choice(scene.colors)), str(s)) for _ in range(int(scene.rng.integers(2, 4)))]
                      for s in sizes]
        goals = sum((_tower(g) for g in groups), [])

        def reward(objects, poses):
            return sum(max(stack_score(objects, poses, g) - 1, 0) for g in groups) / sum(len(g) - 1 for g in groups)

        def order(objects, poses):
            # Each group's tower (the one standing kept), towers in reading order of their bases.
            towers = [canonical_tower([g] * len(g), objects, poses) for g in groups]
            bases = reading_order([t[0] for t in towers], poses)
            return sum((_tower(t) for t in sorted(towers, key=lambda t: bases.index(t[0]))), [])

        return Episode(self.say(scene), goals, sum(groups, []), reward, order=order)


class StackByColorAndSize(Task):
    name, family = "stack-by-color-and-size", "long-horizon"
    templates = (
        "stack the blocks of each colour on the zone of that colour, bigger blocks below smaller ones",
        "on each coloured zone build a tower of the blocks with its colour, largest at the bottom",
        "sort the blocks by colour onto the matching zones, stacking them from big to small",
    )

    def build(self, scene):
        colors = scene.pick_colors(2)
        zones = [scene.add_zone(c) for c in colors]
        regions = [scene.zone_region(z) for z in zones]
        groups = []
        for c in colors:
            sizes = sorted(scene.rng.choice(SIZE_ORDER, size=2, replace=False).tolist(), key=SIZE_ORDER.index)
            groups.append([scene.add_block(c, s, avoid=regions) for s in sizes])
        objects = scene.objects
        goals, reward, order = _region_stacks(groups, regions, lambda g: [objects[i].size for i in g], "size")
        return Episode(self.say(scene), goals, sum(groups, []) + zones, reward, regions, order)


AREAS = {
    "top left": Region((0.6, 0.25), (0.1, 0.17), "top left"),
    "top right": Region((0.6, -0.25), (0.1, 0.17), "top right"),
    "bottom left": Region((0.4, 0.25), (0.1, 0.17), "bottom left"),
    "bottom right": Region((0.4, -0.25), (0.1, 0.17), "bottom right"),
}


class MoveBlocksBetweenPositions(Task):
    """The blocks of one corner that match a size, a colour or both (`by`) into another corner; blocks
    in that corner that do not match, and matching ones in a third corner, stay."""

    name, family = "move-blocks-between-positions-by-size", "long-horizon"
    templates = (
        "move all the {s} blocks in the {a} area to the {b} area",
        "take the {s} blocks from the {a} of the table to the {b}",
        "relocate every {s} block from the {a} corner to the {b} corner",
    )
    distractors = ("block", "zone")  # distractor blocks keep out of both corners
    VARIANTS = {
        "color": ("move-blocks-between-positions-by-color", (
            "move all the {c} blocks in the {a} area to the {b} area",
            "take the {c} blocks from the {a} of the table to the {b}",
            "relocate every {c} block from the {a} corner to the {b} corner",
        ), ("shift each {c} block in the {a} area over to the {b} area",),
            ("the {c} blocks of the {a} corner belong in the {b} corner",)),
        "size-color": ("move-blocks-between-positions-by-size-and-color", (
            "move all the {s} {c} blocks in the {a} area to the {b} area",
            "take the {s} {c} blocks from the {a} of the table to the {b}",
            "relocate every {s} {c} block from the {a} corner to the {b} corner",
        ), ("shift each {s} {c} block in the {a} area over to the {b} area",),
            ("the {s} {c} blocks of the {a} corner belong in the {b} corner",)),
    }

    def __init__(self, by: str = "size"):
        self.by = by
        if by != "size":
            self.name, self.templates, self.train_templates, self.heldout_templates = self.VARIANTS[by]

    def build(self, scene):
        names = list(AREAS)
        a, b = (names[i] for i in scene.rng.choice(len(names), size=2, replace=False))
        src, dst = AREAS[a], AREAS[b]
        size, other = scene.rng.choice(["big", "small"], size=2, replace=False)
        size, other = str(size), str(other)
        colors = scene.pick_colors(4)
        rest = [n for n in names if n not in (a, b)]
        third = AREAS[rest[int(scene.rng.integers(2))]]
        c = colors[0]
        if self.by == "size":  # two of the size in the corner, one of the other size; one of the size elsewhere
            targets = [scene.add_block(colors[i], size, within=src) for i in range(2)]
            scene.add_block(colors[2], other, within=src)
            scene.add_block(colors[3], size, within=third)
        elif self.by == "color":
            targets = [scene.add_block(c, str(scene.rng.choice(SIZE_ORDER)), within=src) for _ in range(2)]
            scene.add_block(colors[1], str(scene.rng.choice(SIZE_ORDER)), within=src)
            scene.add_block(c, str(scene.rng.choice(SIZE_ORDER)), within=third)
        else:  # the size and colour asked; one of each alone in the corner; both elsewhere
            targets = [scene.add_block(c, size, within=src) for _ in range(2)]
            scene.add_block(c, other, within=src)
            scene.add_block(colors[1], size, within=src)
            scene.add_block(c, size, within=third)
        goals = [InRegion(t, dst) for t in targets]
        return Episode(self.say(scene, s=size, c=c, a=a, b=b), goals, targets, goal_fraction(goals), [src, dst],
                       _in_reading_order(goals))


class PutBlockInMismatchingBowl(Task):
    name, family = "put-block-in-mismatching-bowl", "long-horizon"
    templates = (
        "put each block in a bowl of a different colour",
        "place every block into a bowl whose colour does not match it",
        "put the blocks in the bowls so that no block shares its bowl's colour",
    )
    distractors = ("zone",)

    def build(self, scene):
        colors = scene.pick_colors(3)
        bowls = [scene.add_bowl(c) for c in colors]
        blocks = [scene.add_block(c) for c in colors]
        shift = int(scene.rng.integers(1, 3))  # a cyclic shift is a derangement
        goals = [InBowl(blocks[i], bowls[(i + shift) % 3]) for i in range(3)]

        def reward(objects, poses):
            return matching_fraction(objects, poses, blocks, bowls, lambda b, w: b.color != w.color)

        def order(objects, poses):
            # Of the two derangements (cyclic shifts), the one that keeps most blocks already in an
            # allowed bowl, then the one with the shorter total carry; blocks in reading order.
            def cost(k):
                pairs = [(blocks[i], bowls[(i + k) % 3]) for i in range(3)]
                kept = sum(in_bowl(objects[b], poses[b], objects[w], poses[w]) for b, w in pairs)
                carry = sum(float(np.linalg.norm(poses[b].position[:2] - poses[w].position[:2])) for b, w in pairs)
                return -kept, round(carry, 3), k
            k = min((1, 2), key=cost)
            bowl_of = {blocks[i]: bowls[(i + k) % 3] for i in range(3)}
            return [InBowl(b, bowl_of[b]) for b in reading_order(blocks, poses)]

        return Episode(self.say(scene), goals, blocks + bowls, reward, order=order)


class PutHiddenBlockInMatchingBowl(Task):
    """Blocks hidden by blocks resting on them into the bowls of their colour. `cover`: one big block
    on each ("block"), towers of two or three layers ("tower"), or a pyramid standing on two ("pyramid")."""

    name, family = "put-hidden-block-in-matching-bowl", "long-horizon"
    templates = (
        "put the blocks hidden under other blocks into the bowls of the same colour",
        "find the covered blocks and place each in the bowl that matches its colour",
        "move each block that is underneath another block into the bowl of its colour",
    )
    distractors = ("block", "bowl", "zone")
    VARIANTS = {
        "tower": ("put-block-under-tower-in-matching-bowl", (
            "put the block at the bottom of each tower into the bowl of the same colour",
            "find the block under every tower and place it in the bowl that matches its colour",
            "move the lowest block of each tower into the bowl of its colour",
        ), ("put each block hidden under a tower in the bowl of its colour",),
            ("the blocks buried under the towers go into the bowls that match them",)),
        "pyramid": ("put-block-under-pyramid-in-matching-bowl", (
            "put the blocks under the pyramid into the bowls of the same colour",
            "find the blocks the pyramid stands on and place each in the bowl that matches its colour",
            "move the bottom blocks of the pyramid into the bowls of their colour",
        ), ("put each block under the pyramid in the bowl of its colour",),
            ("the blocks the pyramid rests on belong in the bowls of their colour",)),
    }

    def __init__(self, cover: str = "block"):
        self.cover = cover
        if cover != "block":
            self.name, self.templates, self.train_templates, self.heldout_templates = self.VARIANTS[cover]

    def build(self, scene):
        if self.cover == "pyramid":
            return self._build_pyramid(scene)
        hidden_colors = scene.pick_colors(4)
        bowls = [scene.add_bowl(c) for c in hidden_colors[:2]]
        hidden = []
        for i in range(2):
            block = scene.add_block(hidden_colors[i], "small")
            xy = scene.pose(block).position[:2]
            # A big block of another colour resting on it hides it from above; a tower, a medium one on that.
            bottom = scene.objects[block].height + 0.001
            cover = scene.add_block(hidden_colors[2 + i], "big", xy=xy, bottom=bottom)
            if self.cover == "tower" and scene.rng.random() < 0.5:
                scene.add_block(hidden_colors[2 + i], "medium", xy=xy, bottom=bottom + scene.objects[cover].height + 0.001)
            hidden.append(block)
        goals = [InBowl(b, w) for b, w in zip(hidden, bowls)]
        return Episode(self.say(scene), goals, hidden + bowls, goal_fraction(goals), order=_in_reading_order(goals))

    def _build_pyramid(self, scene):
        """Two medium blocks side by side, square to each other, and a big one bridging them."""
        colors = scene.pick_colors(3)
        bowls = [scene.add_bowl(c) for c in colors[:2]]
        scale = 1.0 if scene.look is None else scene.look.block_scale
        half = BLOCK_SIZES["medium"] * scale * 1.05 / 2 + 0.003  # centre to centre / 2, off-cube blocks included
        yaw = float(scene.rng.uniform(-math.pi / 4, math.pi / 4))
        across = np.array([math.cos(yaw), math.sin(yaw)])
        xy = scene.free_xy(2 * half + 0.02)
        hidden = [scene.add_block(c, "medium", xy=xy + sign * half * across, yaw=yaw) for c, sign in zip(colors[:2], (1, -1))]
        bottom = max(scene.objects[h].height for h in hidden) + 0.001
        scene.add_block(colors[2], "big", xy=xy, bottom=bottom, yaw=yaw)
        goals = [InBowl(b, w) for b, w in zip(hidden, bowls)]
        return Episode(self.say(scene), goals, hidden + bowls, goal_fraction(goals), order=_in_reading_order(goals))


class StackAlternatingColors(Task):
    name, family = "stack-alternating-colors", "long-horizon"
    templates = (
        "stack the blocks alternating colours, with a {c0} block at the bottom",
        "build a tower where {c0} and {c1} blocks alternate, starting with {c0}",
        "stack all blocks so that the colours alternate, {c0} first",
    )

    def build(self, scene):
        c0, c1 = scene.pick_colors(2)
        first = [scene.add_block(c0), scene.add_block(c1)]
        second = [scene.add_block(c0), scene.add_block(c1)]
        blocks = [first[0], first[1], second[0], second[1]]
        keys = [c0, c1, c0, c1]
        goals = _tower(blocks)

        def reward(objects, poses):
            return max(stack_score(objects, poses, blocks, keys, "color") - 1, 0) / 3

        c0s, c1s = [first[0], second[0]], [first[1], second[1]]

        def order(objects, poses):
            return _tower(canonical_tower([c0s, c1s, c0s, c1s], objects, poses))

        return Episode(self.say(scene, c0=c0, c1=c1), goals, blocks, reward, order=order)


class StackSmallerOverBigger(Task):
    name, family = "stack-smaller-over-bigger-same-color", "long-horizon"
    templates = (
        "put each small block on the big block of the same colour",
        "for every colour, stack the smaller block on top of the bigger one",
        "place the little blocks onto the large blocks that match their colour",
    )

    def build(self, scene):
        colors = scene.pick_colors(int(scene.rng.integers(2, 4)))
        pairs = [[scene.add_block(c, "big"), scene.add_block(c, "small")] for c in colors]
        goals = [OnTop(small, big) for big, small in pairs]
        return Episode(self.say(scene), goals, sum(pairs, []), goal_fraction(goals), order=_in_reading_order(goals))


class PutEvenBlocksInZone(Task):
    """The blocks of every colour that appears an even number of times into the {z} zone, or, `matching`,
    each into the zone of its own colour, beside a zone of an odd colour."""

    name, family = "put-even-blocks-in-zone", "long-horizon"
    templates = (
        "put the blocks of every colour that appears an even number of times into the {z} zone",
        "move the blocks whose colour occurs an even number of times to the {z} zone",
        "count the blocks of each colour and place those with an even count in the {z} zone",
    )

    def __init__(self, matching: bool = False):
        self.matching = matching
        if matching:
            self.name = "put-even-blocks-in-matching-zone"
            self.templates = (
                "put the blocks of every colour that appears an even number of times into the zone of that colour",
                "move the blocks whose colour occurs an even number of times to the zones of their colour",
                "count the blocks of each colour and place those with an even count in the matching zones",
            )
            self.train_templates = ("every colour with an even number of blocks: put its blocks on the zone of that colour",)
            self.heldout_templates = ("blocks whose colour shows up an even number of times belong in the zone of their colour",)

    def build(self, scene):
        zc, even, odd, single, even2 = scene.pick_colors(5)
        zones = [] if self.matching else [scene.add_zone(zc)]
        counts = {even: 2, odd: int(scene.rng.choice([1, 3])), single: 1}
        if counts[odd] == 1 and scene.rng.random() < 0.5:
            counts[even2] = 2  # sometimes two even colours: four blocks go to the zone
        zone_colors = [c for c in counts if c != single] if self.matching else [zc]
        if self.matching:  # a zone for each even colour and for the odd one (a zone no block goes to)
            zones = [scene.add_zone(c) for c in zone_colors]
        regions = [scene.zone_region(z) for z in zones]
        region_of = dict(zip(zone_colors, regions))
        goals = []
        for color, n in counts.items():
            made = [scene.add_block(color, avoid=regions) for _ in range(n)]
            if n % 2 == 0:
                goals += [InRegion(t, region_of.get(color, regions[0])) for t in made]
        targets = [g.obj for g in goals]
        return Episode(self.say(scene, z=zc), goals, targets + zones, goal_fraction(goals), regions,
                       _in_reading_order(goals))


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        PutBlockInZone(), PutBlockInBowl(), PutBlockInMatchingBowl(),
        StackBlocks(), StackBlocksByColor(), StackBlocksBySize(),
        StackSameKind(), StackByColorAndSize(), MoveBlocksBetweenPositions(),
        PutBlockInMismatchingBowl(), PutHiddenBlockInMatchingBowl(), StackAlternatingColors(),
        StackSmallerOverBigger(), PutEvenBlocksInZone(),
        # LoHoRavens' primitives and long-horizon tasks this tabletop lacked, as variants of the above
        PutBlockInBowl(by="size"), PutBlockInBowl(by="relative"), PutBlockInBowl(by="absolute"),
        PutBlockInBowl(by="all"), PutBlockInZone(every=True),
        StackBlocks(on="zone"), StackBlocks(on="area"),
        StackSameKind("color", on_zone=False), StackSameKind("size", on_zone=False),
        PutHiddenBlockInMatchingBowl(cover="tower"), PutHiddenBlockInMatchingBowl(cover="pyramid"),
        MoveBlocksBetweenPositions(by="color"), MoveBlocksBetweenPositions(by="size-color"),
        PutEvenBlocksInZone(matching=True),
    )
}

# LoHoRavens' unseen tasks: each composes what training tasks teach, and none is ever collected.
HELDOUT_TASKS = (
    "put-block-in-bowl-by-absolute-position",  # corners (move-blocks-*) + a block into a bowl (primitives)
    "stack-blocks-in-area",  # stacking on a zone + corners
    "stack-same-size",  # towers per colour + sizes
    "put-block-under-pyramid-in-matching-bowl",  # hidden blocks under towers + a pyramid's shape
    "move-blocks-between-positions-by-size-and-color",  # by size + by colour
    "put-even-blocks-in-matching-zone",  # even counts + zones of matching colour
)
for _name in HELDOUT_TASKS:
    TASKS[_name].heldout = True
TRAINING_TASKS = tuple(n for n in TASKS if n not in HELDOUT_TASKS)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def tasks_in_family(family: str) -> list[str]:
    return [n for n, t in TASKS.items() if t.family == family]


def resolve_tasks(names: list[str], heldout: bool = True) -> list[str]:
    """Task names, family names, 'training-tasks', 'heldout-tasks' or 'all' → task names in order, without
    repeats; ValueError naming an unknown one. `heldout` False (collection for training): 'all' and the
    families mean their training tasks, and naming a held-out task is a ValueError."""
    tasks: list[str] = []
    for name in names:
        if name == "all":
            tasks += list(TASKS)
        elif name == "training-tasks":
            tasks += list(TRAINING_TASKS)
        elif name == "heldout-tasks":
            tasks += list(HELDOUT_TASKS)
        elif name in FAMILIES:
            tasks += tasks_in_family(name)
        elif name in TASKS:
            tasks.append(name)
        else:
            raise ValueError(f"unknown task or family '{name}'; tasks: {', '.join(TASKS)}; families: {', '.join(FAMILIES)}; "
                             f"splits: {', '.join(SPLITS)}")
        if not heldout and name in HELDOUT_TASKS + ("heldout-tasks",):
            raise ValueError(f"'{name}' is held out from training (HELDOUT_TASKS); it is never collected. "
                             f"Evaluate it with threedmoe-eval-closed-loop --tasks heldout-tasks")
    return [t for t in dict.fromkeys(tasks) if heldout or t not in HELDOUT_TASKS]
