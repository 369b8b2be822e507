"""The heads a Planner samples with: copies of the policy's Pose-DiT made for serving, not for training.

    FrozenPoseDiT   the head traced and frozen with TorchScript (float32; ~1.6x faster per step on a CPU)
    HeadInDtype     the head in float16/bfloat16 beside a float32 encoder, codec and sampler

Both quack like a PoseDiT for the schedulers (`config`, `context`, call), so a scheduler samples them
as it samples the policy's own head, and both hold copies of the weights taken when they are made:
make them again after the weights change (a Planner does, when it is built). The Policy (policy.py)
knows nothing of them: it is the model that learns.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from threedmoe_ros.models.condition import Condition
from threedmoe_ros.models.pose_dit import Context, PoseDiT


class _Denoiser(nn.Module):
    """PoseDiT.forward with the Context flattened into tensors, the form TorchScript can trace."""

    def __init__(self, model: PoseDiT):
        super().__init__()
        self.model = model

    def forward(self, x, t, kv: list[tuple[torch.Tensor, torch.Tensor]], mask, pooled, *anchors):
        return self.model(x, t, Context(kv, mask, pooled, *anchors))


class FrozenPoseDiT:
    """A PoseDiT traced and frozen with TorchScript, for planning only.

    At batch 1 a sampling step is ~400 small ops and eager PyTorch spends a large share of a CPU
    step dispatching them; a frozen graph (weights folded in, oneDNN kernels from
    optimize_for_inference) gives the same numbers (to ~1e-6) about 1.6× faster. It quacks like a
    PoseDiT for the schedulers (`config`, `context`, call). The weights are a copy taken now:
    freeze again after they change or move. Inputs of another shape than traced, and calls with
    gradients on, go to the eager model.

    TorchScript is deprecated in favour of torch.compile, which we measured too: minutes of
    compilation on a 2-core machine and no gain at this size. So the old tool is used on purpose,
    and if it fails (or is gone) planning falls back to the eager model with a warning.
    """

    def __init__(self, model: PoseDiT, batch: int = 1):
        self.model, self.config = model, model.config
        cfg, device = model.config, model.null_token.device
        x = torch.zeros(batch, cfg.horizon, 2, cfg.pose_dim, device=device)
        self._shape, self._denoise = tuple(x.shape), None
        was_training = model.training
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants: intended
                ctx = self._full(model.context(self._example_condition(batch, device)))
                traced = torch.jit.trace(_Denoiser(model).eval(), (x, torch.zeros(batch, device=device), *ctx), check_trace=False)
                frozen = torch.jit.freeze(traced)
                try:
                    frozen = torch.jit.optimize_for_inference(frozen)
                except RuntimeError:  # builds without oneDNN: the frozen graph alone still helps
                    pass
                # TorchScript optimises a graph during its first runs; do them now, not in the first plan.
                for _ in range(3):
                    frozen(x, torch.zeros(batch, device=device), *ctx)
            self._denoise = frozen
        except Exception as e:  # noqa: BLE001 — any failure here only costs speed
            warnings.warn(f"could not freeze Pose-DiT with TorchScript ({e}); planning with the eager model", stacklevel=2)
        finally:
            model.train(was_training)

    def _example_condition(self, batch: int, device) -> Condition:
        K = 4
        return Condition(torch.zeros(batch, K, self.model.cond_dim, device=device),
                         torch.ones(batch, K, dtype=torch.bool, device=device),
                         torch.zeros(batch, K, 3, device=device), torch.zeros(batch, K, 4, device=device),
                         torch.ones(batch, K, dtype=torch.bool, device=device))

    def _full(self, ctx: Context) -> tuple:
        # The traced graph always adds the pooled condition; zeros stand in when pooling is off.
        # Anchor boxes are for training only (assigning targets), so they stay out of the graph.
        if ctx.pooled is None:
            B, H = ctx.mask.shape[0], self.config.hidden_size
            ctx = ctx._replace(pooled=torch.zeros(B, H, device=ctx.mask.device))
        extra = () if ctx.anchor_keys is None else (ctx.anchor_keys, ctx.anchor_pos, ctx.anchor_valid)
        return (ctx.kv, ctx.mask, ctx.pooled, *extra)

    def context(self, cond, cond_mask: torch.Tensor | None = None) -> Context:
        return self.model.context(cond, cond_mask)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond, cond_mask: torch.Tensor | None = None, **training):
        ctx = cond if isinstance(cond, Context) else self.model.context(cond, cond_mask)
        if self._denoise is None or tuple(x.shape) != self._shape or torch.is_grad_enabled() or training:
            return self.model(x, t, ctx, **training)
        return self._denoise(x, t.to(x.dtype).expand(x.shape[0]), *self._full(ctx))


class HeadInDtype(nn.Module):
    """Pose-DiT in float16/bfloat16 beside a float32 encoder, codec and sampler state.

    The encoders build float32 tokens; this casts the condition on its way into the head and
    the head's outputs back to float32, so the Euler integration and the pose decoding keep full
    precision and only the network's arithmetic is halved. Quacks like a PoseDiT for the
    schedulers (`config`, `context`, call). It holds a copy of the head, so the policy's own
    stays float32 for training and for other planners.
    """

    def __init__(self, head: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype, self.config = copy.deepcopy(head).to(dtype), dtype, head.config

    def _autocast(self):
        # Autocast also covers tensors the head makes itself (e.g. its float32 timestep features).
        return torch.autocast(self.inner.null_token.device.type, dtype=self.dtype)

    def context(self, *cond):
        with self._autocast():
            return self.inner.context(*_cast(cond, self.dtype))

    def forward(self, x, t, *cond):
        with self._autocast():
            out = self.inner(x.to(self.dtype), t.to(self.dtype), *_cast(cond, self.dtype))
        return _cast(out, torch.float32)


def _cast(value, dtype):
    """Floating tensors inside value (a tensor, a (named) tuple or list of them) cast to dtype; the rest as is."""
    if torch.is_tensor(value):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_cast(v, dtype) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value
