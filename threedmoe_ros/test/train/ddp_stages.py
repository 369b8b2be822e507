"""Run under `accelerate launch --multi_gpu --num_processes 2` (the stages run with device cpu, over gloo): a few steps of Stage I, Stage II and Pose-DiT
through the one training loop, then every process writes a digest of its weights, so the test that
launches it can check that data-parallel processes end identical.

    accelerate launch --multi_gpu --num_processes 2 ddp_stages.py OUT
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState

sys.path.insert(0, str(Path(__file__).parent))
from qa_scenes import TINY, write_qa_scenes  # noqa: E402

from threedmoe_ros.data.synthetic import SyntheticPickPlace  # noqa: E402
from threedmoe_ros.models.pose_dit import PoseDiTConfig  # noqa: E402
from threedmoe_ros.policy import PolicyConfig  # noqa: E402
from threedmoe_ros.train import pose_dit  # noqa: E402
from threedmoe_ros.train.stage1 import StageConfig, train  # noqa: E402


def digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(out: Path) -> None:
    state = PartialState(cpu=True)
    qa = out / "qa"
    if state.is_main_process:
        write_qa_scenes(qa)
    state.wait_for_everyone()
    common = dict(max_steps=3, batch_size=1, lr=1e-2, warmup_steps=1, device="cpu", log_every=1)
    s1 = train(StageConfig(out=str(out / "s1"), data=str(qa), stage=1, model=TINY, **common), progress=False)
    s2 = train(StageConfig(out=str(out / "s2"), data=str(qa), stage=2, init=str(out / "s1/checkpoint"), **common),
               progress=False)
    cfg = pose_dit.TrainConfig(out=str(out / "pd"), synthetic=16, max_steps=3, batch_size=4, warmup_steps=1,
                               device="cpu", log_every=1)
    head = PoseDiTConfig(hidden_size=32, depth=1, horizon=4, output="pointer")
    policy = pose_dit.train(cfg, PolicyConfig(head=head), SyntheticPickPlace(16, seed=0), progress=False)
    digests = {"stage1": digest(s1), "stage2": digest(s2), "pose_dit": digest(policy),
               "processes": state.num_processes}
    (out / f"digest_{state.process_index}.json").write_text(json.dumps(digests))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
