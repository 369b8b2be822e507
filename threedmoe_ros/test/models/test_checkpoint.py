"""The one checkpoint writer and reader: a write that fails leaves the old file whole, and every
missing, torn or foreign file is a CheckpointError naming it."""

from __future__ import annotations

import pytest
import torch

from threedmoe_ros.models.checkpoint import (
    CheckpointError, atomic, load_module, load_tensors, read_json, save_tensors, write_json,
)


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_json({"step": 1}, tmp_path / "state.json")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic(path) as tmp:
            tmp.write_text('{"step": ')
            raise RuntimeError("crash mid-write")
    assert read_json(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_directory_is_replaced_whole(tmp_path):
    for step in (1, 2):
        with atomic(tmp_path / "adapter") as tmp:
            tmp.mkdir()
            write_json({"step": step}, tmp / "a.json")
            if step == 1:
                write_json({}, tmp / "only_in_the_first.json")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["a.json"]
    assert read_json(tmp_path / "adapter" / "a.json") == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_tensors_round_trip_and_tied_weights_are_stored_once(tmp_path):
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    model[1].weight = model[0].weight  # tied, as an LM's embedding and head
    save_tensors(model, tmp_path / "m.safetensors")
    assert len(load_tensors(tmp_path / "m.safetensors")) == 1
    fresh = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    fresh[1].weight = fresh[0].weight
    assert load_module(fresh, tmp_path / "m.safetensors") == ([], [])
    assert torch.equal(fresh[1].weight, model[1].weight)


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.unlink(), "does not exist"),
    (lambda p: p.write_bytes(b""), "corrupt"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "corrupt"),
])
def test_missing_or_torn_tensor_files_name_the_file(tmp_path, damage, words):
    path = save_tensors({"w": torch.ones(64, 64)}, tmp_path / "w.safetensors")
    damage(path)
    for load in (load_tensors, lambda p: load_module(torch.nn.Linear(64, 64, bias=False), p)):
        with pytest.raises(CheckpointError, match=words) as info:
            load(path)
        assert str(path) in str(info.value)


def test_a_file_of_another_model_is_refused_by_name(tmp_path):
    path = save_tensors(torch.nn.Linear(4, 4), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="does not match"):
        load_module(torch.nn.Linear(4, 8), path)
    with pytest.raises(CheckpointError, match="does not match"):
        load_module(torch.nn.Linear(4, 4, bias=False), path)
    assert load_module(torch.nn.Linear(4, 4, bias=False), path, strict=False) == ([], ["bias"])


@pytest.mark.parametrize("text", ["[1, 2]", "", "{", "\udcff"])
def test_json_that_is_not_an_object_names_the_file(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(CheckpointError, match="config.json is not a valid policy config"):
        read_json(path, "policy config")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_json(tmp_path / "nowhere.json")


def test_a_write_that_cannot_happen_is_a_checkpoint_error_naming_the_file(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(CheckpointError, match=str(tmp_path / "file" / "x.json")):
        write_json({}, tmp_path / "file" / "x.json")
