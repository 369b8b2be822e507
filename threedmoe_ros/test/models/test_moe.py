"""Upcycling keeps the dense function; routing, balance loss and shared storage behave as documented."""

from __future__ import annotations

import copy

import pytest
import torch
from _llm_cache import smollm2

from threedmoe_ros.models.llm import LORA_PRESETS, apply_lora, load_llm
from threedmoe_ros.models.moe import (
    MOE_PRESETS, Expert, MoEConfig, MoEFeedForward, count_parameters, moe_aux_loss, moe_layers, router_stats,
    set_token_mask, switch_balance_loss, upcycle_to_moe,
)


@pytest.fixture(scope="module")
def tiny():
    return load_llm("tiny")


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("preset", ["e2-top2", "e4-top2"])
def test_upcycled_tiny_equals_dense(tiny, preset):
    dense, tok = tiny
    cfg = MOE_PRESETS[preset]
    ids = torch.randint(0, len(tok), (2, 24), generator=torch.Generator().manual_seed(0))
    moe = upcycle_to_moe(copy.deepcopy(dense), cfg.num_experts, cfg.top_k)
    diff = (_logits(moe, ids) - _logits(dense, ids)).abs().max().item()
    print(f"tiny {preset}: max |Δlogit| = {diff:.3g}")
    assert diff <= 1e-5
    assert len(list(moe_layers(moe))) == dense.config.num_hidden_layers


@pytest.mark.parametrize("preset", ["e2-top2", "e4-top2"])
def test_upcycled_smollm2_equals_dense(preset):
    dense, tok = smollm2()
    cfg = MOE_PRESETS[preset]
    ids = tok(["Put the red block in the green bowl.", "Which object is left of the cup?"],
              return_tensors="pt", padding=True)["input_ids"]
    moe = upcycle_to_moe(copy.deepcopy(dense), cfg.num_experts, cfg.top_k)  # shared frozen experts
    ref, out = _logits(dense, ids), _logits(moe, ids)
    diff, scale = (out - ref).abs().max().item(), ref.abs().max().item()
    print(f"smollm2-135m {preset} fp32 shared dispatch: max |Δlogit| = {diff:.3g} (logit scale {scale:.3g})")
    assert diff <= 1e-5

    # The generic grouped dispatch (independent experts) multiplies row subsets. MKL picks sgemm
    # kernels by row count (thresholds near 16 and 64 rows at these shapes) and they round
    # differently, ~1 ulp per layer, which 30 layers amplify to ~1e-4 on logits of size ~30 when
    # E > k: float noise, not a routing error. fp32 gets a relative bound; fp64 shows the function
    # is the dense one.
    for _, layer in moe_layers(moe):
        layer.shared_dispatch = False
    diff = (_logits(moe, ids) - ref).abs().max().item()
    print(f"smollm2-135m {preset} fp32 grouped dispatch: max |Δlogit| = {diff:.3g}")
    assert diff <= 1e-5 * scale
    diff64 = (_logits(moe.double(), ids) - _logits(copy.deepcopy(dense).double(), ids)).abs().max().item()
    print(f"smollm2-135m {preset} fp64 grouped dispatch: max |Δlogit| = {diff64:.3g}")
    assert diff64 <= 1e-5


