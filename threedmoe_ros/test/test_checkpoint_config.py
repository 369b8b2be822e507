"""Every way config.json can be wrong gives CheckpointError naming the file (never a traceback):
each field, nested ones included, set to a value of the wrong type, plus missing, unknown and
torn pieces of the checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from threedmoe_ros.policy import CheckpointError, Policy, PolicyConfig


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return Policy(PolicyConfig()).save_pretrained(tmp_path_factory.mktemp("ckpt") / "good")


def leaves(value, path=()):
    """(path, value) of every field of a JSON object, nested objects' fields included."""
    if isinstance(value, dict):
        if not value:
            yield path, value
        for key, inner in value.items():
            yield from leaves(inner, (*path, key))
    else:
        yield path, value


def wrong_values(value) -> list:
    """Values of another JSON type than `value`."""
    candidates = ["x", 7, 2.5, True, None, [], {}, [1, "a"]]
    same = lambda v: type(v) is type(value) or (isinstance(value, float) and type(v) is int)  # noqa: E731
    return [v for v in candidates if not same(v)]


def edited(saved: Path, tmp_path: Path, path: tuple, value) -> Path:
    out = tmp_path / "edited"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(saved, out)
    config = json.loads((out / "config.json").read_text())
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_every_field_of_the_wrong_type_is_a_checkpoint_error_naming_the_file(saved, tmp_path):
    config = json.loads((saved / "config.json").read_text())
    tried, escaped = 0, []
    for path, value in leaves(config):
        if path == ("version",):
            continue  # its own test below
        for wrong in wrong_values(value):
            if isinstance(value, dict) and isinstance(wrong, dict):
                continue
            tried += 1
            try:
                Policy.from_pretrained(edited(saved, tmp_path, path, wrong))
                escaped.append((".".join(path), wrong, "loaded"))
            except CheckpointError as exc:
                if "config.json" not in str(exc):
                    escaped.append((".".join(path), wrong, str(exc)))
            except Exception as exc:  # noqa: BLE001 - what the test is looking for
                escaped.append((".".join(path), wrong, f"{type(exc).__name__}: {exc}"))
    assert tried > 80
    assert not escaped, escaped


@pytest.mark.parametrize("change, words", [
    (lambda c: c.update(head=None), "config.json"),
    (lambda c: c.update(seed="x"), "config.json"),
    (lambda c: c.update(version=2), "version 2"),
    (lambda c: c.update(surprise=1), "surprise"),
    (lambda c: c["head"].update(surprise=1), "surprise"),
    (lambda c: c["head"].update(hidden_size=-4), "config.json"),
    (lambda c: c["head"].update(num_heads=3), "config.json"),
    (lambda c: c.update(encoder="nope"), "unknown encoder"),
    (lambda c: c.update(scheduler="nope"), "unknown scheduler"),
    (lambda c: c["scheduler_config"].update(num_inference_steps=0), "config.json"),
])
def test_config_variants_name_the_file(saved, tmp_path, change, words):
    out = edited(saved, tmp_path, ("seed",), 0)
    config = json.loads((out / "config.json").read_text())
    change(config)
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=words) as info:
        Policy.from_pretrained(out)
    assert str(out / "config.json") in str(info.value) or words in str(info.value)


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json is not a valid policy config"),
    (lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00"), "config.json is not a valid policy config"),
    (lambda d: (d / "config.json").write_text(""), "config.json is not a valid policy config"),
    (lambda d: (d / "config.json").unlink(), "has no config.json"),
    (lambda d: (d / "model.safetensors").unlink(), "has no model.safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors is corrupt"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]), "model.safetensors is corrupt"),
    (lambda d: (d / "extra.bin").write_bytes(b"\0" * 10), None),  # an extra file is harmless: it loads
])
def test_missing_torn_and_extra_files(saved, tmp_path, damage, words):
    out = edited(saved, tmp_path, ("seed",), 0)
    damage(out)
    if words is None:
        assert isinstance(Policy.from_pretrained(out), Policy)
        return
    with pytest.raises(CheckpointError, match=words):
        Policy.from_pretrained(out)


def test_shipped_policies_load_by_name():
    """`default` (also the empty name) is the LM policy and `light` the light one; any other name is a path.
    Both fit in the repository's 50 MB of weights."""
    from threedmoe_ros.checkpoints import DEFAULT_POLICY, LIGHT_POLICY, policy_path

    assert policy_path("") == policy_path(None) == policy_path("default") == str(DEFAULT_POLICY)
    assert policy_path("light") == str(LIGHT_POLICY)
    assert policy_path("runs/x/checkpoint") == "runs/x/checkpoint"
    assert Policy.from_pretrained(policy_path("light")).config.encoder == "light"
    default = Policy.from_pretrained(policy_path("default"))
    assert default.config.encoder == "lm" and default.encoder.align.abs().sum() > 0
    size = sum(f.stat().st_size for d in (DEFAULT_POLICY, LIGHT_POLICY) for f in d.iterdir())
    assert size <= 50e6


def test_config_files_with_the_sizes_now_derived_still_load(saved, tmp_path):
    """config.json files written before the head's condition width and metric scale were derived carry
    head.cond_dim and head.unit_m: they load, and plan as the policy did."""
    import numpy as np

    from threedmoe_ros.planner import Planner, warm_up_scene

    out = edited(saved, tmp_path, ("head", "cond_dim"), 128)
    config = json.loads((out / "config.json").read_text())
    config["head"]["unit_m"] = [0.25, 0.5, 0.15]
    (out / "config.json").write_text(json.dumps(config))
    old, new = Planner(Policy.from_pretrained(out), frozen=False), Planner(Policy.from_pretrained(saved), frozen=False)
    a = old.plan(warm_up_scene(), "put the red block in the green zone", seed=0)
    b = new.plan(warm_up_scene(), "put the red block in the green zone", seed=0)
    assert np.array_equal(a.poses, b.poses) and np.array_equal(a.valid_prob, b.valid_prob)
