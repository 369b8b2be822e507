"""Scene captions and QA: answers follow the robot's frame and the scene's ground truth, and the
question alone does not give the answer away (a blind prior scores chance on every kind)."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import pytest

from threedmoe_ros.data.qa import (
    DEFAULT_TASKS, KINDS, PHRASINGS, QADataset, SceneObject, blind_prior, candidates, chance, generate, names,
    scene_caption, scene_questions, simulate_scenes, split_items,
)

PALETTE = ["red", "blue", "yellow", "green", "gray", "cyan", "brown"]


def obj(label, kind, color, xyz, size="medium", extent=0.04):
    return SceneObject(label, kind, color, size, np.array(xyz, float), extent)


@pytest.fixture
def scene():
    # Robot at the origin looking along +x; +y is its left.
    return [
        obj(1, "block", "red", (0.32, 0.30, 0.02)),  # front left
        obj(2, "block", "blue", (0.65, -0.20, 0.02)),  # back right
        obj(3, "block", "yellow", (0.65, -0.20, 0.06), size="small", extent=0.03),  # on the blue block
        obj(4, "bowl", "green", (0.50, 0.00, 0.015), size="", extent=0.07),
        obj(5, "block", "gray", (0.51, 0.01, 0.03)),  # in the bowl
    ]


def answers(scene) -> dict[str, str]:
    """Every candidate question of the scene → its answer, keyed by the question's text key."""
    return {c.text_key: c.answer for cands in candidates(scene, PALETTE).values() for c in cands}


def test_answers_follow_the_scene(scene):
    a = answers(scene)
    assert a["exists|color=red|kind=block"] == "yes" and a["exists|color=cyan|kind=block"] == "no"
    assert a["count|np=blocks in the green bowl"] == "one" and a["count|np=bowls"] == "one"
    assert a["color|desc=bowl"] == "green" and a["color|desc=block on top of the blue block"] == "yellow"
    assert a["color|desc=leftmost block"] == "red" and a["color|desc=small block"] == "yellow"
    assert a["size|name=yellow block"] == "small" and a["size|name=red block"] == "medium"
    assert a["relation|a=red block|b=blue block|rel=left of"] == "yes"
    assert a["relation|a=red block|b=blue block|rel=behind"] == "no"
    assert a["relation|a=red block|b=blue block|rel=closer to the robot than"] == "yes"
    assert a["on_top|a=yellow block|b=blue block"] == "yes" and a["on_top|a=blue block|b=yellow block"] == "no"
    assert a["inside|a=gray block|c=green bowl"] == "yes" and a["inside|a=red block|c=green bowl"] == "no"
    assert a["position|name=red block"] == "front left" and a["position|name=blue block"] == "back right"
    refer = [c for c in candidates(scene, PALETTE)["refer"] if c.slots["instr"] == "{verb} the leftmost block."]
    assert refer and all(c.answer == "the red block" and c.answer in c.options for c in refer)


def test_refer_options_never_include_the_object_the_description_names(scene):
    for c in candidates(scene, PALETTE)["refer"]:
        if "on top of the blue block" in c.slots["instr"]:
            assert "the blue block" not in c.options


def test_ambiguous_objects_are_not_asked_about():
    twins = [obj(1, "block", "red", (0.4, 0.2, 0.02)), obj(2, "block", "red", (0.6, -0.2, 0.02)),
             obj(3, "block", "red", (0.5, 0.0, 0.02), size="small")]
    assert names(twins) == {3: "small red block"}
    for qa in scene_questions(twins, np.random.default_rng(0), count=100, per_kind=20):
        if qa.kind not in ("exists", "count"):  # "is there a red block?" / "how many red blocks": any red block
            assert " red block" not in qa.question.replace("small red block", "")


def test_pairs_closer_than_the_margin_are_skipped():
    close = [obj(1, "block", "red", (0.50, 0.10, 0.02)), obj(2, "block", "blue", (0.52, 0.12, 0.02))]
    pool = candidates(close, PALETTE)
    assert not pool["relation"]


