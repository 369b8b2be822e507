"""ScanQA, SQA3D and LEO-style annotation files as Stage II items, with clouds from a user's scene directory.

The 3D-MoE paper tunes Stage II on ScanQA, SQA3D and LEO-instruct (and aligns on LEO-align). Their
annotations are public; their point clouds come from ScanNet / 3RScan under those sets' own terms,
so a user points us at clouds they prepared. Formats read (the public releases' field names):

ScanQA  (ScanQA_v1.0_{train,val}.json): a JSON list of
    {"question_id", "scene_id", "question", "answers": [str, ...], "object_ids", "object_names"}
    (the test files have no "answers": they cannot be trained or scored on and are refused).
SQA3D   two files per split, joined on question_id:
    v1_balanced_questions_<split>_scannetv2.json   {"questions": [{"question_id", "scene_id", "situation",
                                                     "question", "alternative_situation", "position", "rotation"}]}
    v1_balanced_sqa_annotations_<split>_scannetv2.json {"annotations": [{"question_id", "answers": [{"answer"}]}]}
    Give the questions file; the annotations file is found beside it by that name (or pass it).
    The situation is part of the prompt: "{situation} {question}", as SQA3D's baselines read it.
LEO     LEO-instruct / LEO-align style JSON: a list of records, or {scene_id: [records]}, each with
    a scene ("scene_id" | "scan_id" | "source", where a source "scannet.scene0000_00" names the scene
    after its dataset prefix), a prompt ("question" | "instruction" | "prompt"), and the target
    ("answers" list | "answer" | "response" | "caption" | "utterance"). Records of LEO's releases differ
    per task; these are the names they use, and a record with none of them is an error naming it.

Scene directory (--scenes): one file per scene id, the first found of
    <scene_id>.npz   arrays xyz (N,3), rgb (N,3) 0–255, label (N,) instance id, 0 = background (what
                     python -m threedmoe_ros.data.qa writes);
    <scene_id>.npy   an (N, 6+) array: x y z r g b [label]; rgb 0–255 or 0–1; label as for .npz;
    <scene_id>.pth   LEO / 3D-VisTA preprocessing (pcd_with_global_alignment): a tuple
                     (xyz, rgb, semantic_label, instance_label) or (xyz, rgb, instance_label), rgb 0–255;
                     instance ids start at 0 with negative for unannotated points, so they are shifted
                     by one (negative → 0, background) into our convention.
Object tokens need instance labels (DESIGN.md §1); a cloud without them falls back to FPS patches.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from threedmoe_ros.types import Cloud

FORMATS = ("scanqa", "sqa3d", "leo")
SCENE_SUFFIXES = (".npz", ".npy", ".pth")
_SCENE_KEYS = ("scene_id", "scan_id", "source")
_PROMPT_KEYS = ("question", "instruction", "prompt")
_ANSWER_KEYS = ("answers", "answer", "response", "caption", "utterance")


@dataclass
class QAItem:
    """One question about one scene, with every reference answer (training uses the first)."""

    scene_id: str
    question: str
    answers: list[str]
    question_id: str = ""


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def _field(record: dict, key: str, path: Path, where: str):
    if not isinstance(record, dict):
        raise ValueError(f"{path}: {where} is a {type(record).__name__}, expected an object with field {key!r}")
    if key not in record:
        raise ValueError(f"{path}: {where} has no field {key!r} (fields: {sorted(record)})")
    return record[key]


def _answers(value, path: Path, where: str) -> list[str]:
    """A list of strings, or SQA3D's list of {"answer": str}; never empty."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{path}: {where} field 'answers' must be a non-empty list, got {value!r}")
    out = [a["answer"] if isinstance(a, dict) and "answer" in a else a for a in value]
    if not all(isinstance(a, str) and a.strip() for a in out):
        raise ValueError(f"{path}: {where} field 'answers' holds a non-string or empty answer: {value!r}")
    return [a.strip() for a in out]


