"""The PyBullet tabletop in the style of LoHoRavens (numpy + pybullet only: no torch, no rclpy).

    from threedmoe_ros.sim import EnvConfig, TabletopEnv, TASKS
    env = TabletopEnv(EnvConfig(task="stack-blocks", unseen_colors=False))
    obs, info = env.reset(seed=0)          # obs: {"cloud": Cloud, "instruction": str}
    obs, reward, terminated, truncated, info = env.step(env.oracle_plan())   # plan (T, 2, 7)
    env.outcome()                          # EpisodeOutcome (mirrors threedmoe_msgs/EpisodeResult)

Pieces: assets (every body, generated from primitives; a UR5-like URDF), robot (arm following a
constraint-driven suction tool), primitive (pick-and-place with simulated-time limits), scene and
goals (placement, predicates), tasks (registry TASKS, families), oracle, cameras (D415-like RGB-D,
fusion into one labelled cloud, heightmap), env, render (PNG command).
"""

from threedmoe_ros.sim.env import EnvConfig, TabletopEnv
from threedmoe_ros.sim.tasks import FAMILIES, TASKS, get_task

__all__ = ["EnvConfig", "TabletopEnv", "TASKS", "FAMILIES", "get_task"]
