"""Scene captions and QA: answers follow the robot's frame and the scene's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from threedmoe_ros.data.qa import QADataset, SceneObject, generate, names, scene_caption, scene_questions


def obj(label, kind, color, xyz, size="medium", extent=0.04):
    return SceneObject(label, kind, color, size, np.array(xyz, float), extent)


@pytest.fixture
def scene():
    # Robot at the origin looking along +x; +y is its left.
    return [
        obj(1, "block", "red", (0.40, 0.20, 0.02)),  # front left
        obj(2, "block", "blue", (0.60, -0.20, 0.02)),  # back right
        obj(3, "block", "yellow", (0.60, -0.20, 0.06)),  # on the blue block
        obj(4, "bowl", "green", (0.50, 0.00, 0.02), extent=0.12),
        obj(5, "block", "gray", (0.51, 0.01, 0.03)),  # in the bowl
    ]


def answers(scene, count=100):
    return {qa.question: qa.answer for qa in scene_questions(scene, np.random.default_rng(0), count=count)}


def test_answers_follow_the_scene(scene):
    a = answers(scene)
    assert a["How many blocks are there?"] == "four"
    assert a["What color is the bowl?"] == "green"
    assert a["Is the red block left of the blue block?"] == "yes"
    assert a["Which is closer to the robot, the red block or the blue block?"] == "the red block"
    assert a["What is on top of the blue block?"] == "the yellow block"
    assert a["What is on top of the red block?"] == "nothing"
    assert a["What is in the green bowl?"] == "the gray block"
    assert a["Where is the red block?"] == "front left"
    assert a["Is there a red block?"] == "yes"
    assert any(q.startswith("Is there a") and v == "no" for q, v in a.items())


def test_ambiguous_objects_are_not_asked_about():
    twins = [obj(1, "block", "red", (0.4, 0.2, 0.02)), obj(2, "block", "red", (0.6, -0.2, 0.02)),
             obj(3, "block", "red", (0.5, 0.0, 0.02), size="small")]
    assert names(twins) == {3: "small red block"}
    for qa in scene_questions(twins, np.random.default_rng(0), count=100):
        if qa.kind != "exists":  # "is there a red block?" is fine: any red block answers it
            assert " red block" not in qa.question.replace("small red block", "")


def test_pairs_closer_than_the_margin_are_skipped():
    close = [obj(1, "block", "red", (0.50, 0.10, 0.02)), obj(2, "block", "blue", (0.52, 0.12, 0.02))]
    kinds = {qa.kind for qa in scene_questions(close, np.random.default_rng(0), count=100)}
    assert "relation" not in kinds and "closer" not in kinds


def test_questions_mix_kinds_and_caption_lists_objects(scene):
    qs = scene_questions(scene, np.random.default_rng(1), count=6)
    assert len({q.kind for q in qs}) == 6 and len({q.question for q in qs}) == 6
    caption = scene_caption(scene, np.random.default_rng(0))
    assert caption.startswith("four blocks: a red block") and "one bowl: a green bowl" in caption


def test_generate_from_the_simulator_reads_back(tmp_path):
    pytest.importorskip("pybullet")
    path = generate(tmp_path, ["put-block-in-bowl"], [0], questions_per_scene=4, progress=False)
    ds = QADataset(path)
    assert len(ds) == 5
    cloud, question, answer = ds[0]
    assert len(cloud) > 1000 and cloud.label.max() >= 1 and question and answer
    assert len(QADataset(tmp_path, kinds=["caption"])) == 1
