"""Checkpoints that ship inside the package, so the demo runs on a fresh machine with no download."""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
# The embedded default policy (checkpoints/README.md is the model card of both: data, commands, wall
# times, results, limits), and the light policy, which needs no language model.
DEFAULT_POLICY = _HERE / "default"
LIGHT_POLICY = _HERE / "light"
POLICIES = {"default": DEFAULT_POLICY, "light": LIGHT_POLICY}


def policy_path(name_or_path: str | None) -> str:
    """A shipped policy by name ("default", "light"; empty or None = "default"), or any checkpoint directory."""
    if not name_or_path:
        return str(DEFAULT_POLICY)
    return str(POLICIES.get(name_or_path, name_or_path))