def read_scanqa(path: str | Path) -> list[QAItem]:
    """ScanQA_v1.0_<split>.json → items; every answer of a question is a reference."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: a ScanQA file is a JSON list of questions, got a {type(data).__name__}")
    items = []
    for i, rec in enumerate(data):
        where = f"question {i}"
        if isinstance(rec, dict) and "answers" not in rec and "question" in rec:
            raise ValueError(f"{path}: {where} has no field 'answers' (ScanQA's test files have none; "
                             "use the train or val file)")
        items.append(QAItem(str(_field(rec, "scene_id", path, where)), str(_field(rec, "question", path, where)),
                            _answers(_field(rec, "answers", path, where), path, where),
                            str(rec.get("question_id", i))))
    return items


def sqa3d_annotations_path(questions: Path) -> Path:
    """v1_balanced_questions_train_scannetv2.json → v1_balanced_sqa_annotations_train_scannetv2.json."""
    if "questions" not in questions.name:
        raise ValueError(f"{questions}: an SQA3D questions file is named v1_balanced_questions_<split>_scannetv2.json; "
                         "pass the annotations file explicitly")
    return questions.with_name(questions.name.replace("_questions_", "_sqa_annotations_", 1)
                               if "_questions_" in questions.name else questions.name.replace("questions", "annotations", 1))


def read_sqa3d(questions: str | Path, annotations: str | Path | None = None) -> list[QAItem]:
    """SQA3D questions + annotations joined on question_id; the prompt carries the situation."""
    questions = Path(questions)
    annotations = Path(annotations) if annotations else sqa3d_annotations_path(questions)
    qs = _field(_read_json(questions), "questions", questions, "the top level")
    ans = _field(_read_json(annotations), "annotations", annotations, "the top level")
    by_id = {}
    for i, rec in enumerate(ans):
        where = f"annotation {i}"
        by_id[_field(rec, "question_id", annotations, where)] = _answers(_field(rec, "answers", annotations, where),
                                                                          annotations, where)
    items = []
    for i, rec in enumerate(qs):
        where = f"question {i}"
        qid = _field(rec, "question_id", questions, where)
        if qid not in by_id:
            raise ValueError(f"{questions}: {where} (question_id {qid}) has no entry in {annotations}")
        situation = str(_field(rec, "situation", questions, where)).strip()
        question = str(_field(rec, "question", questions, where)).strip()
        items.append(QAItem(str(_field(rec, "scene_id", questions, where)), f"{situation} {question}".strip(),
                            by_id[qid], str(qid)))
    return items


def _first(rec: dict, keys: tuple[str, ...], path: Path, where: str, what: str):
    for key in keys:
        if isinstance(rec, dict) and key in rec:
            return rec[key]
    fields = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
    raise ValueError(f"{path}: {where} has no {what} field (one of {list(keys)}; it has {fields})")


def read_leo(path: str | Path) -> list[QAItem]:
    """LEO-instruct / LEO-align style records → items (see the module docstring for the field names)."""
    path = Path(path)
    data = _read_json(path)
    if isinstance(data, dict):  # {scene_id: [records]}: the scene is the key
        records = [({"scene_id": scene, **r} if isinstance(r, dict) else r) for scene, rs in data.items()
                   for r in (rs if isinstance(rs, list) else [rs])]
    elif isinstance(data, list):
        records = data
    else:
        raise ValueError(f"{path}: a LEO-style file is a JSON list of records or an object of scene → records")
    items = []
    for i, rec in enumerate(records):
        where = f"record {i}"
        scene = str(_first(rec, _SCENE_KEYS, path, where, "scene"))
        if "scene_id" not in rec and "scan_id" not in rec and "." in scene:
            scene = scene.split(".", 1)[1]  # "scannet.scene0000_00" → "scene0000_00"
        question = str(_first(rec, _PROMPT_KEYS, path, where, "prompt"))
        answers = _answers(_first(rec, _ANSWER_KEYS, path, where, "answer"), path, where)
        items.append(QAItem(scene, question, answers, str(rec.get("question_id", rec.get("id", i)))))
    return items


def _rgb_uint8(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.size and rgb.min() < 0:  # some pipelines store colours in [-1, 1]
        rgb = (rgb + 1) * 127.5
    elif rgb.size and rgb.max() <= 1.0:
        rgb = rgb * 255
    return np.clip(rgb, 0, 255).astype(np.uint8)


def load_scene(path: str | Path) -> Cloud:
    """One scene file (.npz / .npy / .pth, formats in the module docstring) → Cloud."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            if "xyz" not in z:
                raise ValueError(f"scene file {path} has no array 'xyz' (has {list(z.keys())})")
            return Cloud(z["xyz"], _rgb_uint8(z["rgb"]) if "rgb" in z else None, z["label"] if "label" in z else None)
    if path.suffix == ".npy":
        a = np.load(path)
        if a.ndim != 2 or a.shape[1] < 3:
            raise ValueError(f"scene file {path} holds an array of shape {a.shape}; expected (N, 6+): x y z r g b [label]")
        rgb = _rgb_uint8(a[:, 3:6]) if a.shape[1] >= 6 else None
        return Cloud(a[:, :3], rgb, a[:, 6].astype(np.int32) if a.shape[1] >= 7 else None)
    if path.suffix == ".pth":
        import torch

        # The user's own preprocessed scenes (numpy arrays inside a pickle), hence weights_only=False.
        obj = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(obj, dict):
            obj = tuple(obj[k] for k in ("xyz", "rgb", "label") if k in obj)
        if not isinstance(obj, (tuple, list)) or len(obj) < 2:
            raise ValueError(f"scene file {path} should hold (xyz, rgb[, semantic], instance), got {type(obj).__name__}")
        xyz, rgb = np.asarray(obj[0]), np.asarray(obj[1])
        label = None
        if len(obj) >= 3:
            inst = np.asarray(obj[-1]).astype(np.int64)
            label = np.where(inst >= 0, inst + 1, 0).astype(np.int32)  # LEO ids start at 0; negative = none
        return Cloud(xyz, _rgb_uint8(rgb), label)
    raise ValueError(f"scene file {path} has suffix {path.suffix!r}; expected one of {SCENE_SUFFIXES}")


