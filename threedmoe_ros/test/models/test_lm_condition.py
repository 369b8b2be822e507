"""The LM condition: object tokens the LM reads as words, the instruction's cache reused within an
episode, a start that plans exactly as the light policy it came from, and checkpoints without the LM."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from threedmoe_ros.data.synthetic import SyntheticPickPlace
from threedmoe_ros.models.light_encoder import object_inputs
from threedmoe_ros.models.lm_condition import LMConditionConfig, LMConditionEncoder
from threedmoe_ros.planner import Planner
from threedmoe_ros.policy import Policy
from threedmoe_ros.train.pose_dit import main

ROOT = Path(__file__).resolve().parents[3]
TINY = ["--hidden-size", "32", "--depth", "1", "--horizon", "4", "--batch-size", "8", "--warmup-steps", "2",
        "--log-every", "2", "--save-every", "3"]


def tiny_encoder(**fields) -> LMConditionEncoder:
    torch.manual_seed(0)
    return LMConditionEncoder(LMConditionConfig(**{"llm": "tiny", "layer": 2, **fields}))


def scenes(n: int = 3):
    data = SyntheticPickPlace(n, seed=2)
    return [data[i][0] for i in range(n)], [data[i][1] for i in range(n)]


def test_cached_instruction_prefix_gives_the_states_of_the_whole_prompt():
    """Batch 1 reuses the instruction's keys and values across plans; the states equal one forward over the
    whole prompt, on the first plan, on a repeat, and after another instruction came between."""
    enc = tiny_encoder()
    clouds, texts = scenes()
    feats = np.concatenate([object_inputs(c, enc.light.config).features for c in clouds])
    enc.fit_alignment(feats, ["red block"] * len(feats))
    whole = enc.precompute(clouds, texts)  # batched, left-padded: no cache
    for _ in range(2):
        for i in range(3):
            one = enc.precompute([clouds[i]], [texts[i]])[0]
            torch.testing.assert_close(one.object_states, whole[i].object_states, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(one.instruction_states, whole[i].instruction_states, atol=1e-5, rtol=1e-4)
    assert len(enc._prefixes) == 3
    # The object tokens' states depend on the words before them (instruction first) ...
    other = enc.precompute([clouds[0]], ["put the blue block in the green bowl"])[0]
    assert (other.object_states - whole[0].object_states).abs().max() > 1e-4
    # ... and with the paper's order they do not.
    first = tiny_encoder(order="objects_first")
    first.align.copy_(enc.align)
    a, b = first.precompute([clouds[0]], [texts[0]])[0], first.precompute([clouds[0]], ["put it somewhere"])[0]
    torch.testing.assert_close(a.object_states, b.object_states)


def test_alignment_maps_object_features_onto_their_words():
    """Least squares onto the words' mean input embedding: an object token lies nearer its own words than
    another colour's."""
    enc = tiny_encoder()
    rng = np.random.default_rng(0)
    names = ["red block", "blue block", "green bowl"]
    colour = {"red block": [1, 0, 0], "blue block": [0, 0, 1], "green bowl": [0, 1, 0]}
    labels = [names[i] for i in rng.integers(0, 3, 300)]
    feats = np.zeros((300, enc.light.config.n_object_features), np.float32)
    feats[:, 6:9] = np.array([colour[n] for n in labels]) * 2 - 1 + rng.normal(0, 0.05, (300, 3))
    residual = enc.fit_alignment(feats, labels)
    assert residual < 0.3
    tokens = enc.object_embeddings(feats[:30])
    targets = torch.stack([enc.word_embedding(n) for n in names])
    nearest = torch.cdist(tokens, targets).argmin(1)
    assert [names[i] for i in nearest] == labels[:30]
    with pytest.raises(ValueError, match="one name per object"):
        enc.fit_alignment(feats, labels[:3])


def test_config_validates_and_names_the_field():
    for fields, words in [({"layer": 0}, "layer"), ({"order": "sideways"}, "order"), ({"llm": "gpt"}, "llm"),
                          ({"light": {"dim": -1}}, "dim"), ({"light": {"colour": 1}}, "light")]:
        with pytest.raises(ValueError, match=words):
            LMConditionConfig(**fields)
    with pytest.raises(ValueError, match="layers"):
        tiny_encoder(layer=5)  # the tiny LM has 2


