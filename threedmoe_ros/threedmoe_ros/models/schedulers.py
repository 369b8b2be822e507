"""Training objectives and samplers for Pose-DiT: rectified flow (the paper's) and DDPM/DDIM (baseline).

A scheduler is a small stateless object with one face:

    loss(model, x, cond, mask, valid=None) -> (loss, info)
    sample(model, cond, mask, steps=None, generator=None, horizon=None) -> (x, valid_logit)
    inference_steps(steps) -> int      the steps a request means: None or 0 = num_inference_steps

`model(x_t, t, cond, mask) -> (out, valid_logit)` is a PoseDiT (samplers call `model.context(cond, mask)`
once and pass it as `cond`); x is (B, T, 2, d) in [−1, 1];
`mask` (B, K) marks real condition tokens; `valid` (B, T) marks real (unpadded) plan steps and,
when given, adds the validity BCE to the loss. Sampling draws all its noise from `generator`,
so a seeded generator gives the same plan every time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Info = dict[str, float]


def _predicts_sample(model: nn.Module) -> bool:
    """Heads with the pointer output predict the clean plan itself; the schedulers convert."""
    return getattr(model.config, "predicts_sample", False)


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """MSE over real plan steps only: a clean-sample head has nothing to predict for padding."""
    if valid is None:
        return F.mse_loss(pred, target)
    w = valid.to(pred.dtype)[..., None, None].expand_as(pred)
    return ((pred - target) ** 2 * w).sum() / w.sum().clamp_min(1.0)


def _validity_loss(logit: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor | None:
    return None if valid is None else F.binary_cross_entropy_with_logits(logit, valid.to(logit.dtype))


def _total(denoise: torch.Tensor, logit: torch.Tensor, valid: torch.Tensor | None, weight: float,
           pointer: torch.Tensor | None = None) -> tuple[torch.Tensor, Info]:
    bce = _validity_loss(logit, valid)
    loss = denoise if bce is None else denoise + weight * bce
    if pointer is not None:
        loss = loss + pointer
    info = {"loss": loss.item(), "denoise": denoise.item()}
    if bce is not None:
        info["validity"] = bce.item()
    if pointer is not None:
        info["pointer"] = pointer.item()
    return loss, info


def _final_validity(model: nn.Module, x: torch.Tensor, ctx, t_clean: float) -> torch.Tensor:
    """The validity logit of the finished plan: the plan's length must follow from the plan that
    is returned, not from the last sampling call's input (pure noise at one step)."""
    t = torch.full((x.shape[0],), t_clean, device=x.device, dtype=x.dtype)
    return model(x, t, ctx)[1]


def _resolve_steps(steps: int | None, default: int) -> int:
    """The sampling steps a caller asked for: None or 0 mean `default` (the checkpoint's own)."""
    if steps is None:
        return default
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a positive int, or 0 or None for the checkpoint's own, got {steps!r}")
    return steps or default


def _noise(model: nn.Module, cond, horizon: int | None, generator: torch.Generator | None) -> torch.Tensor:
    cfg = model.config
    cond = getattr(cond, "tokens", cond)  # condition tokens, or a Condition holding them
    shape = (cond.shape[0], horizon or cfg.horizon, 2, cfg.pose_dim)
    # Draw on the generator's device (CPU generators are the portable choice) and move after,
    # so a seed gives the same noise whatever device the model runs on.
    gen_device = generator.device if generator is not None else cond.device
    return torch.randn(shape, generator=generator, device=gen_device).to(cond.device, cond.dtype)


