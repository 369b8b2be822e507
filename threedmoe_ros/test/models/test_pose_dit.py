"""Pose-DiT: shapes, adaLN-Zero identity at init, the condition mask, and the cached-context path."""

from __future__ import annotations

import pytest
import torch

from threedmoe_ros.models.pose_dit import PoseDiT, PoseDiTConfig, STDiTBlock

SMALL = dict(hidden_size=64, num_heads=4, depth=2, horizon=6, pose_dim=5)
COND_DIM = 32  # the encoder's width, which a Policy passes


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values, so zero-initialised gates stop hiding mistakes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _inputs(B=3, T=6, K=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 2, SMALL["pose_dim"], generator=g)
    t = torch.rand(B, generator=g)
    cond = torch.randn(B, K, COND_DIM, generator=g)
    mask = torch.ones(B, K, dtype=torch.bool)
    mask[1, 3:] = False
    return x, t, cond, mask


def test_output_shapes_for_full_and_short_horizons():
    model = PoseDiT(PoseDiTConfig(**SMALL), COND_DIM)
    for T in (6, 3):
        x, t, cond, mask = _inputs(T=T)
        out, logit = model(x, t, cond, mask)
        assert out.shape == (3, T, 2, 5) and logit.shape == (3, T)


def test_longer_than_horizon_is_refused():
    model = PoseDiT(PoseDiTConfig(**SMALL), COND_DIM)
    x, t, cond, mask = _inputs(T=7)
    with pytest.raises(ValueError, match="T<=6"):
        model(x, t, cond, mask)


def test_untrained_block_is_identity():
    torch.manual_seed(0)
    block = STDiTBlock(64, 4)
    torch.nn.init.zeros_(block.adaLN_modulation[-1].weight)
    torch.nn.init.zeros_(block.adaLN_modulation[-1].bias)
    x = torch.randn(2, 5, 2, 64)
    c = torch.randn(2, 64)
    cond = torch.randn(2, 7, 64)
    mask = torch.ones(2, 7, dtype=torch.bool)
    assert torch.equal(block(x, c, block.cross_attn.key_value(cond), mask), x)


def test_fresh_model_blocks_are_identity_and_head_outputs_zero():
    model = PoseDiT(PoseDiTConfig(**SMALL), COND_DIM)
    x, t, cond, mask = _inputs()
    ctx = model.context(cond, mask)
    h = torch.randn(3, 6, 2, 64)
    c = torch.randn(3, 64)
    for block, kv in zip(model.blocks, ctx.kv):
        assert torch.equal(block(h, c, kv, ctx.mask), h)
    out, logit = model(x, t, cond, mask)
    assert torch.count_nonzero(out) == 0 and torch.count_nonzero(logit) == 0


def test_masked_condition_tokens_do_not_change_the_output():
    model = _randomise(PoseDiT(PoseDiTConfig(**SMALL), COND_DIM)).eval()
    x, t, cond, mask = _inputs()
    out, logit = model(x, t, cond, mask)
    changed = cond.clone()
    changed[1, 3:] = 100.0  # only masked slots
    out2, logit2 = model(x, t, changed, mask)
    assert torch.allclose(out, out2, atol=1e-5) and torch.allclose(logit, logit2, atol=1e-5)
    changed[1, 0] = 100.0  # a real token: the output must notice
    assert not torch.allclose(out, model(x, t, changed, mask)[0], atol=1e-3)


def test_all_masked_condition_is_still_defined():
    model = _randomise(PoseDiT(PoseDiTConfig(**SMALL), COND_DIM))
    x, t, cond, _ = _inputs()
    out, logit = model(x, t, cond, torch.zeros(3, 5, dtype=torch.bool))
    assert torch.isfinite(out).all() and torch.isfinite(logit).all()


def test_context_path_equals_direct_path():
    model = _randomise(PoseDiT(PoseDiTConfig(**SMALL), COND_DIM)).eval()
    x, t, cond, mask = _inputs()
    direct = model(x, t, cond, mask)
    cached = model(x, t, model.context(cond, mask))
    assert torch.allclose(direct[0], cached[0]) and torch.allclose(direct[1], cached[1])


def test_steps_are_ordered_and_pick_differs_from_place():
    """Temporal position and pose role reach the output: permuting steps is not a no-op."""
    model = _randomise(PoseDiT(PoseDiTConfig(**SMALL), COND_DIM)).eval()
    x, t, cond, mask = _inputs()
    x[:] = x[:, :1, :1]  # every token the same pose
    out, _ = model(x, t, cond, mask)
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-4)  # step 0 vs step 1
    assert not torch.allclose(out[:, :, 0], out[:, :, 1], atol=1e-4)  # pick vs place


def test_every_parameter_gets_a_gradient():
    model = _randomise(PoseDiT(PoseDiTConfig(**SMALL), COND_DIM))
    x, t, cond, mask = _inputs()
    out, logit = model(x, t, cond, mask)
    (out.square().mean() + logit.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize(
    "kwargs, words",
    [(dict(hidden_size=100, num_heads=3), "divisible"), (dict(depth=0), "depth"), (dict(mlp_ratio=0.0), "mlp_ratio")],
)
def test_bad_config_is_refused_with_a_reason(kwargs, words):
    with pytest.raises(ValueError, match=words):
        PoseDiTConfig(**kwargs)


@pytest.mark.parametrize("pool", [True, False])
def test_frozen_head_gives_the_same_outputs_for_any_condition_length(pool):
    from threedmoe_ros.serving import FrozenPoseDiT

    model = _randomise(PoseDiT(PoseDiTConfig(**SMALL, pool_condition=pool), COND_DIM)).eval()
    frozen = FrozenPoseDiT(model)
    with torch.no_grad():
        for K in (1, 5, 9):
            g = torch.Generator().manual_seed(K)
            x, t = torch.randn(1, 6, 2, 5, generator=g), torch.rand(1, generator=g)
            cond = torch.randn(1, K, 32, generator=g)
            mask = torch.ones(1, K, dtype=torch.bool)
            mask[0, K // 2 + 1 :] = False
            ctx = model.context(cond, mask)
            for a, b in zip(model(x, t, ctx), frozen(x, t, frozen.context(cond, mask))):
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)  # oneDNN sums in another order