def test_shared_dispatch_equals_grouped_dispatch_with_lora(tiny):
    """The ~1×-dense path for shared experts computes the same function and gradients as running
    every expert's full FFN, once LoRA makes the experts differ."""
    model = apply_lora(upcycle_to_moe(copy.deepcopy(tiny[0]), 4, 2), LORA_PRESETS["tiny"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    ids = torch.randint(0, len(tiny[1]), (2, 10), generator=torch.Generator().manual_seed(0))
    results = []
    for shared in (True, False):
        for _, layer in moe_layers(model):
            layer.shared_dispatch = shared
        model.zero_grad()
        out = model(ids, labels=ids)
        (out.loss + moe_aux_loss(model)).backward()
        results.append((out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (la, ga), (lb, gb) = results
    assert torch.allclose(la, lb, atol=1e-5)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-6, rtol=1e-4), n
    # It is really taken only when the experts share a frozen base.
    from threedmoe_ros.models.moe import _shared_base

    _, layer = next(moe_layers(model))
    assert _shared_base(layer.experts) is not None
    unshared = upcycle_to_moe(copy.deepcopy(tiny[0]), 4, 2, share_frozen_experts=False)
    assert _shared_base(next(moe_layers(unshared))[1].experts) is None


def test_balance_loss_hand_computed():
    # E=2, top-1: tokens go to experts 0,0,1,0 → F = (3/4, 1/4); G = column means = (0.65, 0.35).
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    top_i = probs.topk(1, dim=-1).indices
    assert switch_balance_loss(probs, top_i, 2).item() == pytest.approx(2 * (0.75 * 0.65 + 0.25 * 0.35))  # 1.15
    # E=4, top-2, perfectly balanced: every expert gets one of the 4 assignments and mean prob 1/4 → 1.
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])
    assert switch_balance_loss(probs, probs.topk(2, -1).indices, 4).item() == pytest.approx(1.0)


def test_layer_aux_loss_and_stats_match_router():
    torch.manual_seed(0)
    layer = _moe_layer(d=8, e=4, k=2, share=False)
    x = torch.randn(3, 5, 8)
    layer(x)
    probs = torch.softmax(layer.router(x.reshape(-1, 8)), -1)
    top_i = probs.topk(2, -1).indices
    counts = torch.bincount(top_i.reshape(-1), minlength=4).float() / top_i.numel()
    expected = 4 * (counts * probs.mean(0)).sum()
    assert layer.aux_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(layer.last_stats.fraction, counts)
    assert layer.last_stats.num_tokens == 15
    assert 0 < layer.last_stats.entropy <= torch.log(torch.tensor(4.0)).item() + 1e-6
    # Padding left out of the loss: masking tokens changes the count.
    layer.token_mask = torch.ones(3, 5, dtype=torch.bool)
    layer.token_mask[:, 3:] = False
    layer(x)
    assert layer.last_stats.num_tokens == 9


def _moe_layer(d: int, e: int, k: int, share: bool) -> MoEFeedForward:
    def lin(i, o):
        return torch.nn.Linear(i, o, bias=False)

    base = [lin(d, 2 * d), lin(d, 2 * d), lin(2 * d, d)]
    experts = [Expert(*(base if share else [lin(d, 2 * d), lin(d, 2 * d), lin(2 * d, d)]), act_fn=torch.nn.SiLU())
               for _ in range(e)]
    return MoEFeedForward(experts, lin(d, e), top_k=k)


def test_grouped_dispatch_matches_per_token_reference():
    torch.manual_seed(1)
    layer = _moe_layer(d=8, e=4, k=2, share=False)
    x = torch.randn(2, 7, 8)
    out = layer(x)
    flat = x.reshape(-1, 8)
    probs = torch.softmax(layer.router(flat), -1)
    w, idx = probs.topk(2, -1)
    w = w / w.sum(-1, keepdim=True)
    ref = torch.stack([sum(w[n, j] * layer.experts[idx[n, j]](flat[n : n + 1])[0] for j in range(2))
                       for n in range(flat.shape[0])])
    assert torch.allclose(out.reshape(-1, 8), ref, atol=1e-6)


def test_shared_experts_share_storage_and_lora_is_per_expert(tiny):
    model = upcycle_to_moe(copy.deepcopy(tiny[0]), 4, 2)
    dense_count = count_parameters(tiny[0]).total
    assert count_parameters(model).total - dense_count == sum(m.router.weight.numel() for _, m in moe_layers(model))
    peft_model = apply_lora(model, LORA_PRESETS["tiny"])
    for _, moe in moe_layers(peft_model):
        for p in ("gate_proj", "up_proj", "down_proj"):
            lins = [getattr(ex, p) for ex in moe.experts]
            assert len({lin.base_layer.weight.data_ptr() for lin in lins}) == 1
            assert len({lin.lora_A["default"].weight.data_ptr() for lin in lins}) == 4


def test_unshared_experts_are_copies(tiny):
    model = upcycle_to_moe(copy.deepcopy(tiny[0]), 2, 2, share_frozen_experts=False)
    _, moe = next(moe_layers(model))
    assert moe.experts[0].up_proj.weight.data_ptr() != moe.experts[1].up_proj.weight.data_ptr()
    assert moe.experts[0].up_proj.weight.requires_grad
    assert torch.equal(moe.experts[0].up_proj.weight, moe.experts[1].up_proj.weight)


def test_gradients_reach_router_and_lora_never_frozen_weights(tiny):
    model = apply_lora(upcycle_to_moe(copy.deepcopy(tiny[0]), 4, 2), LORA_PRESETS["tiny"])
    # LoRA B starts at zero, so A gets no gradient on the first step; nudge B as one step of training would.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.01)
    ids = torch.randint(0, len(tiny[1]), (2, 12), generator=torch.Generator().manual_seed(0))
    out = model(ids, labels=ids)
    (out.loss + moe_aux_loss(model)).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("router" in n for n in trainable) and any("lora_A" in n for n in trainable)
    for n in trainable:
        assert grads[n] is not None and grads[n].abs().sum() > 0, n
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n


def test_every_other_layer_and_stats(tiny):
    model = upcycle_to_moe(copy.deepcopy(tiny[0]), 2, 1, layers="every_other")
    assert [i for i, _ in moe_layers(model)] == [1]
    assert model.config.moe["layers"] == [1]
    ids = torch.randint(0, len(tiny[1]), (1, 9))
    mask = torch.ones(1, 9, dtype=torch.bool)
    set_token_mask(model, mask)
    model(ids)
    stats = router_stats(model)
    assert list(stats) == [1] and stats[1].fraction.sum().item() == pytest.approx(1.0)
    assert moe_aux_loss(model).item() == pytest.approx(0.01 * next(moe_layers(model))[1].aux_loss.item())


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="top_k"):
        MoEConfig(num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="layers"):
        MoEConfig(layers="some")
    with pytest.raises(ValueError, match="already"):
        upcycle_to_moe(upcycle_to_moe(load_llm("tiny")[0], 2, 2), 2, 2)


