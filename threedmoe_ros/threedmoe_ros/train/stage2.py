"""Stage II of 3D-MoE: instruction tuning on captions + QA with the MoE routers and LoRA trainable.

    threedmoe-train-stage2 --data data_out/qa --out runs/stage2 --init runs/stage1/checkpoint

ScanQA, SQA3D or LEO-style annotations instead of simulator QA (formats in data/external.py):

    threedmoe-train-stage2 --qa-format scanqa --qa-file ScanQA_v1.0_train.json
        --scenes scannet_clouds/ --eval-data ScanQA_v1.0_val.json --init runs/stage1/checkpoint  (one line)

Stage II of a different MoE preset (or dense) from one Stage I run: --init-encoder runs/stage1/checkpoint
--moe e2-top2 (only the 3D encoder is taken from the checkpoint).

Ablations that show what the 3D tokens are worth, trained and scored the same way otherwise:
--no-3d (the LLM gets the question without the 3D tokens) and --shuffle-3d (each question gets the
3D tokens of another scene of its batch). The gap between them and the full model is the evidence
that the model looks at the scene.

The loop, options and outputs are Stage I's (train/stage1.py); only what is trained differs
(ThreeDMoELLM.configure_stage(2): LoRA on attention and every expert, routers, the projection).
"""

from __future__ import annotations

from threedmoe_ros.train.stage1 import run_cli


def main(argv: list[str] | None = None) -> int:
    return run_cli(2, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
