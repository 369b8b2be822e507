"""Dense → mixture-of-experts upcycling for Llama-family causal LMs (3D-MoE §3.2).

Each chosen decoder layer's SwiGLU FFN (gate_proj, up_proj, down_proj) is copied into E experts and a
softmax router W ∈ R^{D×E} picks the top-k experts per token; their outputs are mixed with the top-k
probabilities renormalised to sum to one. Because every expert starts as the same FFN and the mixing
weights sum to one, the upcycled model computes exactly the dense model's function at conversion,
whatever the router's initial weights (up to float rounding).

Memory: under LoRA the copied experts are frozen, so all E experts of a layer can point at ONE copy of
the dense weights and differ only by their LoRA deltas. Each expert still owns its own `nn.Linear`
modules (so peft wraps each one and gives it its own lora_A / lora_B); only the weight Parameter is
the same object. This is the default (`share_frozen_experts=True`). Full fine-tuning of experts needs
independent copies (`share_frozen_experts=False`); sharing and training the base weights would make
the experts one expert again.

Load balancing follows the Switch Transformer: loss = E · Σ_i F_i · G_i, where F_i is the fraction of
token→expert assignments that went to expert i (top-k assignments, so Σ F_i = 1) and G_i is the mean
router probability of expert i. It is 1 at perfect balance and E when one expert takes everything.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

FFN_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


@dataclass
class MoEConfig:
    """How to upcycle a dense LM.

    num_experts: E, experts per MoE layer (paper: 4).
    top_k: experts run per token (paper: 2); their weights are renormalised to sum to one.
    layers: decoder-layer indices to convert; "all" (paper), or "every_other" (odd layers, as MoE-LLaVA).
    share_frozen_experts: experts share one copy of the frozen dense weights (LoRA training). Set False
        only to fine-tune expert weights fully.
    aux_loss_coef: weight of the summed Switch balance loss added to the LM loss (Switch used 1e-2).
    router_init_std: std of the router's normal init; small so routing starts near uniform but not
        tied (exact ties would make top-k pick the same experts for every token).
    """

    num_experts: int = 4
    top_k: int = 2
    layers: str | tuple[int, ...] = "all"
    share_frozen_experts: bool = True
    aux_loss_coef: float = 0.01
    router_init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise ValueError(f"MoEConfig.num_experts must be ≥ 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"MoEConfig.top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        if isinstance(self.layers, str):
            if self.layers not in ("all", "every_other"):
                raise ValueError(f"MoEConfig.layers must be 'all', 'every_other' or indices, got {self.layers!r}")
        else:
            self.layers = tuple(int(i) for i in self.layers)
        if self.aux_loss_coef < 0:
            raise ValueError(f"MoEConfig.aux_loss_coef must be ≥ 0, got {self.aux_loss_coef}")

    def layer_indices(self, num_layers: int) -> list[int]:
        if self.layers == "all":
            return list(range(num_layers))
        if self.layers == "every_other":
            return list(range(1, num_layers, 2))
        bad = [i for i in self.layers if not -num_layers <= i < num_layers]
        if bad:
            raise ValueError(f"MoEConfig.layers {bad} out of range for a model with {num_layers} layers")
        return sorted({i % num_layers for i in self.layers})


# The paper's two configurations.
MOE_PRESETS: dict[str, MoEConfig] = {
    "e4-top2": MoEConfig(num_experts=4, top_k=2),
    "e2-top2": MoEConfig(num_experts=2, top_k=2),
}


@dataclass
class RouterStats:
    """Routing of one MoE layer in its last forward pass (detached, for analysis and plots).

    fraction: (E,) share of token→expert assignments per expert (sums to 1), Switch's F.
    mean_prob: (E,) mean router probability per expert, Switch's G.
    entropy: mean per-token entropy of the router distribution, nats (log E = uniform).
    num_tokens: tokens routed.
    """

    fraction: torch.Tensor
    mean_prob: torch.Tensor
    entropy: float
    num_tokens: int


def switch_balance_loss(probs: torch.Tensor, expert_index: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch Transformer load-balancing loss E · Σ_i F_i · G_i.

    probs: (N, E) router softmax; expert_index: (N, k) chosen experts. F counts the N·k assignments
    (not differentiable, as in Switch); G carries the gradient to the router.
    """
    counts = torch.bincount(expert_index.reshape(-1), minlength=num_experts).to(probs.dtype)  # (E,)
    fraction = counts / expert_index.numel()
    mean_prob = probs.mean(dim=0)  # (E,)
    return num_experts * torch.sum(fraction * mean_prob)