def scene_path(scenes: Path, scene_id: str) -> Path | None:
    for suffix in SCENE_SUFFIXES:
        if (scenes / f"{scene_id}{suffix}").is_file():
            return scenes / f"{scene_id}{suffix}"
    return None


class ExternalQADataset(Sequence):
    """(Cloud, question, first answer) items of an external set; `references(i)` gives every answer."""

    def __init__(self, items: Sequence[QAItem], scenes: str | Path, source: str = "", cache_scenes: int = 64):
        self.items = list(items)
        self.scenes = Path(scenes)
        if not self.scenes.is_dir():
            raise FileNotFoundError(f"scene directory {self.scenes} does not exist")
        self.paths: dict[str, Path] = {}
        missing = []
        for scene_id in dict.fromkeys(it.scene_id for it in self.items):
            p = scene_path(self.scenes, scene_id)
            if p is None:
                missing.append(scene_id)
            else:
                self.paths[scene_id] = p
        if missing:  # fail before training, not an hour into it
            raise FileNotFoundError(
                f"{len(missing)} scenes of {source or 'the annotations'} have no cloud in {self.scenes} "
                f"(looked for <scene_id>{{{','.join(SCENE_SUFFIXES)}}}), e.g. {missing[:3]}")
        # ScanNet clouds are large; keep the recently used ones only.
        self.cloud = functools.lru_cache(maxsize=cache_scenes)(lambda scene_id: load_scene(self.paths[scene_id]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Cloud, str, str]:
        item = self.items[index]
        return self.cloud(item.scene_id), item.question, item.answers[0]

    def references(self, index: int) -> list[str]:
        return self.items[index].answers


def load_qa(fmt: str, qa_file: str | Path, scenes: str | Path, annotations: str | Path | None = None) -> ExternalQADataset:
    """The items of a ScanQA / SQA3D / LEO annotation file with clouds from `scenes`."""
    if fmt == "scanqa":
        items = read_scanqa(qa_file)
    elif fmt == "sqa3d":
        items = read_sqa3d(qa_file, annotations)
    elif fmt == "leo":
        items = read_leo(qa_file)
    else:
        raise ValueError(f"unknown QA format {fmt!r}; choose one of {FORMATS}")
    return ExternalQADataset(items, scenes, source=str(qa_file))
