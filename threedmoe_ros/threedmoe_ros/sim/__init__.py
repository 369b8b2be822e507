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

import ctypes
import os
import sys


def _import_pybullet_quietly() -> None:
    """Import pybullet once with the C stderr pointed at /dev/null: its module init prints its build
    time there on every start, also before a command's --help. Every later `import pybullet` is cached."""
    if "pybullet" in sys.modules:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stdout (an embedded interpreter): import as it is
        import pybullet  # noqa: F401
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import pybullet  # noqa: F401
            ctypes.CDLL(None).fflush(None)  # in case C stdio buffered the line
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_import_pybullet_quietly()

from threedmoe_ros.sim.env import EnvConfig, TabletopEnv  # noqa: E402
from threedmoe_ros.sim.tasks import FAMILIES, TASKS, get_task  # noqa: E402

__all__ = ["EnvConfig", "TabletopEnv", "TASKS", "FAMILIES", "get_task"]
