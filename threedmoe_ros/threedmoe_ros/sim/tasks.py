"""Tasks of the tabletop: a scene sampler, instruction templates (with paraphrases), goals the oracle
satisfies in order, a success check and a step limit — one class each, listed in TASKS.

Families: the paper's three (zone, bowl, stacking) and LoHoRavens-style long-horizon tasks.
Words for places on the table, as a person standing at the far side looking at the robot would
not say them, so we fix them from the top-down image: "top" is far from the robot (+x), "left"
is +y.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from threedmoe_ros.sim.assets import Object
from threedmoe_ros.sim.goals import Goal, InBowl, InRegion, OnTop
from threedmoe_ros.sim.scene import Pose2, Region, Scene, in_bowl, in_region, on_top

FAMILIES = ("zone", "bowl", "stacking", "long-horizon")
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

    def build(self, scene):
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


class PutBlockInBowl(Task):
    name, family = "put-block-in-bowl", "bowl"
    templates = (
        "put the {c} {blocks} in {a}{bc} {bowls}",
        "place each {c} block into a {bc} bowl",
        "move the {c} {blocks} into {a}{bc} {bowls}",
    )
    train_templates = ("into {a}{bc} {bowls}, put the {c} {blocks}",)
    heldout_templates = ("the {c} {blocks} should end up in {a}{bc} {bowls}",)
    distractors = ("block", "bowl", "zone")

    def build(self, scene):
        c, bc, dc, dbc = scene.pick_colors(4)
        n = int(scene.rng.integers(1, 4))
        bowls = [scene.add_bowl(bc) for _ in range(n)]
        scene.add_bowl(dbc)
        blocks = [scene.add_block(c) for _ in range(n)]
        scene.add_block(dc)
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

        text = self.say(scene, c=c, bc=bc, blocks=_plural(n, "block"), bowls=_plural(n, "bowl"), a="a " if n == 1 else "")
        return Episode(text, goals, blocks + bowls, reward, order=order)


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
    name, family = "stack-blocks", "stacking"
    templates = (
        "stack all the blocks",
        "build one tower out of all the blocks",
        "pile all the blocks on top of each other",
    )
    train_templates = ("stack every block into a single tower",)
    heldout_templates = ("make a single stack using every block",)

    def build(self, scene):
        n = int(scene.rng.integers(3, 5))
        colors = [str(c) for c in scene.rng.choice(scene.colors, size=n)]
        blocks = [scene.add_block(c) for c in colors]
        goals = _tower(blocks)

        def reward(objects, poses):
            return max(stack_score(objects, poses, blocks) - 1, 0) / (n - 1)

        def order(objects, poses):
            return _tower(canonical_tower([blocks] * n, objects, poses))

        return Episode(self.say(scene), goals, blocks, reward, order=order)


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


def _zone_stacks(scene: Scene, groups: list[list[int]], zones: list[int], keys_of: Callable | None, key: str | None):
    """One tower per zone. `keys_of` None: a group's blocks are interchangeable; else each group is bottom-up."""
    regions = [scene.zone_region(z) for z in zones]
    goals = []
    for blocks, region in zip(groups, regions):
        goals.append(InRegion(blocks[0], region, center=True))
        goals += _tower(blocks)

    def reward(objects, poses):
        done = sum(stack_score(objects, poses, g, keys_of(g) if keys_of else None, key, r) for g, r in zip(groups, regions))
        return done / sum(len(g) for g in groups)

    def order(objects, poses):
        # Zones in reading order; in each, the tower standing on it is kept and continued.
        goals = []
        for z in reading_order(zones, poses):
            blocks, region = groups[zones.index(z)], regions[zones.index(z)]
            levels = [blocks] * len(blocks) if keys_of is None else [[b] for b in blocks]
            tower = canonical_tower(levels, objects, poses, base_ok=lambda b: in_region(objects[b], poses[b], region))
            goals += [InRegion(tower[0], region, center=True)] + _tower(tower)
        return goals

    return goals, reward, regions, order


class StackSameColorOnZone(Task):
    name, family = "stack-same-color-on-zone", "long-horizon"
    templates = (
        "stack the blocks of each colour on the zone of the same colour",
        "for every colour, build a tower of its blocks on the matching zone",
        "pile up the blocks on the zones that share their colour",
    )

    def build(self, scene):
        colors = scene.pick_colors(2)
        zones = [scene.add_zone(c) for c in colors]
        regions = [scene.zone_region(z) for z in zones]
        groups = [[scene.add_block(c, avoid=regions) for _ in range(2)] for c in colors]
        goals, reward, regions, order = _zone_stacks(scene, groups, zones, None, None)
        return Episode(self.say(scene), goals, sum(groups, []) + zones, reward, regions, order)


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
        goals, reward, regions, order = _zone_stacks(scene, groups, zones, lambda g: [objects[i].size for i in g], "size")
        return Episode(self.say(scene), goals, sum(groups, []) + zones, reward, regions, order)


