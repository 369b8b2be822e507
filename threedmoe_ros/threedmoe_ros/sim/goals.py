"""Goals: one object's desired relation to the world. A task's episode is an ordered list of them;
the success check asks whether each holds, and the oracle makes them hold in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

from threedmoe_ros.sim.assets import Object
from threedmoe_ros.sim.scene import Pose2, Region, in_bowl, in_region, on_top


@dataclass
class InRegion:
    """Block `obj` lies with ≥ 80 % of its footprint inside `region` (a zone or a named area)."""

    obj: int
    region: Region
    center: bool = False
    """Where the oracle puts it: the region's centre (the base of a tower) or any free slot."""

    def holds(self, objects: list[Object], poses: list[Pose2]) -> bool:
        return in_region(objects[self.obj], poses[self.obj], self.region)


@dataclass
class InBowl:
    """Block `obj` sits in bowl `bowl`."""

    obj: int
    bowl: int
    slot: tuple[float, float] | None = None
    """Where the oracle puts it: (dx, dy) from the bowl's centre, square to the axes, where blocks
    share a bowl; None: the centre."""

    def holds(self, objects: list[Object], poses: list[Pose2]) -> bool:
        return in_bowl(objects[self.obj], poses[self.obj], objects[self.bowl], poses[self.bowl])


@dataclass
class OnTop:
    """Block `obj` is stacked squarely on block `below`."""

    obj: int
    below: int

    def holds(self, objects: list[Object], poses: list[Pose2]) -> bool:
        return on_top(objects[self.obj], poses[self.obj], objects[self.below], poses[self.below])


Goal = InRegion | InBowl | OnTop
