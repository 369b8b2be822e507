"""The pointer output of Pose-DiT: each pose is an anchor (an object's top face or a table-grid
point) plus a bounded offset, so decoded poses sit on objects or inside the workspace whatever the
network outputs, training points at the object a demonstrated pose belongs to, and the pointer
learns to copy an object's position that the plain regression head only approximates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from threedmoe_ros.data.synthetic import SyntheticPickPlace
from threedmoe_ros.models.condition import Condition
from threedmoe_ros.models.pose_dit import PoseDiT, PoseDiTConfig
from threedmoe_ros.planner import Planner
from threedmoe_ros.policy import Policy, PolicyConfig
from threedmoe_ros.train.pose_dit import collate_plans
from threedmoe_ros.workspace import inside_workspace

HEAD = dict(hidden_size=64, num_heads=4, depth=2, horizon=4, output="pointer")


def _policy(**head) -> Policy:
    return Policy(PolicyConfig(head=PoseDiTConfig(**{**HEAD, **head})))


@pytest.mark.parametrize("extreme", [0.0, 1e6, -1e6])
def test_decoded_poses_stay_inside_the_workspace_for_any_network_output(extreme):
    """Random weights, and offsets and anchor scores driven to ±1e6: every pose is still a finite
    pose inside the workspace with a unit quaternion."""
    torch.manual_seed(0)
    policy = _policy()
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(torch.randn_like(p))
        if extreme:
            policy.head.pointer.delta[-1].bias.fill_(extreme)
            policy.head.pointer.query.weight.mul_(abs(extreme))
    planner = Planner(policy, frozen=False)
    for i in range(4):
        cloud, text, _ = SyntheticPickPlace(4, seed=i)[i]
        poses, _ = planner.sample(policy.condition([cloud], [text]), 4, torch.Generator().manual_seed(i))
        assert torch.isfinite(poses).all()
        assert inside_workspace(poses[..., :3].numpy()).all()
        np.testing.assert_allclose(poses[..., 3:].norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_an_untrained_pointer_lands_exactly_on_an_anchor():
    """Zero-initialised offsets: every decoded position is an object's top-face centre or a grid point."""
    policy = _policy().eval()
    cloud, text, _ = SyntheticPickPlace(1, seed=3)[0]
    cond = policy.condition([cloud], [text])
    ctx = policy.head.context(cond)
    x, _ = policy.scheduler.sample(policy.head, cond, None, 4, torch.Generator().manual_seed(0))
    d = (x[0, ..., None, :3] - ctx.anchor_pos[0]).abs().amax(-1).amin(-1)  # (T, 2) distance to the nearest anchor
    assert d.max() < 1e-5


def test_training_points_picks_at_the_block_and_places_at_the_zone():
    policy = _policy()
    ds = SyntheticPickPlace(16, seed=1)
    batch = collate_plans([ds[i] for i in range(16)], 4)
    cond = policy.condition(batch["clouds"], batch["instructions"])
    ctx = policy.head.context(cond)
    target = policy.head.pointer.assign(policy.codec.encode(batch["plan"]), ctx)  # (B, T, 2)
    K = cond.tokens.shape[1]
    for b, (cloud, _, plan) in enumerate(ds[i] for i in range(16)):
        for s, step in enumerate(plan):
            pick, place = target[b, s].tolist()
            assert pick < K and place < K, "picks and zone places belong to an object token"
            # The pick's anchor is the block it touches (synthetic blocks are 64 random points, so their
            # top-face centre is only known to about a centimetre).
            anchor = cond.anchors[b, pick, :2].numpy()
            world = policy.codec.low[:2].numpy() + (anchor + 1) / 2 * (policy.codec.high - policy.codec.low)[:2].numpy()
            assert np.linalg.norm(world - step[0, :2]) < 0.015


def test_pointer_copies_positions_the_plain_head_only_approximates():
    """Same data, same budget: the pointer's picks land far closer to the demonstrated ones."""
    torch.manual_seed(0)
    ds = SyntheticPickPlace(64, seed=2)
    errors = {}
    for output in ("pointer", "direct"):
        policy = _policy(output=output)
        opt = torch.optim.AdamW(policy.parameters(), lr=2e-3)
        g = np.random.default_rng(0)
        for _ in range(120):
            batch = collate_plans([ds[int(i)] for i in g.integers(0, 64, 16)], 4)
            loss, _ = policy(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        planner = Planner(policy, frozen=False)
        err = []
        for i in range(16):
            cloud, text, plan = ds[i]
            poses, _ = planner.sample(policy.condition([cloud], [text]), 4, torch.Generator().manual_seed(i))
            err.append(np.linalg.norm(poses[0, 0, 0, :2].numpy() - plan[0, 0, :2]))
        errors[output] = float(np.median(err))
    assert errors["pointer"] < 0.01, errors  # within a centimetre of the block's centre
    assert errors["pointer"] < errors["direct"] / 2, errors


def test_pointer_needs_anchors_and_says_so():
    head = PoseDiT(PoseDiTConfig(**HEAD), cond_dim=128)
    with pytest.raises(ValueError, match="anchors"):
        head.context(Condition(torch.zeros(1, 3, 128), torch.ones(1, 3, dtype=torch.bool)))
