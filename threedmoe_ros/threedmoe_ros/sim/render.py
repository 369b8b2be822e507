"""Render a task's scene and a plan to a PNG, so a person can check a task by looking.

    threedmoe-render --task stack-blocks --seed 3 --out stack.png
    threedmoe-render --task put-block-in-zone --seed 0 --plan my_plan.npy --out p.png

Left: the scene from above (top of the image = far side of the table, +x; left = +y) with the plan's
steps as numbered arrows from pick to place. Right: the scene after executing the plan, with the
outcome. The plan is the oracle's unless --plan names a .npy file holding a (T, 2, 7) array.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from threedmoe_ros.sim.tasks import TASKS

# A top-down view needs denser clouds than the policy's observation, so render at D415 size.
RENDER_RESOLUTION = (640, 480)


def _top_down(ax, colormap: np.ndarray, height: np.ndarray, bounds: np.ndarray) -> None:
    # Heightmap rows run along +x and columns along +y; flip both so +x is up and +y is left.
    (x0, x1), (y0, y1) = bounds[0], bounds[1]
    extent = (y1, y0, x0, x1)
    ax.imshow(colormap[::-1, ::-1], extent=extent, interpolation="nearest")
    # Outline everything standing on the table, so a block in a zone or bowl of its own colour shows.
    ax.contour(height[::-1, ::-1], levels=[0.006, 0.035, 0.065, 0.095], colors="black", linewidths=0.6,
               extent=extent, origin="upper")
    ax.set_xlabel("y (m)")
    ax.set_ylabel("x (m)")


def _arrows(ax, plan: np.ndarray) -> None:
    for k, (pick, place) in enumerate(plan):
        ax.annotate("", xy=(place[1], place[0]), xytext=(pick[1], pick[0]),
                    arrowprops=dict(arrowstyle="->", color="black", lw=1.8))
        ax.plot(pick[1], pick[0], "o", color="white", markeredgecolor="black", ms=6)
        ax.plot(place[1], place[0], "x", color="black", ms=8, mew=2)
        mid = (pick[:2] + place[:2]) / 2
        ax.text(mid[1], mid[0] + 0.015, str(k + 1), color="black", fontsize=10, ha="center", weight="bold")


def render_png(task: str, seed: int, out: Path, plan: np.ndarray | None = None, unseen: bool = False,
               appearance: str = "plain", phrasing: str = "plain") -> dict:
    """Write the PNG; returns the episode's info after executing the plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from threedmoe_ros.sim.cameras import default_cameras
    from threedmoe_ros.sim.env import EnvConfig, TabletopEnv

    config = EnvConfig(task=task, unseen_colors=unseen, cameras=default_cameras(*RENDER_RESOLUTION),
                       appearance=appearance, phrasing=phrasing)
    with TabletopEnv(config) as env:
        _, info = env.reset(seed)
        plan = env.oracle_plan() if plan is None else plan
        bounds = config.fusion.bounds
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
        _top_down(axes[0], info["colormap"], info["heightmap"], bounds)
        if np.all(np.isfinite(plan)):
            _arrows(axes[0], plan)
        axes[0].set_title(f"{task} seed {seed}: {len(plan)}-step plan")
        _, reward, terminated, truncated, after = env.step(plan)
        _top_down(axes[1], after["colormap"], after["heightmap"], bounds)
        status = after["reason"] or "running"
        axes[1].set_title(f"after: reward {reward:.2f}, {status}" + (f"\n{after['detail']}" if after["detail"] else ""))
        fig.suptitle(f"\u201c{info['instruction']}\u201d", fontsize=13)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=90)
        plt.close(fig)
        return after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threedmoe-render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, help=f"one of: {', '.join(TASKS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--plan", type=Path, help=".npy file with a (T, 2, 7) plan (default: the oracle's)")
    parser.add_argument("--unseen-colors", action="store_true", help="draw colours from the held-out split")
    from threedmoe_ros.sim.env import add_split_arguments

    add_split_arguments(parser, appearance="plain", phrasing="plain")
    args = parser.parse_args(argv)
    if args.task not in TASKS:
        parser.error(f"unknown task '{args.task}'; known tasks: {', '.join(TASKS)}")
    plan = None
    if args.plan is not None:
        try:
            plan = np.load(args.plan)
        except (OSError, ValueError) as exc:
            parser.error(f"cannot read plan {args.plan}: {exc}")
        if plan.ndim != 3 or plan.shape[1:] != (2, 7):
            parser.error(f"plan {args.plan} has shape {plan.shape}; expected (T, 2, 7)")
    info = render_png(args.task, args.seed, args.out, plan, args.unseen_colors, args.appearance, args.phrasing)
    print(f"wrote {args.out}: {info['instruction']!r}, reward {info['reward']:.2f}, reason {info['reason'] or 'running'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
