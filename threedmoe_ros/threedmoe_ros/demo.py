"""The main job: a closed-loop evaluation over ROS with the embedded default policy.

    threedmoe-demo [--episodes N] [--out runs/demo]    (`make demo` runs it as python -m threedmoe_ros.demo)

Starts the sim_eval profile (sim bridge, policy node, evaluator) as separate processes over DDS
(on loopback, in the user's ROS_DOMAIN_ID when exported), runs Zone, Bowl and Stacking episodes on
held-out (test-split) seeds, and ends by printing the success tables (also written as JSON, markdown
and a PNG plot under --out/<split>): one row set for the `seen` split (training appearance ranges and
phrasings), one for the same split as a camera gives it (`seen-no-labels`: clouds without instance
labels, objects found by segmentation) and one for `shifted+heldout` (looks outside the training
ranges, words training never drew).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from threedmoe_ros.bringup import run
from threedmoe_ros.checkpoints import policy_path
from threedmoe_ros.eval.report import wilson_interval
from threedmoe_ros.profiles import ProfileError

TASKS = ["put-block-in-zone", "put-block-in-bowl", "stack-blocks"]
# split name -> (appearance, phrasing, labels): the seen row, the seen row as a camera gives it (no instance
# labels: the policy segments the cloud), and the shifted + held-out row.
SPLITS = {"seen": ("train", "train", True), "seen-no-labels": ("train", "train", False),
          "shifted+heldout": ("shifted", "heldout", True)}


def pooled_line(success_json: Path, episodes: int) -> str:
    """The split's success over all its episodes with its 95% interval, and how wide one row's is:
    with a few episodes per task the rows' intervals span most of [0, 1], the pooled one less."""
    episodes_run = json.loads(success_json.read_text())["episodes"]
    n, s = len(episodes_run), sum(bool(e["success"]) for e in episodes_run)
    lo, hi = wilson_interval(s, n)
    row_lo, row_hi = wilson_interval(episodes // 2, episodes)
    return (f"  all {n} episodes: {s / max(n, 1):.2f} (95% interval {lo:.2f}–{hi:.2f}); each row has {episodes} "
            f"episode{'s' if episodes > 1 else ''}, so its interval is up to {row_hi - row_lo:.2f} wide\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threedmoe-demo", description=__doc__.split("\n\n")[0])
    # 8 per task: 24 per split, a pooled 95% interval about ±0.15 wide, in about a minute and a half per split
    # here (2 per task left one row's interval 0.8 wide and moved the seen split's figure by 0.3).
    parser.add_argument("--episodes", type=int, default=8, help="episodes per task and split (default 8)")
    parser.add_argument("--checkpoint", default="default", help="policy checkpoint directory, or a shipped policy by name (default, light)")
    parser.add_argument("--out", default="runs/demo", help="where the success table goes")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    args.checkpoint = policy_path(args.checkpoint)
    if not (Path(args.checkpoint) / "model.safetensors").is_file():
        print(f"demo: no policy checkpoint in {args.checkpoint}; train one with "
              "`threedmoe-train-pose-dit` or pass --checkpoint", file=sys.stderr)
        return 2
    if args.episodes < 1:
        print("demo: --episodes must be >= 1", file=sys.stderr)
        return 2
    status = 0
    for split, (appearance, phrasing, labels) in SPLITS.items():
        out = Path(args.out) / split
        overrides = [
            f"policy.checkpoint={args.checkpoint}",
            f"sim_bridge.tasks=[{','.join(TASKS)}]",
            f"sim_bridge.episodes={args.episodes}",
            f"sim_bridge.appearance={appearance}",
            f"sim_bridge.phrasing={phrasing}",
            f"sim_bridge.labels={'true' if labels else 'false'}",
            f"evaluator.output_dir={out}",
        ]  # the evaluator waits for tasks × episodes results: derived by profiles.resolve
        print(f"demo: {split} split (appearance {appearance}, phrasing {phrasing}, "
              f"{'labelled clouds' if labels else 'clouds without labels'})", flush=True)
        try:
            status = run("sim_eval", overrides, timeout_s=args.timeout)
        except (FileNotFoundError, ProfileError) as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 2
        if status != 0:
            print(f"demo: the {split} evaluation did not finish (exit {status}); see the node output above", file=sys.stderr)
            return status
    print()
    for split in SPLITS:
        print(f"demo, {split} split:\n{(Path(args.out) / split / 'success.md').read_text()}")
        print(pooled_line(Path(args.out) / split / "success.json", args.episodes))
    print(f"demo: done; tables, plots and per-episode results under {args.out}/<split>/ "
          "(success.md, success.png, success.json); --episodes 20 narrows each row's interval to about ±0.2.")
    return status


if __name__ == "__main__":
    sys.exit(main())
