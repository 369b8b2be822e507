"""Checkpoints that ship inside the package, so the demo runs on a fresh machine with no download."""

from pathlib import Path

# The embedded default policy: a Pose-DiT trained on the tabletop's oracle episodes
# (checkpoints/README.md is its model card: data, commands, wall times, results, limits).
DEFAULT_POLICY = Path(__file__).resolve().parent / "default"