def test_routing_tally_weights_by_tokens_and_plots(tiny, tmp_path):
    from threedmoe_ros.eval.routing import plot_routing
    from threedmoe_ros.models.moe import RoutingTally

    model = upcycle_to_moe(copy.deepcopy(tiny[0]), 4, 2)
    tally = RoutingTally()
    for length in (5, 15):
        model(torch.randint(0, len(tiny[1]), (1, length)))
        tally.update(model)
    stats = tally.stats()
    assert list(stats) == [0, 1] and stats[0].num_tokens == 20
    assert stats[0].fraction.sum().item() == pytest.approx(1.0)
    png = plot_routing(stats, tmp_path / "routing.png")
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_other_llama_family_models_upcycle_exactly(family):
    import transformers

    cls_cfg, cls_lm = {"qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM")}[family]
    config = getattr(transformers, cls_cfg)(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    dense = getattr(transformers, cls_lm)(config).eval()
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    moe = upcycle_to_moe(copy.deepcopy(dense), 4, 2)
    assert (_logits(moe, ids) - _logits(dense, ids)).abs().max().item() <= 1e-5
    peft_model = apply_lora(moe, LORA_PRESETS["tiny"])
    assert any("experts.3.down_proj.lora_A" in n for n, _ in peft_model.named_parameters())


@pytest.mark.parametrize("seed", range(6))
def test_dispatch_matches_reference_for_random_shapes(seed):
    """Grouped and shared dispatch equal a per-token reference for any E, k and token count."""
    g = torch.Generator().manual_seed(seed)
    e = int(torch.randint(1, 6, (1,), generator=g))
    k = int(torch.randint(1, e + 1, (1,), generator=g))
    n = int(torch.randint(1, 40, (1,), generator=g))
    torch.manual_seed(seed)
    dense = torch.nn.Module()
    dense.gate_proj, dense.up_proj, dense.down_proj = (torch.nn.Linear(8, 16), torch.nn.Linear(8, 16),
                                                       torch.nn.Linear(16, 8))  # with biases
    dense.act_fn = torch.nn.SiLU()
    shared = MoEFeedForward.from_dense(dense, e, k)
    x = torch.randn(1, n, 8)
    flat = x[0]
    probs = torch.softmax(shared.router(flat), -1)
    w, idx = probs.topk(k, -1)
    w = w / w.sum(-1, keepdim=True)
    ffn = shared.experts[0]
    ref = torch.stack([sum(w[t, j] * ffn(flat[t : t + 1])[0] for j in range(k)) for t in range(n)])
    out_shared = shared(x)[0]
    shared.shared_dispatch = False
    out_grouped = shared(x)[0]
    assert torch.allclose(out_shared, ref, atol=1e-5) and torch.allclose(out_grouped, ref, atol=1e-5)
