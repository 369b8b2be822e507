"""The main job: a closed-loop evaluation over ROS with the embedded default policy.

    threedmoe-demo [--episodes N] [--out runs/demo]    (`make demo` runs it as python -m threedmoe_ros.demo)

Starts the sim_eval profile (sim bridge, policy node, evaluator) as separate processes over DDS
(on loopback, in the user's ROS_DOMAIN_ID when exported), runs Zone, Bowl and Stacking episodes on
held-out (test-split) seeds, and ends by printing the success table (also written as JSON, markdown
and a PNG plot under --out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from threedmoe_ros.bringup import run
from threedmoe_ros.checkpoints import DEFAULT_POLICY
from threedmoe_ros.profiles import ProfileError, load_profile

TASKS = ["put-block-in-zone", "put-block-in-bowl", "stack-blocks"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threedmoe-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=None,
                        help="episodes per task (default: config/sim_eval.yaml's, 2)")
    parser.add_argument("--checkpoint", default=str(DEFAULT_POLICY), help="policy checkpoint directory")
    parser.add_argument("--out", default="runs/demo", help="where the success table goes")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    if not (Path(args.checkpoint) / "model.safetensors").is_file():
        print(f"demo: no policy checkpoint in {args.checkpoint}; train one with "
              "`threedmoe-train-pose-dit` or pass --checkpoint", file=sys.stderr)
        return 2
    episodes = args.episodes or load_profile("sim_eval")["sim_bridge"]["episodes"]
    if episodes < 1:
        print("demo: --episodes must be >= 1", file=sys.stderr)
        return 2
    overrides = [
        f"policy.checkpoint={args.checkpoint}",
        f"sim_bridge.tasks=[{','.join(TASKS)}]",
        f"sim_bridge.episodes={episodes}",
        f"evaluator.output_dir={args.out}",
    ]  # the evaluator waits for tasks × episodes results: derived by profiles.resolve
    try:
        status = run("sim_eval", overrides, timeout_s=args.timeout)
    except (FileNotFoundError, ProfileError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    table = Path(args.out) / "success.md"
    if status == 0 and table.is_file():
        print(f"\ndemo: done; table in {table}, plot in {table.with_suffix('.png')}, "
              f"per-episode results in {table.with_suffix('.json')}")
    elif status != 0:
        print(f"demo: the evaluation did not finish (exit {status}); see the node output above", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
