"""A small policy with random weights, shared by the policy and planner tests."""

from __future__ import annotations

import torch

from threedmoe_ros.models.pose_dit import PoseDiTConfig
from threedmoe_ros.policy import Policy, PolicyConfig

SMALL_HEAD = PoseDiTConfig(hidden_size=64, depth=2, num_heads=4, horizon=4)
SMALL = dict(head=SMALL_HEAD, encoder_config={"dim": 32, "layers": 1})
INSTRUCTION = "put the red block in the green zone"


def small_policy(seed: int = 0) -> Policy:
    """Random weights everywhere (zero-initialised output layers would make every plan alike), every step valid."""
    policy = Policy(PolicyConfig(**SMALL))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        policy.head.final_layer.validity.bias.fill_(5.0)  # every step valid, so plans are not empty
    return policy.eval()
