"""Run under `accelerate launch --multi_gpu --num_processes 2` (device cpu, over gloo): a few steps of Pose-DiT on
the light encoder and on the lm encoder with a trained 3D-MoE top (experts, LoRA and routers over cached lower
states) through the one training loop, then every process writes a digest of its weights, so the test that
launches it can check that data-parallel processes end identical. test_loop.py imports TOP and with_alignment.

    accelerate launch --multi_gpu --num_processes 2 ddp_stages.py OUT
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from threedmoe_ros.data.synthetic import SyntheticPickPlace
from threedmoe_ros.models.pose_dit import PoseDiTConfig
from threedmoe_ros.policy import PolicyConfig
from threedmoe_ros.train import pose_dit

# TrainConfig fields of an lm policy on the tiny LM whose one top layer is upcycled to 2 experts with LoRA.
TOP = {"encoder": "lm", "lm_llm": "tiny", "lm_layer": 2, "lm_tune_layers": 1, "lm_moe": "e2-top2", "lm_lora": "tiny"}


def with_alignment(data: SyntheticPickPlace) -> SyntheticPickPlace:
    """`data` carrying the objects and words the lm encoder's alignment is fitted on (as a compact file of
    --export-inputs does), so training needs no simulator scenes: the objects of the data's own clouds."""
    from threedmoe_ros.models.light_encoder import object_inputs
    from threedmoe_ros.models.lm_condition import LMConditionConfig

    light = LMConditionConfig(llm="tiny", layer=2).light_config()
    features = np.concatenate([object_inputs(data[i][0], light).features for i in range(len(data))])
    words = ["red block", "blue bowl", "green zone"]
    data.alignment = (features, [words[i % len(words)] for i in range(len(features))])
    return data


def digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(out: Path) -> None:
    from accelerate import PartialState

    state = PartialState(cpu=True)
    common = dict(synthetic=16, max_steps=3, batch_size=4, warmup_steps=1, device="cpu", log_every=1)
    head = PoseDiTConfig(hidden_size=32, depth=1, horizon=4, output="pointer")
    policy = pose_dit.train(pose_dit.TrainConfig(out=str(out / "pd"), **common), PolicyConfig(head=head),
                            SyntheticPickPlace(16, seed=0), progress=False)
    top = pose_dit.train(pose_dit.TrainConfig(out=str(out / "top"), lr=1e-2, **common, **TOP), PolicyConfig(head=head),
                         with_alignment(SyntheticPickPlace(16, seed=0)), progress=False)
    digests = {"pose_dit": digest(policy), "top": digest(top), "processes": state.num_processes}
    (out / f"digest_{state.process_index}.json").write_text(json.dumps(digests))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
