"""Small QA data for the training tests (and the multi-process script they launch): two scenes of
box-shaped objects with captions and questions, written as a qa.jsonl directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from threedmoe_ros.data.qa import QA, SceneObject, scene_caption, scene_questions

TINY = {"llm": "tiny", "system_prompt": "You see a tabletop.",
        "point_encoder": {"points_per_object": 64, "sa_npoints": [16, 4], "sa_nsample": [8, 4],
                          "sa_widths": [[16], [32], [32]], "hidden_dim": 32, "num_layers": 1, "num_heads": 2}}


def write_qa_scenes(root: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    for s in range(2):
        objects = [SceneObject(i + 1, "block", c, "medium", np.array([0.4 + 0.1 * i, 0.2 - 0.2 * i, 0.02]), 0.04)
                   for i, c in enumerate(["red", "blue", "green"][: 2 + s])]
        xyz = np.concatenate([o.position + rng.uniform(-0.02, 0.02, (100, 3)) for o in objects]).astype(np.float32)
        label = np.repeat([o.label for o in objects], 100).astype(np.int32)
        np.savez(root / f"scenes/{s}.npz", xyz=xyz, rgb=rng.integers(0, 255, (len(xyz), 3), dtype=np.uint8), label=label)
        qas = [QA("Describe the scene.", scene_caption(objects, rng), "caption")] + scene_questions(objects, rng, 3)
        lines += [{"scene": f"scenes/{s}.npz", "question": q.question, "answer": q.answer, "kind": q.kind} for q in qas]
    (root / "qa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root