@dataclass
class RectifiedFlow:
    """Rectified flow (Liu et al. 2022) in the paper's convention: x_t = t·x1 + (1 − t)·x0,
    x0 ~ N(0, I) is noise at t = 0 and x1 is the data at t = 1. The model predicts the velocity
    x1 − x0, and sampling integrates it with Euler from t = 0 to 1.
    """

    # Training times are discretised onto i/num_train_timesteps, i = 0..N−1, as in the paper.
    num_train_timesteps: int = 100
    # "uniform" or "logit_normal" (SD3/minRF: t = sigmoid(N(0,1)) puts more weight mid-path,
    # where the velocity is hardest to predict).
    timestep_sampling: str = "logit_normal"
    num_inference_steps: int = 4
    validity_weight: float = 0.1

    def __post_init__(self) -> None:
        if self.timestep_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"RectifiedFlow.timestep_sampling must be 'uniform' or 'logit_normal', got {self.timestep_sampling!r}")
        if self.num_train_timesteps < 1 or self.num_inference_steps < 1:
            raise ValueError("RectifiedFlow: num_train_timesteps and num_inference_steps must be >= 1")

    def inference_steps(self, steps: int | None = None) -> int:
        """Euler steps for a request: None or 0 = num_inference_steps; any positive count runs."""
        return _resolve_steps(steps, self.num_inference_steps)

    def sample_t(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        u = torch.rand(batch, device=device) if self.timestep_sampling == "uniform" else torch.sigmoid(torch.randn(batch, device=device))
        return torch.floor(u * self.num_train_timesteps).clamp_max(self.num_train_timesteps - 1) / self.num_train_timesteps

    def loss(self, model: nn.Module, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None,
             valid: torch.Tensor | None = None) -> tuple[torch.Tensor, Info]:
        x0 = torch.randn_like(x)  # noise
        t = self.sample_t(x.shape[0], x.device)  # (B,)
        tb = t.view(-1, 1, 1, 1)
        xt = tb * x + (1 - tb) * x0
        ctx = model.context(cond, mask)
        if _predicts_sample(model):  # x₁-prediction: regress the clean plan, the pointer adds its CE
            x1, logit, pointer = model(xt, t, ctx, clean=x, valid=valid)
            return _total(_masked_mse(x1, x, valid), logit, valid, self.validity_weight, pointer)
        v, logit = model(xt, t, ctx)
        return _total(F.mse_loss(v, x - x0), logit, valid, self.validity_weight)

    @torch.no_grad()
    def sample(self, model: nn.Module, cond: torch.Tensor, mask: torch.Tensor | None = None, steps: int | None = None,
               generator: torch.Generator | None = None, horizon: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        steps = self.inference_steps(steps)
        # Times i/steps lie on the training grid when steps divides num_train_timesteps (1, 2, 4,
        # 10, ...); other counts fall between grid points, which the smooth time embedding absorbs.
        x = _noise(model, cond, horizon, generator)  # t = 0
        ctx = model.context(cond, mask)
        dt = 1.0 / steps
        sample = _predicts_sample(model)
        for i in range(steps):
            t = torch.full((x.shape[0],), i * dt, device=x.device, dtype=x.dtype)
            out, _ = model(x, t, ctx)
            # A clean-sample head gives x̂₁; the velocity that reaches it at t = 1 is (x̂₁ − x)/(1 − t),
            # so the last step lands exactly on x̂₁.
            v = (out - x) / (1 - i * dt) if sample else out
            x = x + dt * v
        return x, _final_validity(model, x, ctx, (self.num_train_timesteps - 1) / self.num_train_timesteps)


def cosine_alphas_cumprod(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """ᾱ_k of the cosine schedule (Nichol & Dhariwal 2021). With only 100 steps the linear
    schedule's ᾱ at the last step is ≈ e^−1, far from noise; the cosine one reaches ≈ 0."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0).float()


@dataclass
class DDPM:
    """DDPM (Ho et al. 2020) with ε-prediction: x_k = √ᾱ_k·x + √(1 − ᾱ_k)·ε, k = 0..N−1, k = N−1
    noisiest. ε (not v) so the DDIM update needs no conversion and the baseline is the textbook one.
    Sampling is ancestral DDPM ("ddpm", N steps) or deterministic DDIM ("ddim", η = 0, fewer steps).
    The model sees t = k / N.
    """

    num_train_timesteps: int = 100
    sampler: str = "ddpm"
    # None: every training step for "ddpm", 10 for "ddim".
    num_inference_steps: int | None = None
    # Clip the predicted clean sample to the data range [−1, 1] at each step (diffusion_policy does).
    clip_sample: bool = True
    validity_weight: float = 0.1

    def __post_init__(self) -> None:
        if self.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"DDPM.sampler must be 'ddpm' or 'ddim', got {self.sampler!r}")
        if self.num_train_timesteps < 2:
            raise ValueError("DDPM.num_train_timesteps must be >= 2")
        if self.num_inference_steps is None:
            self.num_inference_steps = self.num_train_timesteps if self.sampler == "ddpm" else 10
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"DDPM.num_inference_steps must be in [1, {self.num_train_timesteps}], got {self.num_inference_steps}")
        self.alphas_cumprod = cosine_alphas_cumprod(self.num_train_timesteps)  # (N,)

    def inference_steps(self, steps: int | None = None) -> int:
        """Denoising steps for a request: None or 0 = num_inference_steps. Ancestral DDPM runs every
        training step; DDIM any count up to num_train_timesteps."""
        N, steps = self.num_train_timesteps, _resolve_steps(steps, self.num_inference_steps)
        if self.sampler == "ddpm" and steps != N:
            raise ValueError(f"DDPM ancestral sampling runs all {N} steps (got steps={steps}); use sampler='ddim' for "
                             "fewer, or 0 for the checkpoint's own")
        if steps > N:
            raise ValueError(f"DDIM samples at most num_train_timesteps={N} steps, got steps={steps}")
        return steps

    def loss(self, model: nn.Module, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None,
             valid: torch.Tensor | None = None) -> tuple[torch.Tensor, Info]:
        eps = torch.randn_like(x)
        k = torch.randint(0, self.num_train_timesteps, (x.shape[0],), device=x.device)
        a = self.alphas_cumprod.to(x.device)[k].view(-1, 1, 1, 1)
        xk = a.sqrt() * x + (1 - a).sqrt() * eps
        t = k.to(x.dtype) / self.num_train_timesteps
        ctx = model.context(cond, mask)
        if _predicts_sample(model):
            x0, logit, pointer = model(xk, t, ctx, clean=x, valid=valid)
            return _total(_masked_mse(x0, x, valid), logit, valid, self.validity_weight, pointer)
        eps_pred, logit = model(xk, t, ctx)
        return _total(F.mse_loss(eps_pred, eps), logit, valid, self.validity_weight)

    def _x0(self, xk: torch.Tensor, eps: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x0 = (xk - (1 - a).sqrt() * eps) / a.sqrt()
        return x0.clamp(-1, 1) if self.clip_sample else x0

    @torch.no_grad()
    def sample(self, model: nn.Module, cond: torch.Tensor, mask: torch.Tensor | None = None, steps: int | None = None,
               generator: torch.Generator | None = None, horizon: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        N, steps = self.num_train_timesteps, self.inference_steps(steps)
        # Descending timesteps, evenly spread over [N−1, 0]: DDPM visits all of them.
        ks = torch.linspace(N - 1, 0, steps).round().long().tolist()
        tokens = getattr(cond, "tokens", cond)
        acp = self.alphas_cumprod.to(tokens.device, tokens.dtype)
        x = _noise(model, cond, horizon, generator)
        ctx = model.context(cond, mask)
        sample = _predicts_sample(model)
        for i, k in enumerate(ks):
            t = torch.full((x.shape[0],), k / N, device=x.device, dtype=x.dtype)
            out, _ = model(x, t, ctx)
            a = acp[k]
            if sample:  # x̂₀ from the head; ε follows from it
                x0 = out.clamp(-1, 1) if self.clip_sample else out
            else:
                x0 = self._x0(x, out, a)
            if self.sampler == "ddim":
                a_prev = acp[ks[i + 1]] if i + 1 < len(ks) else acp.new_tensor(1.0)
                eps = (x - a.sqrt() * x0) / (1 - a).sqrt()  # re-derive ε from the clipped x0
                x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
            else:
                a_prev = acp[k - 1] if k > 0 else acp.new_tensor(1.0)
                beta = 1 - a / a_prev
                # Posterior q(x_{k−1} | x_k, x0): mean and variance of the ancestral step.
                mean = (a_prev.sqrt() * beta / (1 - a)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a)) * x
                if k > 0:
                    var = beta * (1 - a_prev) / (1 - a)
                    z = torch.randn(x.shape, generator=generator, device=generator.device if generator is not None else x.device)
                    x = mean + var.sqrt() * z.to(x.device, x.dtype)
                else:
                    x = mean
        return x, _final_validity(model, x, ctx, 0.0)


SCHEDULERS = {"rectified_flow": RectifiedFlow, "ddpm": DDPM}


def make_scheduler(name: str, **kwargs) -> RectifiedFlow | DDPM:
    """Build a scheduler by name ("rectified_flow" or "ddpm") from its dataclass fields."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    return SCHEDULERS[name](**kwargs)