class Expert(nn.Module):
    """One SwiGLU FFN expert: down(act(gate(x)) · up(x)), the same function as LlamaMLP."""

    def __init__(self, gate_proj: nn.Linear, up_proj: nn.Linear, down_proj: nn.Linear, act_fn: nn.Module) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = gate_proj, up_proj, down_proj
        self.act_fn = act_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, D) -> (n, D)
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class MoEFeedForward(nn.Module):
    """Top-k routed mixture of SwiGLU experts, a drop-in replacement for a decoder layer's `mlp`.

    Dispatch is dropless and grouped: token→expert assignments are sorted by expert, and each expert
    runs over exactly its tokens (index_select in, index_copy back to token order), never a masked
    pass over the whole batch. Independent experts cost top_k × dense. Experts sharing one frozen
    base (the LoRA default) cost about one dense FFN plus their LoRA deltas, because the base
    matmuls are the same for every expert and run once (see _dispatch_shared).
    With top_k=1 the renormalised weight is 1, so the router learns only from the balance loss;
    the presets use top-2.
    """

    def __init__(self, experts: Sequence[Expert], router: nn.Linear, top_k: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.router = router  # Linear(D, E, bias=False): W ∈ R^{D×E}
        self.num_experts = len(self.experts)
        self.top_k = top_k
        # Filled on every forward; `aux_loss` keeps its graph so the training loop can add it.
        self.aux_loss: torch.Tensor | None = None
        self.last_stats: RouterStats | None = None
        # Optional (B, T) bool mask of real tokens, set by the caller for padded batches so padding
        # neither counts in the balance loss nor in the statistics. Routing itself ignores it.
        self.token_mask: torch.Tensor | None = None
        # Use the shared-base dispatch when the experts share their frozen weights (see
        # _dispatch_shared); False forces the generic grouped dispatch (benchmarks, tests).
        self.shared_dispatch = True

    @classmethod
    def from_dense(cls, mlp: nn.Module, num_experts: int, top_k: int, share_frozen_experts: bool = True,
                   router_init_std: float = 0.02) -> "MoEFeedForward":
        """E experts copied from a dense SwiGLU `mlp` (gate_proj, up_proj, down_proj, act_fn).

        With `share_frozen_experts` the dense weights are frozen and every expert points at them.
        """
        missing = [p for p in FFN_PROJECTIONS if not isinstance(getattr(mlp, p, None), nn.Linear)]
        if missing:
            raise ValueError(f"{type(mlp).__name__} lacks nn.Linear {missing}; not a SwiGLU FFN")
        if share_frozen_experts:
            for p in FFN_PROJECTIONS:
                getattr(mlp, p).requires_grad_(False)
        experts = [
            Expert(*(_linear_like(getattr(mlp, p), share_frozen_experts) for p in FFN_PROJECTIONS), act_fn=mlp.act_fn)
            for _ in range(num_experts)
        ]
        weight = mlp.gate_proj.weight
        router = nn.Linear(weight.shape[1], num_experts, bias=False, device=weight.device, dtype=weight.dtype)
        if weight.device.type != "meta":
            nn.init.normal_(router.weight, std=router_init_std)
        return cls(experts, router, top_k)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape  # (B, T, D)
        x = hidden_states.reshape(-1, shape[-1])  # (N, D)
        logits = self.router(x)  # (N, E)
        probs = F.softmax(logits, dim=-1, dtype=torch.float32)  # (N, E), fp32 for a stable softmax
        top_w, top_i = probs.topk(self.top_k, dim=-1)  # (N, k)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)

        # Group the N·k assignments by expert; each expert runs once over exactly its rows.
        flat_expert = top_i.reshape(-1)  # (N·k,)
        order = torch.argsort(flat_expert, stable=True)
        rows_sorted = order // self.top_k  # (N·k,) token row of each sorted assignment
        counts = torch.bincount(flat_expert, minlength=self.num_experts).tolist()
        w = top_w.to(x.dtype)  # (N, k)
        if self.shared_dispatch and (shared := _shared_base(self.experts)) is not None:
            out = self._dispatch_shared(x, shared, order, rows_sorted, counts, w)
        else:
            out = self._dispatch_grouped(x, order, rows_sorted, counts, w)
        self._record(probs, top_i, shape[:-1])
        return out.reshape(shape)

    def _dispatch_grouped(self, x, order, rows_sorted, counts, w) -> torch.Tensor:
        """Each expert runs its whole FFN on its rows: top_k × dense work. For independent experts."""
        y_sorted = x.new_empty(rows_sorted.shape[0], x.shape[-1])  # (N·k, D)
        start = 0
        for expert, count in zip(self.experts, counts):
            if count:
                rows = rows_sorted[start : start + count]  # (n_e,)
                y_sorted[start : start + count] = expert(x.index_select(0, rows))  # (n_e, D)
            start += count
        y = torch.empty_like(y_sorted).index_copy_(0, order, y_sorted).view(-1, self.top_k, x.shape[-1])  # (N, k, D)
        return _mix(y, w)

    def _dispatch_shared(self, x, base: tuple[nn.Linear, nn.Linear, nn.Linear], order, rows_sorted, counts, w):
        """Experts that share frozen base weights and differ by LoRA deltas: ~1 × dense work + LoRA.

        With W shared, gate/up pre-activations W_g·x and W_u·x are the same for every expert, so they
        are computed once for all N tokens; only the low-rank deltas run per expert. The down
        projection is linear, so Σ_j w_j·W_d·h_j = W_d·(Σ_j w_j·h_j): the hidden states are mixed
        first and W_d runs once, plus each expert's low-rank down delta on its rows.
        Every full-size matmul sees the same N rows as the dense FFN, so at conversion (LoRA B = 0)
        the result is the dense one bit for bit.
        """
        base_gate, base_up, base_down = base
        act = self.experts[0].act_fn
        g0, u0 = base_gate(x), base_up(x)  # (N, I) each
        h_sorted = x.new_empty(rows_sorted.shape[0], g0.shape[-1])  # (N·k, I)
        d_sorted: torch.Tensor | None = None  # (N·k, D) low-rank down deltas, if any expert has one
        start = 0
        for expert, count in zip(self.experts, counts):
            if count:
                seg = slice(start, start + count)
                rows = rows_sorted[seg]
                xe = x.index_select(0, rows)  # (n_e, D)
                g, u = g0.index_select(0, rows), u0.index_select(0, rows)
                if (dg := _lora_delta(expert.gate_proj, xe)) is not None:
                    g = g + dg
                if (du := _lora_delta(expert.up_proj, xe)) is not None:
                    u = u + du
                h = act(g) * u  # (n_e, I)
                h_sorted[seg] = h
                if (dd := _lora_delta(expert.down_proj, h)) is not None:
                    if d_sorted is None:
                        d_sorted = x.new_zeros(rows_sorted.shape[0], x.shape[-1])
                    d_sorted[seg] = dd
            start += count
        n, k = w.shape
        h = torch.empty_like(h_sorted).index_copy_(0, order, h_sorted).view(n, k, -1)  # (N, k, I)
        out = base_down(_mix(h, w))  # (N, D)
        if d_sorted is not None:
            d = torch.empty_like(d_sorted).index_copy_(0, order, d_sorted).view(n, k, -1)  # (N, k, D)
            out = out + (w[..., None] * d).sum(1)
        return out

    def _record(self, probs: torch.Tensor, top_i: torch.Tensor, lead_shape: torch.Size) -> None:
        mask = self.token_mask
        if mask is not None and tuple(mask.shape) == tuple(lead_shape):
            keep = mask.reshape(-1).to(probs.device, torch.bool)
            probs, top_i = probs[keep], top_i[keep]
        if probs.shape[0] == 0:
            self.aux_loss, self.last_stats = None, None
            return
        self.aux_loss = switch_balance_loss(probs, top_i, self.num_experts)
        with torch.no_grad():
            counts = torch.bincount(top_i.reshape(-1), minlength=self.num_experts).float()
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
            self.last_stats = RouterStats(
                fraction=(counts / top_i.numel()).cpu(),
                mean_prob=probs.mean(0).detach().cpu(),
                entropy=float(entropy),
                num_tokens=int(probs.shape[0]),
            )


def _mix(y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_j w_j·y_j over the k slots, y (N, k, C), w (N, k) → (N, C).

    Written as y_0 + Σ_{j≥1} w_j·(y_j − y_0): the same function (the renormalised weights sum to one),
    but exact when the experts agree, so the upcycled model reproduces the dense logits bit for bit
    instead of drifting by float rounding through every layer.
    """
    out = y[:, 0]
    for j in range(1, y.shape[1]):
        out = out + w[:, j, None] * (y[:, j] - y[:, 0])
    return out


def _base_linear(lin: nn.Module) -> nn.Module:
    return getattr(lin, "base_layer", lin)  # under peft the frozen nn.Linear is `base_layer`


def _lora_usable(lin: nn.Module) -> bool:
    """A plain nn.Linear, or a peft LoRA Linear in the plain state (unmerged, no DoRA/variants)."""
    if not hasattr(lin, "lora_A"):
        return isinstance(lin, nn.Linear)
    if getattr(lin, "merged", False) or getattr(lin, "disable_adapters", False):
        return False
    for name in lin.active_adapters:
        if getattr(lin, "use_dora", {}).get(name, False) or name in getattr(lin, "lora_variant", {}):
            return False
    return True


def _lora_delta(lin: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The LoRA update Σ_adapters s·B(A(dropout(x))) of a peft Linear; None for a plain Linear."""
    if not hasattr(lin, "lora_A"):
        return None
    out = None
    for name in lin.active_adapters:
        if name not in lin.lora_A:
            continue
        a, b = lin.lora_A[name], lin.lora_B[name]
        d = b(a(lin.lora_dropout[name](x.to(a.weight.dtype)))) * lin.scaling[name]
        out = d if out is None else out + d
    return None if out is None else out.to(x.dtype)


def _shared_base(experts: Sequence[nn.Module]) -> tuple[nn.Linear, nn.Linear, nn.Linear] | None:
    """The (gate, up, down) base Linears if every expert uses the very same frozen weights, else None."""
    first = tuple(_base_linear(getattr(experts[0], p)) for p in FFN_PROJECTIONS)
    if any(lin.weight.requires_grad for lin in first):
        return None  # trainable base weights: the experts must be independent copies
    for expert in experts:
        for p, ref in zip(FFN_PROJECTIONS, first):
            lin = getattr(expert, p)
            if not _lora_usable(lin) or _base_linear(lin).weight is not ref.weight or _base_linear(lin).bias is not ref.bias:
                return None
    return first


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder-layer list of a Hugging Face causal LM (also under a peft wrapper).

    Found by structure, not by class name, so Llama, SmolLM2, Qwen2 and Mistral all work: the first
    ModuleList whose items carry an `mlp`.
    """
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(hasattr(m, "mlp") for m in module):
            return module
    raise ValueError(f"{type(model).__name__} has no list of decoder layers with an `mlp`; is it a Llama-family LM?")


def _linear_like(src: nn.Linear, share: bool) -> nn.Linear:
    """A new nn.Linear computing `src`: pointing at src's Parameters (share) or holding a copy."""
    has_bias = src.bias is not None
    if share:
        # Built on the meta device so no memory is allocated for weights that are replaced at once.
        lin = nn.Linear(src.in_features, src.out_features, bias=has_bias, device="meta", dtype=src.weight.dtype)
        lin.weight = src.weight
        if has_bias:
            lin.bias = src.bias
        return lin
    lin = nn.Linear(src.in_features, src.out_features, bias=has_bias, device=src.weight.device, dtype=src.weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(src.weight)
        if has_bias:
            lin.bias.copy_(src.bias)
    return lin


def upcycle_to_moe(
    model: nn.Module,
    num_experts: int = 4,
    top_k: int = 2,
    layers: str | Sequence[int] = "all",
    share_frozen_experts: bool = True,
    aux_loss_coef: float = 0.01,
    router_init_std: float = 0.02,
) -> nn.Module:
    """Replace the FFN of the chosen decoder layers by MoEFeedForward with E copies of it, in place.

    Returns `model`. The settings are kept on `model.config.moe` (a dict; saved with config.json), so a
    checkpoint can rebuild the same structure. With `share_frozen_experts`, the dense FFN weights are
    frozen (requires_grad=False) and shared by every expert.
    """
    cfg = MoEConfig(num_experts, top_k, layers if isinstance(layers, str) else tuple(layers),
                    share_frozen_experts, aux_loss_coef, router_init_std)
    blocks = decoder_layers(model)
    chosen = cfg.layer_indices(len(blocks))
    for i in chosen:
        mlp = blocks[i].mlp
        if isinstance(mlp, MoEFeedForward):
            raise ValueError(f"decoder layer {i} is already a MoEFeedForward; upcycle a dense model")
        missing = [p for p in FFN_PROJECTIONS if not isinstance(getattr(mlp, p, None), nn.Linear)]
        if missing:
            raise ValueError(f"layer {i} mlp ({type(mlp).__name__}) lacks nn.Linear {missing}; not a SwiGLU FFN")
        blocks[i].mlp = MoEFeedForward.from_dense(mlp, num_experts, top_k, share_frozen_experts, router_init_std)
    config = getattr(model, "config", None)
    if config is not None:
        config.moe = {**asdict(cfg), "layers": chosen}
    return model


def moe_layers(model: nn.Module) -> Iterator[tuple[int, MoEFeedForward]]:
    """(decoder-layer index, MoEFeedForward) for every MoE layer of `model`."""
    for i, block in enumerate(decoder_layers(model)):
        mlp = block.mlp
        if isinstance(mlp, MoEFeedForward):
            yield i, mlp


def moe_aux_loss(model: nn.Module, coef: float | None = None) -> torch.Tensor | None:
    """coef · Σ_layers Switch balance loss of the last forward; None for a dense model.

    `coef` defaults to the aux_loss_coef given to upcycle_to_moe. Add it to the LM loss.
    """
    losses = [m.aux_loss for _, m in moe_layers(model) if m.aux_loss is not None]
    if not losses:
        return None
    if coef is None:
        coef = _moe_settings(model).get("aux_loss_coef", 0.01)
    return coef * torch.stack(losses).sum()


def router_stats(model: nn.Module) -> dict[int, RouterStats]:
    """Routing statistics of the last forward, per decoder-layer index."""
    return {i: m.last_stats for i, m in moe_layers(model) if m.last_stats is not None}


def set_token_mask(model: nn.Module, mask: torch.Tensor | None) -> None:
    """Tell every MoE layer which tokens are real (B, T) so padding stays out of the balance loss."""
    for _, m in moe_layers(model):
        m.token_mask = mask


def _moe_settings(model: nn.Module) -> dict:
    for module in model.modules():
        config = getattr(module, "config", None)
        moe = getattr(config, "moe", None)
        if isinstance(moe, dict):
            return moe
    return {}


@dataclass
class ParamCount:
    """Parameters by storage: shared tensors counted once."""

    total: int
    trainable: int
    bytes: int
    by_dtype: dict[str, int] = field(default_factory=dict)


def count_parameters(model: nn.Module) -> ParamCount:
    """Count unique parameter tensors (works on the meta device: only shapes are read)."""
    total = trainable = nbytes = 0
    by_dtype: dict[str, int] = {}
    for p in model.parameters():  # nn.Module.parameters() already yields a shared Parameter once
        n = p.numel()
        total += n
        trainable += n if p.requires_grad else 0
        nbytes += n * p.element_size()
        by_dtype[str(p.dtype)] = by_dtype.get(str(p.dtype), 0) + n
    return ParamCount(total, trainable, nbytes, by_dtype)


def routing_entropy_max(num_experts: int) -> float:
    """Entropy of a uniform router, for normalising RouterStats.entropy."""
    return math.log(num_experts)


class RoutingTally:
    """Routing statistics summed over many forward passes (a validation set, an episode).

    Call `update(model)` after each forward; `stats()` gives one RouterStats per layer over all of them,
    weighted by tokens, in the same form as `router_stats` (so the same plot reads both).
    """

    def __init__(self) -> None:
        self._fraction: dict[int, torch.Tensor] = {}
        self._prob: dict[int, torch.Tensor] = {}
        self._entropy: dict[int, float] = {}
        self._tokens: dict[int, int] = {}

    def update(self, model: nn.Module) -> None:
        for layer, s in router_stats(model).items():
            n = s.num_tokens
            self._fraction[layer] = self._fraction.get(layer, 0) + s.fraction * n
            self._prob[layer] = self._prob.get(layer, 0) + s.mean_prob * n
            self._entropy[layer] = self._entropy.get(layer, 0.0) + s.entropy * n
            self._tokens[layer] = self._tokens.get(layer, 0) + n

    def stats(self) -> dict[int, RouterStats]:
        return {
            layer: RouterStats(self._fraction[layer] / n, self._prob[layer] / n, self._entropy[layer] / n, n)
            for layer, n in sorted(self._tokens.items())
        }