def test_questions_mix_kinds_and_caption_lists_objects(scene):
    qs = scene_questions(scene, np.random.default_rng(1), count=6, colors=PALETTE)
    assert len({q.kind for q in qs}) == 6 and len({q.question for q in qs}) == 6
    assert all(q.answer in q.options for q in qs)
    caption = scene_caption(scene, np.random.default_rng(0))
    assert caption.startswith("four blocks: a red block") and "one bowl: a green bowl" in caption
    assert "the yellow block is on the blue block." in caption and "the gray block is in the green bowl." in caption


def test_blind_prior_learns_a_bias_when_there_is_one():
    """The baseline is a real prior: on a set where a template always says "yes", it says "yes"."""
    item = {"kind": "on_top", "template": "Is the {a} on top of the {b}?", "options": ["yes", "no"]}
    train = [{**item, "answer": "yes"}] * 9 + [{**item, "answer": "no"}]
    test = [{**item, "answer": "yes"}] * 3 + [{**item, "kind": "on_top", "template": "new", "answer": "no"}]
    assert blind_prior(train, test) == ["yes", "yes", "yes", "yes"]


@pytest.fixture(scope="module")
def splits():
    """Simulator scenes of every default task (objects only, no rendering: seconds, not minutes)."""
    pytest.importorskip("pybullet")
    train = split_items(simulate_scenes(DEFAULT_TASKS, range(0, 20), observe=False, progress=False), "train",
                        per_kind=2)
    test = split_items(simulate_scenes(DEFAULT_TASKS, range(1000, 1010), observe=False, progress=False), "test",
                       per_kind=2)
    return [it for it in train if it["kind"] != "caption"], [it for it in test if it["kind"] != "caption"]


def test_blind_prior_scores_chance_on_every_kind(splits):
    train, test = splits
    right = defaultdict(list)
    for prediction, it in zip(blind_prior(train, test), test):
        right[it["kind"]].append(prediction == it["answer"])
    assert set(right) == set(KINDS)
    for kind in KINDS:
        items = [it for it in test if it["kind"] == kind]
        assert len(items) >= 30, f"{kind}: only {len(items)} held-out questions"
        every_option = {it["options"].index(it["answer"]) for it in items}
        assert len(every_option) == len(items[0]["options"]), f"{kind}: some answers never occur"
        em, expected = 100 * np.mean(right[kind]), 100 * chance(items)
        assert abs(em - expected) <= 5, f"{kind}: blind prior EM@1 {em:.1f} vs chance {expected:.1f}"


def test_held_out_phrasings_appear_only_in_the_test_split(splits):
    train, test = splits
    held_out = {p[-1] for p in PHRASINGS.values()}
    assert not {it["template"] for it in train} & held_out
    assert all(it["phrasing"] == "seen" for it in train)
    assert {it["kind"] for it in test if it["template"] in held_out} == set(KINDS)
    # No training question reads like a held-out wording, whatever fills its slots.
    patterns = [re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(t)) + "$") for t in held_out]
    assert not [it["question"] for it in train if any(p.match(it["question"]) for p in patterns)]
    assert all(any(p.match(it["question"]) for p in patterns) for it in test if it["phrasing"] == "held_out")


def test_generate_from_the_simulator_reads_back(tmp_path):
    pytest.importorskip("pybullet")
    path = generate(tmp_path, ["put-block-in-bowl"], [0], progress=False)
    ds = QADataset(path)
    assert len(ds) >= 2
    cloud, question, answer = ds[0]
    assert len(cloud) > 1000 and cloud.label.max() >= 1 and question and answer
    assert len(QADataset(tmp_path, kinds=["caption"])) == 1
    assert all(it["answer"] in it["options"] for it in ds.items if it["kind"] != "caption")
