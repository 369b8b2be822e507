"""Why a closed-loop episode failed: each policy step judged against the oracle's next step from
the same state, and the episode named by its first mistake.

Kinds, in the order they are looked for:
- wrong object: the step picks an object that is not like the one the oracle picks next (another
  colour, kind or size; a distractor; a bowl; nothing);
- wrong place: the right object, put on or in another object than the oracle's (or, on open table,
  more than PLACE_TOLERANCE from the oracle's place);
- imprecise: the right object to the right place, yet the task came no nearer to done (a drop, a
  tower that fell, a block just outside its zone);
- stopped: every step was right, but the policy declared the task done early or its plans were refused;
- step limit: every step was right and made progress, but the episode ran out of steps.
Objects that look alike (same colour, kind and size) are interchangeable here, as they are to the task.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

FAILURE_KINDS = ("wrong object", "wrong place", "imprecise", "stopped", "step limit")
PLACE_TOLERANCE = 0.03  # m; an open-table place this far from the oracle's is another place


def _object_at(objects, poses, xy: np.ndarray, kinds: tuple[str, ...], exclude: int = -1) -> int:
    """Index of the object whose footprint holds `xy` (nearest centre first), or -1."""
    best, best_d = -1, np.inf
    for i, (obj, pose) in enumerate(zip(objects, poses)):
        if i == exclude or obj.kind not in kinds:
            continue
        d = float(np.linalg.norm(pose.position[:2] - xy[:2]))
        reach = obj.extent / 2 * 1.2 if obj.kind != "bowl" else obj.extent
        if d <= reach and d < best_d:
            best, best_d = i, d
    return best


def _looks(objects, index: int, targets) -> tuple:
    """What makes two objects interchangeable to the task: how they look, and whether the instruction is
    about them (the block left of the red bowl and its twin on the right look alike but are not)."""
    obj = objects[index]
    return (obj.kind, obj.color, obj.size, obj.distractor, index in targets)


def oracle_steps(env) -> np.ndarray | None:
    """The oracle's remaining plan, or None where a policy has led the scene into a state the oracle
    cannot finish (a zone crowded with wrong blocks): such a state is judged by the steps before it."""
    try:
        return env.oracle_plan()
    except RuntimeError:
        return None


def judge_step(env, step: np.ndarray, oracle: np.ndarray | None) -> str:
    """'' when `step` (2, 7) does what `oracle` (oracle_steps from the current state) does next, or
    when there is no oracle step to compare with; else its mistake."""
    if oracle is None or len(oracle) == 0:
        return ""  # done already (the episode is scored on the state), or nothing to compare with
    objects, poses = env.scene.objects, env.scene.poses()
    want = _object_at(objects, poses, oracle[0, 0], ("block",))
    got = _object_at(objects, poses, step[0], ("block", "bowl"))
    targets = set(env.episode.targets)
    if got < 0 or want < 0 or _looks(objects, got, targets) != _looks(objects, want, targets):
        return "wrong object"
    places = ("block", "bowl", "zone")
    want_under = _object_at(objects, poses, oracle[0, 1], places, exclude=want)
    got_under = _object_at(objects, poses, step[1], places, exclude=got)
    if want_under < 0 and got_under < 0:
        if np.linalg.norm(step[1, :2] - oracle[0, 1, :2]) > PLACE_TOLERANCE:
            return "wrong place"
    elif want_under < 0 or got_under < 0 or _looks(objects, got_under, targets) != _looks(objects, want_under, targets):
        return "wrong place"
    return ""


def failure_kind(verdicts: list[str], outcome) -> str:
    """The episode's failure kind from its steps' verdicts ('' for a success)."""
    if outcome.success:
        return ""
    for verdict in verdicts:
        if verdict:
            return verdict
    if outcome.reason == "step_limit":
        return "step limit"
    if outcome.reason in ("aborted", "invalid_plan", "timeout"):
        return "stopped"
    return "imprecise"  # a primitive that failed on a right step


def breakdown(outcomes) -> dict[str, int]:
    """Failed episodes by kind (FAILURE_KINDS order)."""
    counts = Counter(o.extra.get("failure", "") for o in outcomes if not o.success)
    return {k: counts.get(k, 0) for k in FAILURE_KINDS}