AREAS = {
    "top left": Region((0.6, 0.25), (0.1, 0.17), "top left"),
    "top right": Region((0.6, -0.25), (0.1, 0.17), "top right"),
    "bottom left": Region((0.4, 0.25), (0.1, 0.17), "bottom left"),
    "bottom right": Region((0.4, -0.25), (0.1, 0.17), "bottom right"),
}


class MoveBlocksBetweenPositionsBySize(Task):
    name, family = "move-blocks-between-positions-by-size", "long-horizon"
    templates = (
        "move all the {s} blocks in the {a} area to the {b} area",
        "take the {s} blocks from the {a} of the table to the {b}",
        "relocate every {s} block from the {a} corner to the {b} corner",
    )
    distractors = ("zone",)

    def build(self, scene):
        names = list(AREAS)
        a, b = (names[i] for i in scene.rng.choice(len(names), size=2, replace=False))
        src, dst = AREAS[a], AREAS[b]
        size, other = scene.rng.choice(["big", "small"], size=2, replace=False)
        colors = scene.pick_colors(4)
        targets = [scene.add_block(colors[i], str(size), within=src) for i in range(2)]
        scene.add_block(colors[2], str(other), within=src)
        rest = [n for n in names if n not in (a, b)]
        scene.add_block(colors[3], str(size), within=AREAS[rest[int(scene.rng.integers(2))]])
        goals = [InRegion(t, dst) for t in targets]
        return Episode(self.say(scene, s=size, a=a, b=b), goals, targets, goal_fraction(goals), [src, dst],
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
    name, family = "put-hidden-block-in-matching-bowl", "long-horizon"
    templates = (
        "put the blocks hidden under other blocks into the bowls of the same colour",
        "find the covered blocks and place each in the bowl that matches its colour",
        "move each block that is underneath another block into the bowl of its colour",
    )
    distractors = ("block", "bowl", "zone")

    def build(self, scene):
        hidden_colors = scene.pick_colors(4)
        bowls = [scene.add_bowl(c) for c in hidden_colors[:2]]
        hidden = []
        for i in range(2):
            block = scene.add_block(hidden_colors[i], "small")
            xy = scene.pose(block).position[:2]
            # A big block of another colour resting on it hides it from above.
            scene.add_block(hidden_colors[2 + i], "big", xy=xy, bottom=scene.objects[block].height + 0.001)
            hidden.append(block)
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
    name, family = "put-even-blocks-in-zone", "long-horizon"
    templates = (
        "put the blocks of every colour that appears an even number of times into the {z} zone",
        "move the blocks whose colour occurs an even number of times to the {z} zone",
        "count the blocks of each colour and place those with an even count in the {z} zone",
    )

    def build(self, scene):
        zc, even, odd, single, even2 = scene.pick_colors(5)
        zone = scene.add_zone(zc)
        region = scene.zone_region(zone)
        counts = {even: 2, odd: int(scene.rng.choice([1, 3])), single: 1}
        if counts[odd] == 1 and scene.rng.random() < 0.5:
            counts[even2] = 2  # sometimes two even colours: four blocks go to the zone
        targets = []
        for color, n in counts.items():
            made = [scene.add_block(color, avoid=[region]) for _ in range(n)]
            if n % 2 == 0:
                targets += made
        goals = [InRegion(t, region) for t in targets]
        return Episode(self.say(scene, z=zc), goals, targets + [zone], goal_fraction(goals), [region],
                       _in_reading_order(goals))


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        PutBlockInZone(), PutBlockInBowl(), PutBlockInMatchingBowl(),
        StackBlocks(), StackBlocksByColor(), StackBlocksBySize(),
        StackSameColorOnZone(), StackByColorAndSize(), MoveBlocksBetweenPositionsBySize(),
        PutBlockInMismatchingBowl(), PutHiddenBlockInMatchingBowl(), StackAlternatingColors(),
        StackSmallerOverBigger(), PutEvenBlocksInZone(),
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def tasks_in_family(family: str) -> list[str]:
    return [n for n, t in TASKS.items() if t.family == family]


def resolve_tasks(names: list[str]) -> list[str]:
    """Task names, family names or 'all' → task names in order, without repeats; ValueError naming an unknown one."""
    tasks: list[str] = []
    for name in names:
        if name == "all":
            tasks += list(TASKS)
        elif name in FAMILIES:
            tasks += tasks_in_family(name)
        elif name in TASKS:
            tasks.append(name)
        else:
            raise ValueError(f"unknown task or family '{name}'; tasks: {', '.join(TASKS)}; families: {', '.join(FAMILIES)}")
    return list(dict.fromkeys(tasks))
