"""ScanQA / SQA3D / LEO annotation files read into Stage II items, with clouds from a scene directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from threedmoe_ros.data.external import load_qa, load_scene, read_leo, read_scanqa, read_sqa3d


def _scene_arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-1, 1, (300, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (300, 3)).astype(np.float32)
    inst = np.repeat([-100, 0, 1], 100)  # LEO-style: unannotated, then instances 0 and 1
    return xyz, rgb, inst


@pytest.fixture
def scenes(tmp_path):
    """scene0000_00 as .npz (our format), scene0001_00 as .npy, scene0002_00 as LEO's .pth tuple."""
    d = tmp_path / "scenes"
    d.mkdir()
    xyz, rgb, inst = _scene_arrays()
    np.savez(d / "scene0000_00.npz", xyz=xyz, rgb=rgb.astype(np.uint8), label=np.repeat([0, 1, 2], 100))
    np.save(d / "scene0001_00.npy", np.c_[xyz, rgb / 255.0, np.repeat([0, 1, 2], 100)])
    torch.save((xyz, rgb, np.zeros(300), inst), d / "scene0002_00.pth")
    return d


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def scanqa(tmp_path):
    return write(tmp_path / "ScanQA_v1.0_train.json", [
        {"question_id": "train-scene0000_00-0", "scene_id": "scene0000_00", "question": "What color is the chair?",
         "answers": ["brown", "dark brown"], "object_ids": [3], "object_names": ["chair"]},
        {"question_id": "train-scene0002_00-1", "scene_id": "scene0002_00", "question": "Where is the lamp?",
         "answers": ["on desk"], "object_ids": [7], "object_names": ["lamp"]},
    ])


def test_scene_formats_agree_on_points_colours_and_objects(scenes):
    clouds = [load_scene(next(scenes.glob(f"scene000{i}_00.*"))) for i in range(3)]
    for c in clouds:
        assert c.xyz.shape == (300, 3) and c.rgb.dtype == np.uint8
        # Three groups of points: background (0) and two objects, whatever the file's convention.
        assert sorted(np.unique(c.label)) == [0, 1, 2]
    np.testing.assert_allclose(clouds[0].xyz, clouds[2].xyz)
    assert np.abs(clouds[0].rgb.astype(int) - clouds[1].rgb.astype(int)).max() <= 1  # 0–1 colours scaled


def test_scanqa_items_keep_every_answer(tmp_path, scenes):
    ds = load_qa("scanqa", scanqa(tmp_path), scenes)
    cloud, question, answer = ds[0]
    assert (question, answer) == ("What color is the chair?", "brown") and len(cloud) == 300
    assert ds.references(0) == ["brown", "dark brown"]
    assert ds[1][0].label.max() == 2  # the .pth scene


def test_sqa3d_joins_annotations_and_puts_the_situation_in_the_prompt(tmp_path):
    q = write(tmp_path / "v1_balanced_questions_val_scannetv2.json", {"questions": [
        {"question_id": 220602000002, "scene_id": "scene0050_00", "situation": "I am standing by the ottoman.",
         "question": "What instrument is in front of me?", "alternative_situation": [], "position": {}, "rotation": {}}]})
    write(tmp_path / "v1_balanced_sqa_annotations_val_scannetv2.json", {"annotations": [
        {"question_id": 220602000002, "answers": [{"answer": "piano", "answer_confidence": "yes", "answer_id": 1}]}]})
    [item] = read_sqa3d(q)
    assert item.question == "I am standing by the ottoman. What instrument is in front of me?"
    assert item.answers == ["piano"] and item.scene_id == "scene0050_00"


def test_leo_records_as_a_list_or_by_scene(tmp_path):
    listed = write(tmp_path / "a.json", [
        {"source": "scannet.scene0000_00", "instruction": "Describe the room.", "response": "A small office."}])
    by_scene = write(tmp_path / "b.json", {"scene0001_00": [{"question": "How many chairs?", "answers": ["2"]}]})
    assert [(i.scene_id, i.question, i.answers) for i in read_leo(listed)] == [
        ("scene0000_00", "Describe the room.", ["A small office."])]
    assert [(i.scene_id, i.answers) for i in read_leo(by_scene)] == [("scene0001_00", ["2"])]


def test_errors_name_the_file_and_the_field(tmp_path, scenes):
    bad = write(tmp_path / "bad.json", [{"question_id": 1, "scene_id": "scene0000_00", "question": "Why?",
                                         "answers": []}])
    with pytest.raises(ValueError, match=r"bad\.json: question 0 field 'answers'"):
        read_scanqa(bad)
    test_split = write(tmp_path / "ScanQA_v1.0_test_w_obj.json", [{"scene_id": "scene0000_00", "question": "Why?"}])
    with pytest.raises(ValueError, match=r"test_w_obj\.json: question 0 has no field 'answers'"):
        read_scanqa(test_split)
    with pytest.raises(ValueError, match=r"c\.json: record 0 has no prompt field"):
        read_leo(write(tmp_path / "c.json", [{"scene_id": "s", "text": "hi", "answer": "x"}]))
    with pytest.raises(FileNotFoundError, match=r"sqa_annotations_val"):
        read_sqa3d(write(tmp_path / "v1_balanced_questions_val_x.json", {"questions": []}))
    missing = write(tmp_path / "m.json", [{"scene_id": "scene0999_00", "question": "Q?", "answers": ["a"]}])
    with pytest.raises(FileNotFoundError, match=r"scene0999_00"):
        load_qa("scanqa", missing, scenes)


def test_stage2_trains_on_scanqa_and_scores_against_every_answer(tmp_path, scenes):
    """threedmoe-train-stage2 --qa-format scanqa: the 3D-MoE's top trains on the annotations with clouds from
    the scene directory, and held-out scoring accepts any reference answer."""
    from threedmoe_ros.models.lm_condition import LMConditionConfig, LMConditionEncoder
    from threedmoe_ros.policy import Policy, PolicyConfig
    from threedmoe_ros.train.stage2 import main as stage2

    config = LMConditionConfig(llm="tiny", layer=2)
    Policy(PolicyConfig(encoder="lm", encoder_config={"llm": "tiny", "layer": 2}),
           encoder=LMConditionEncoder(config)).save_pretrained(tmp_path / "policy")
    qa = scanqa(tmp_path)
    assert stage2(["--out", str(tmp_path / "run"), "--qa-format", "scanqa", "--data", str(qa), "--scenes", str(scenes),
                   "--eval-data", str(qa), "--init-from", str(tmp_path / "policy"), "--tune-layers", "1",
                   "--moe", "e2-top2", "--lora", "tiny", "--max-steps", "1", "--batch-size", "2",
                   "--warmup-steps", "0"]) == 0
    result = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert result["eval"]["n"] == 2 and set(result["eval"]["per_kind"]) == {"scanqa"}
    assert stage2(["--out", str(tmp_path / "bad"), "--qa-format", "scanqa", "--data", str(qa)]) == 2  # no --scenes
