"""Training samples from a directory of episode bags (written by train.collect or the recorder node).

    ds = EpisodeDataset("data_out/demos", tasks=["stack-blocks"], splits=["train"])
    len(ds); sample = ds[0]                       # random access (reads one bag)
    for sample in ds: ...                         # sequential: each bag is read once

A sample is one observation of an episode: the cloud, the instruction, the oracle's remaining plan
from that observation (T, 2, 7; T = 0 after the last step) and how the episode ended. No torch
here: the Pose-DiT trainer wraps this sequence in its own DataLoader.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from threedmoe_ros.types import Cloud, EpisodeOutcome


@dataclass
class Sample:
    cloud: Cloud
    instruction: str
    plan: np.ndarray
    """(T, 2, 7) remaining plan from this observation, world frame, ROS quaternion order."""
    result: EpisodeOutcome
    episode: Path
    step: int
    """Index of the observation in its episode (0 = after reset)."""


def find_episodes(root: str | Path, tasks: list[str] | None = None, splits: list[str] | None = None) -> list[Path]:
    """Bag directories under root (root/<task>/<split>/<seed>, or any depth), sorted for a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist; collect episodes with "
                                f"threedmoe-collect --out {root} ...")
    found = []
    for meta in sorted(root.rglob("metadata.yaml")):
        bag = meta.parent
        parts = bag.relative_to(root).parts
        if tasks and not set(tasks) & set(parts):
            continue
        if splits and not set(splits) & set(parts):
            continue
        found.append(bag)
    return found


def read_episode(bag: Path) -> list[Sample]:
    """Every sample of one episode bag, in time order. Clouds pair with plans by stamp."""
    from threedmoe_ros.data import bags, pointcloud2

    clouds, plans, result, instruction = {}, {}, None, ""
    for topic, _, msg in bags.read_messages(bag, ["/points", "/pick_place_plan", "/episode_result", "/instruction"]):
        if topic == "/points":
            clouds[bags.stamp_ns(msg.header)] = pointcloud2.decode(msg)
        elif topic == "/pick_place_plan":
            plans[bags.stamp_ns(msg.header)] = bags.plan_from_msg(msg)
        elif topic == "/episode_result":
            result = bags.outcome_from_msg(msg)
        else:
            instruction = msg.data
    if result is None:
        raise ValueError(f"episode {bag} has no /episode_result; it was cut before the end")
    samples = []
    for step, stamp in enumerate(sorted(set(clouds) & set(plans))):
        samples.append(Sample(clouds[stamp], instruction or result.instruction, plans[stamp], result, bag, step))
    return samples


@lru_cache(maxsize=4096)
def _summary(bag: Path) -> tuple[int, bool]:
    """(number of observations, success) of an episode, read from the bag's index and last message."""
    from rosbags.rosbag2 import Reader

    from threedmoe_ros.data import bags

    with Reader(bag) as reader:
        count = sum(c.msgcount for c in reader.connections if c.topic == "/points")
    success = False
    for _, _, msg in bags.read_messages(bag, ["/episode_result"]):
        success = bool(msg.success)
    return count, success


class EpisodeDataset(Sequence):
    """Samples of every episode bag under `root`, as a sequence (random access) and an iterable.

    only_success keeps episodes whose oracle succeeded (a failed demonstration teaches the wrong plan).
    """

    def __init__(self, root: str | Path, tasks: list[str] | None = None, splits: list[str] | None = None,
                 only_success: bool = True):
        self.root = Path(root)
        episodes = find_episodes(root, tasks, splits)
        self.episodes: list[Path] = []
        self._index: list[tuple[int, int]] = []
        for bag in episodes:
            count, success = _summary(bag)
            if only_success and not success:
                continue
            e = len(self.episodes)
            self.episodes.append(bag)
            self._index += [(e, k) for k in range(count)]
        self._cached: tuple[int, list[Sample]] | None = None

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        e, k = self._index[i]
        # Neighbouring indices share a bag; keep the last one decoded.
        if self._cached is None or self._cached[0] != e:
            self._cached = (e, read_episode(self.episodes[e]))
        return self._cached[1][k]

    def __iter__(self) -> Iterator[Sample]:
        for bag in self.episodes:
            yield from read_episode(bag)


def thin_cloud(cloud: Cloud, max_points: int, rng: np.random.Generator) -> Cloud:
    """At most max_points points, keeping every object point (label > 0) and thinning the table:
    objects carry what a policy needs, and the table is most of a fused cloud."""
    if len(cloud) <= max_points:
        return cloud
    if cloud.label is None:
        return cloud.subset(np.sort(rng.choice(len(cloud), max_points, replace=False)))
    objects = np.flatnonzero(cloud.label > 0)
    table = np.flatnonzero(cloud.label <= 0)
    keep = max(0, max_points - len(objects))
    table = rng.choice(table, min(keep, len(table)), replace=False)
    return cloud.subset(np.sort(np.concatenate([objects, table])))


class InMemoryDataset(Sequence):
    """Every sample of a dataset, decoded once and held in memory with thinned clouds.

    Training visits samples in random order; reading one bag per sample from disk made that
    I/O-bound. A fused cloud of ~30k points thinned to 4096 keeps ~60 MB per 1000 samples.
    """

    def __init__(self, source: Iterable[Sample], max_points: int = 4096, seed: int = 0, progress: bool = True):
        rng = np.random.default_rng(seed)
        items = source
        if progress:
            from tqdm import tqdm

            items = tqdm(source, desc="loading samples", unit="sample", total=len(source) if hasattr(source, "__len__") else None)
        self.samples = [Sample(thin_cloud(s.cloud, max_points, rng), s.instruction, s.plan, s.result, s.episode, s.step)
                        for s in items]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]
