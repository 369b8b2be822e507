"""Episode seeds by split: the one numbering collection, training's validation and evaluation share.

Episode i of a split uses seed SPLIT_SEEDS[split] + i (train 0.., val 1 000 000.., test 2 000 000..),
so splits never share a scene as long as a split has fewer than SPLIT_SIZE episodes.
"""

from __future__ import annotations

SPLIT_SEEDS = {"train": 0, "val": 1_000_000, "test": 2_000_000}
SPLIT_SIZE = 1_000_000


def seed_for(split: str, index: int) -> int:
    """The seed of episode `index` of `split`; ValueError outside [0, SPLIT_SIZE) or for an unknown split."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split {split!r} is not one of {sorted(SPLIT_SEEDS)}")
    if not 0 <= index < SPLIT_SIZE:
        raise ValueError(f"episode index {index} is outside [0, {SPLIT_SIZE}) for split {split}")
    return SPLIT_SEEDS[split] + index
