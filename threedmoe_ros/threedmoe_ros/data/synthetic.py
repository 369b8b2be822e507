"""Generated tabletop scenes without the simulator, for tests, benches and smoke runs of the Pose-DiT trainer.

Items are (cloud, instruction, plan (T, 2, 7)), the same face as data.dataset.Sample.
"""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Dataset

from threedmoe_ros.types import Cloud
from threedmoe_ros.workspace import WORKSPACE

COLORS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
    "purple": (140, 50, 170), "orange": (240, 140, 30), "pink": (240, 130, 180), "cyan": (40, 200, 210),
}
PARAPHRASES = ["put the {b} in the {z} zone", "place the {b} into the {z} zone", "move the {b} to the {z} zone"]


class SyntheticPickPlace(Dataset):
    """Generated tabletop scenes for tests and smoke runs: coloured blocks and zones on a table.

    "put the red and blue blocks in the green zone" → one step per named block, in the order
    named: pick at the block's top (its yaw modulo 90°), place at a slot of the zone. The labelled
    cloud has table points (label 0), each block's points and each zone's (flat) points.
    """

    BLOCK = 0.04  # m, cube side
    ZONE = 0.12  # m, zone side

    def __init__(self, size: int, seed: int = 0, max_blocks: int = 3, points_per_object: int = 64):
        self.size, self.seed, self.max_blocks, self.points = size, seed, max_blocks, points_per_object

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Cloud, str, np.ndarray]:
        if not 0 <= index < self.size:
            raise IndexError(f"sample {index} of a {self.size}-sample set")  # also ends `for … in dataset`
        rng = np.random.default_rng([self.seed, index])
        names = list(COLORS)
        n_blocks = int(rng.integers(1, self.max_blocks + 1))
        colours = rng.choice(names, n_blocks + 2, replace=False)
        blocks, zones = colours[:n_blocks], colours[n_blocks:]
        # Cells of a 4 × 6 grid over the workspace keep objects apart.
        cells = rng.choice(24, n_blocks + 2, replace=False)
        xy = np.stack([0.33 + 0.12 * (cells // 6), -0.4 + 0.16 * (cells % 6)], 1) + rng.uniform(-0.02, 0.02, (len(cells), 2))
        yaw = rng.uniform(-math.pi, math.pi, n_blocks)
        xyz, rgb, label = [rng.uniform(WORKSPACE[:, 0] * [1, 1, 0], WORKSPACE[:, 1] * [1, 1, 0], (400, 3))], [np.full((400, 3), 120)], [np.zeros(400)]
        for i, name in enumerate(colours):
            is_block = i < n_blocks
            side, height = (self.BLOCK, self.BLOCK) if is_block else (self.ZONE, 0.002)
            local = rng.uniform(-side / 2, side / 2, (self.points, 2))
            c, s = (math.cos(yaw[i]), math.sin(yaw[i])) if is_block else (1.0, 0.0)
            pts = np.c_[xy[i] + local @ np.array([[c, s], [-s, c]]), rng.uniform(0, height, self.points)]
            xyz.append(pts)
            rgb.append(np.clip(np.array(COLORS[name]) + rng.normal(0, 8, (self.points, 3)), 0, 255))
            label.append(np.full(self.points, i + 1))
        moved = list(range(int(rng.integers(1, n_blocks + 1))))
        zone = n_blocks + int(rng.integers(0, 2))
        what = " and ".join(blocks[moved]) + (" blocks" if len(moved) > 1 else " block")
        instruction = PARAPHRASES[int(rng.integers(len(PARAPHRASES)))].format(b=what, z=colours[zone])
        plan = []
        for slot, i in enumerate(moved):
            pick_yaw = (yaw[i] + math.pi / 4) % (math.pi / 2) - math.pi / 4
            pick = [*xy[i], self.BLOCK, 0.0, 0.0, math.sin(pick_yaw / 2), math.cos(pick_yaw / 2)]
            place = [xy[zone][0], xy[zone][1] + 0.04 * (slot - 1), self.BLOCK, 0.0, 0.0, 0.0, 1.0]
            plan.append([pick, place])
        cloud = Cloud(np.concatenate(xyz), np.concatenate(rgb), np.concatenate(label))
        return cloud, instruction, np.asarray(plan)
