"""Rectified flow and DDPM/DDIM: one face, seeded sampling, and that training recovers a
two-mode distribution, conditioned on a token or (with the condition masked) as a mixture."""

from __future__ import annotations

import pytest
import torch

from threedmoe_ros.models.pose_dit import PoseDiT, PoseDiTConfig
from threedmoe_ros.models.schedulers import DDPM, RectifiedFlow, make_scheduler

T, D, MODE = 3, 2, 0.5
CFG = PoseDiTConfig(pose_dim=D, horizon=T, hidden_size=64, depth=1, num_heads=4)
COND_DIM = 4


def toy_batch(n: int, g: torch.Generator, which: str = "any"):
    """Mode m = ±1 picks the plan: every pose is m·0.5 (+ small noise) and the plan has 3 steps
    when m = +1, 1 step when m = −1. The condition token says m; a masked condition says nothing."""
    m = torch.randint(0, 2, (n,), generator=g) * 2 - 1 if which != "+" else torch.ones(n, dtype=torch.long)
    if which == "-":
        m = -torch.ones(n, dtype=torch.long)
    cond = torch.zeros(n, 1, 4)
    cond[:, 0, 0] = m.float()
    mask = torch.ones(n, 1, dtype=torch.bool)
    if which in ("any", "masked"):
        mask[:, 0] = torch.rand(n, generator=g) < 0.5 if which == "any" else False
    valid = torch.zeros(n, T, dtype=torch.bool)
    valid[:, 0] = True
    valid[m > 0] = True
    x = MODE * m.float().view(n, 1, 1, 1) + 0.05 * torch.randn(n, T, 2, D, generator=g)
    x = torch.where(valid[..., None, None], x, torch.zeros_like(x))
    return x, cond, mask, valid


def train(scheduler, steps: int = 300, seed: int = 0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = PoseDiT(CFG, COND_DIM)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        x, cond, mask, valid = toy_batch(128, g)
        loss, info = scheduler.loss(model, x, cond, mask, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(info["denoise"])
    return model.eval(), losses


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small ops on a shared 2-core machine: one thread is several times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rf_model(one_thread):
    with torch.random.fork_rng():
        return train(RectifiedFlow())


@pytest.fixture(scope="module")
def ddpm_model(one_thread):
    with torch.random.fork_rng():
        return train(DDPM())


def _check_conditioned(scheduler, model, steps=None):
    g = torch.Generator().manual_seed(1)
    for which, sign, n_valid in (("+", 1, 3), ("-", -1, 1)):
        _, cond, mask, _ = toy_batch(256, g, which)
        x, logit = scheduler.sample(model, cond, mask, steps, torch.Generator().manual_seed(2))
        assert x.shape == (256, T, 2, D) and logit.shape == (256, T)
        assert abs(x[:, :n_valid].mean().item() - sign * MODE) < 0.1
        expected = torch.arange(T) < n_valid
        assert ((logit > 0) == expected).all(dim=1).float().mean() > 0.9


def test_flow_loss_falls_and_samples_follow_the_condition(rf_model):
    model, losses = rf_model
    assert sum(losses[-50:]) / 50 < 0.5 * sum(losses[:10]) / 10
    _check_conditioned(RectifiedFlow(), model)


def test_flow_samples_both_modes_when_the_condition_is_masked(rf_model):
    model, _ = rf_model
    _, cond, mask, _ = toy_batch(512, torch.Generator().manual_seed(3), "masked")
    x, _ = RectifiedFlow().sample(model, cond, mask, 4, torch.Generator().manual_seed(4))
    first = x[:, 0].mean(dim=(1, 2))  # (512,) the first step is valid in both modes
    near_mode = ((first.abs() - MODE).abs() < 0.2).float().mean()
    plus = (first > 0).float().mean()
    assert near_mode > 0.8, f"only {near_mode:.2f} of samples near a mode"
    assert 0.3 < plus < 0.7, f"mode balance {plus:.2f}"


@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("ddim", 10)])
def test_ddpm_and_ddim_learn_the_same_task(ddpm_model, sampler, steps):
    model, losses = ddpm_model
    assert sum(losses[-50:]) / 50 < 0.5 * sum(losses[:10]) / 10
    _check_conditioned(DDPM(sampler=sampler), model, steps)


@pytest.mark.parametrize(
    "scheduler", [RectifiedFlow(), DDPM(), DDPM(sampler="ddim")], ids=["rf", "ddpm", "ddim"]
)
def test_same_face_and_sampling_is_deterministic_for_a_seed(scheduler):
    torch.manual_seed(0)
    model = PoseDiT(CFG, COND_DIM)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x, cond, mask, valid = toy_batch(4, torch.Generator().manual_seed(0))
    loss, info = scheduler.loss(model, x, cond, mask, valid)
    assert loss.ndim == 0 and {"loss", "denoise", "validity"} <= set(info)
    a = scheduler.sample(model, cond, mask, generator=torch.Generator().manual_seed(7))
    b = scheduler.sample(model, cond, mask, generator=torch.Generator().manual_seed(7))
    c = scheduler.sample(model, cond, mask, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0], c[0])


def test_rf_times_lie_on_the_training_grid():
    for sampling in ("uniform", "logit_normal"):
        t = RectifiedFlow(timestep_sampling=sampling).sample_t(10_000)
        assert t.min() >= 0 and t.max() <= 0.99
        assert torch.allclose(t * 100, (t * 100).round(), atol=1e-4)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="timestep_sampling"):
        RectifiedFlow(timestep_sampling="cosine")
    with pytest.raises(ValueError, match="sampler"):
        DDPM(sampler="euler")
    with pytest.raises(ValueError, match="ddim"):
        DDPM().sample(PoseDiT(CFG, COND_DIM), torch.zeros(1, 1, 4), None, steps=10)
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("flow_matching")


def test_zero_or_none_steps_mean_the_schedulers_own():
    """The one resolver of sampling steps: a caller passes on what its user gave, and 0 or None is the
    checkpoint's own count, which a DDPM checkpoint needs (ancestral sampling runs every step)."""
    assert RectifiedFlow().inference_steps(None) == RectifiedFlow().inference_steps(0) == 4
    assert RectifiedFlow().inference_steps(10) == 10
    assert DDPM().inference_steps(0) == DDPM().inference_steps(None) == 100
    assert DDPM(sampler="ddim").inference_steps(0) == 10 and DDPM(sampler="ddim").inference_steps(25) == 25
    for scheduler, steps, words in [(RectifiedFlow(), -1, "positive int"), (RectifiedFlow(), 2.5, "positive int"),
                                    (RectifiedFlow(), True, "positive int"), (DDPM(), 4, "ddim"),
                                    (DDPM(sampler="ddim"), 101, "at most")]:
        with pytest.raises(ValueError, match=words):
            scheduler.inference_steps(steps)
    x, _ = DDPM().sample(PoseDiT(CFG, COND_DIM), torch.zeros(1, 1, 4), None, steps=0, generator=torch.Generator().manual_seed(0))
    assert x.shape == (1, T, 2, D)