def test_lm_policy_from_a_light_checkpoint_plans_as_the_source_did_then_trains_and_reloads(tmp_path):
    """--init-from a light policy: the LM's states enter through zero projections, so before any step the
    lm policy plans the same poses. After training it saves no LM weights and reloads to the same plan."""
    from threedmoe_ros.train.pose_dit import TrainConfig, build_policy, load_widened, source_state

    light_dir = tmp_path / "light"
    assert main(["--out", str(light_dir), "--max-steps", "3", "--synthetic", "32", *TINY]) == 0
    source = Policy.from_pretrained(light_dir / "checkpoint")
    cfg = TrainConfig(out=str(tmp_path / "x"), synthetic=8, encoder="lm", lm_llm="tiny", lm_layer=2)
    policy = build_policy(cfg, source.config)
    load_widened(policy, source_state(policy, source))
    clouds, texts = scenes()
    feats = np.concatenate([object_inputs(c, policy.encoder.light.config).features for c in clouds])
    policy.encoder.fit_alignment(feats, ["red block"] * len(feats))
    for cloud, text in zip(clouds, texts):
        a = Planner(source).plan(cloud, text, seed=0).poses
        b = Planner(policy).plan(cloud, text, seed=0).poses
        np.testing.assert_allclose(a, b, atol=1e-5)

    out = tmp_path / "lm"
    inputs = tmp_path / "inputs.pt"
    assert main(["--out", str(tmp_path / "export"), "--synthetic", "32", "--export-inputs", str(inputs),
                 "--align-scenes", "14"]) == 0
    assert main(["--out", str(out), "--max-steps", "3", "--data", str(inputs), "--encoder", "lm", "--lm-llm", "tiny",
                 "--lm-layer", "2", "--init-from", str(light_dir / "checkpoint"), *TINY]) == 0
    saved = json.loads((out / "checkpoint" / "config.json").read_text())
    assert saved["encoder"] == "lm" and saved["encoder_config"]["layer"] == 2
    from safetensors import safe_open

    with safe_open(str(out / "checkpoint" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert "encoder.align" in keys and not any("q_proj" in k or "embed_tokens" in k for k in keys)
    tuned = Policy.from_pretrained(out / "checkpoint")
    assert tuned.encoder.align.abs().sum() > 0  # the fitted alignment travels with the policy
    again = Policy.from_pretrained(out / "checkpoint")
    np.testing.assert_allclose(Planner(tuned).plan(clouds[0], texts[0], seed=1).poses,
                               Planner(again).plan(clouds[0], texts[0], seed=1).poses, atol=1e-6)
    with pytest.raises(SystemExit, match="encoder lm only"):
        main(["--out", str(tmp_path / "bad"), "--max-steps", "1", "--data", str(inputs), *TINY])


def test_gpu_recipe_runs_its_commands_on_the_tiny_preset(tmp_path):
    """scripts/gpu_recipe.sh, the command a GPU host runs, on the CPU with the tiny LM: Stage II on compact
    questions, then each variant trains (the in-turn one from Stage II's top), and comes back as a bfloat16
    checkpoint a Policy loads."""
    from threedmoe_ros.data.qa import generate
    from threedmoe_ros.train.stage2 import main as stage2

    light_dir = tmp_path / "light"
    assert main(["--out", str(light_dir), "--max-steps", "2", "--synthetic", "16", *TINY]) == 0
    inputs = tmp_path / "inputs.pt"
    assert main(["--out", str(tmp_path / "export"), "--synthetic", "16", "--export-inputs", str(inputs),
                 "--align-scenes", "14"]) == 0
    lm_dir = tmp_path / "lm"
    assert main(["--out", str(lm_dir), "--max-steps", "2", "--data", str(inputs), "--encoder", "lm", "--lm-llm", "tiny",
                 "--lm-layer", "2", "--init-from", str(light_dir / "checkpoint"), *TINY]) == 0
    generate(tmp_path / "qa", ["put-block-in-bowl"], [0, 1], progress=False)
    assert stage2(["--export-inputs", str(tmp_path / "qa"), str(tmp_path / "qa.pt"),
                   "--init-from", str(lm_dir / "checkpoint")]) == 0
    out = tmp_path / "recipe"
    env = {**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}",
           "QA": str(tmp_path / "qa.pt"), "QA_TEST": str(tmp_path / "qa.pt")}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_recipe.sh"), "tiny", str(inputs),
                           str(lm_dir / "checkpoint"), str(out), "frozen", "moe_e4_qa"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((out / "recipe.json").read_text())
    assert set(report["variants"]) == {"frozen", "moe_e4_qa"} and 0 <= report["stage2"]["EM@1"] <= 1
    for name in report["variants"]:
        assert report["variants"][name]["step"] == report["variants"][name]["checkpoint_step"] == 4
        ckpt = tmp_path / name
        ckpt.mkdir()
        (ckpt / "config.json").write_text((out / f"{name}.json").read_text())
        (out / f"{name}.safetensors").replace(ckpt / "model.safetensors")
        policy = Policy.from_pretrained(ckpt)
        assert policy.config.encoder == "lm"
    assert Policy.from_pretrained(tmp_path / "moe_e4_qa").encoder.config.moe == "e4-top2"
    assert Policy.from_pretrained(tmp_path / "frozen").encoder.config.tune_layers == 0
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_recipe.sh"), "tiny", str(inputs), str(lm_dir),
                          str(out), "sideways"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown variant sideways" in bad.stderr
