"""The planner: what serves a Policy to the nodes, the evaluation, data collection and the benchmarks.

    planner = Planner.from_pretrained("runs/pose_dit/checkpoint", device="cpu", dtype="float32")
    result = planner.plan(cloud, "put the red block in the green zone", seed=0)
    result.poses        # (T', 2, 7) pick/place poses, world frame, quaternions x y z w
    result.problem      # '' when the plan passes the plan validator, else why not

As lerobot's DiffusionPolicy wraps DiffusionModel, a Planner wraps the Policy (the model that
learns: encoder, head, codec, scheduler) and owns everything about serving it: input validation
(threedmoe_ros.validation), the device, the head it samples with (the policy's own, or a
TorchScript-frozen or half-precision copy: serving.py), the number of sampling steps, the sampling
generator and its seed, cutting a plan at its first invalid step, refinement onto the cloud's
objects, the plan validator, timing, warm-up, and answering questions. ROS-free.

The frozen and the half-precision heads are copies of the policy's weights when the planner is
made: build a new planner after the weights change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from threedmoe_ros.data.objects import GROUPINGS
from threedmoe_ros.models.condition import Condition
from threedmoe_ros.models.refine import refine_plan
from threedmoe_ros.policy import Policy
from threedmoe_ros.serving import FrozenPoseDiT, HeadInDtype
from threedmoe_ros.types import Cloud
from threedmoe_ros.validation import InputError, validate_cloud, validate_plan, validate_text

DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class PlanResult:
    """A sampled plan, whether it may be executed, and what it cost."""

    poses: np.ndarray  # (T', 2, 7) float64: steps kept before the first invalid one (at most `horizon`)
    valid_prob: np.ndarray  # (T,) p(step is real) for every slot of the model's horizon
    steps: int  # sampling steps taken (the checkpoint's own when the caller gave none)
    encoder_ms: float  # condition encoder (cloud + instruction → tokens)
    head_ms: float  # Pose-DiT sampling + decoding
    total_ms: float  # everything plan() did, input and plan validation included
    problem: str = ""  # validation.validate_plan's verdict on `poses`: '' = executable


def parse_device(name: str) -> torch.device:
    """The torch device called `name` (cpu, cuda, cuda:1 ...), or ValueError saying why it cannot be used."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {name!r} is not a torch device (cpu, cuda, cuda:1 ...): {exc}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: the planner runs on cpu or cuda[:N]")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this torch build sees no CUDA device; use cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


def parse_dtype(name: str) -> torch.dtype:
    """The head's torch dtype called `name` (one of DTYPES), or ValueError naming the choices."""
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def warm_up_scene() -> Cloud:
    """A synthetic table with two objects: a cloud every policy can plan on, for warm-up and probes."""
    rng = np.random.default_rng(0)
    xyz = np.c_[rng.uniform(0.3, 0.7, 512), rng.uniform(-0.4, 0.4, 512), rng.uniform(0, 0.04, 512)]
    return Cloud(xyz, np.full((512, 3), 128), np.repeat([0, 1], 256))


class Planner:
    """A Policy served: validated input in, a cut, refined, validated and timed plan out.

    device: cpu, cuda, cuda:N (the policy is moved there). dtype: the Pose-DiT head's arithmetic,
    float32, bfloat16 or float16 (encoder, codec and sampler stay float32); a dtype the device
    cannot run is refused here. frozen: plan with a TorchScript-frozen copy of the head (float32
    only; the same plans to ~1e-6, each sampling step ~1.6x faster on a CPU). refine: snap plan
    positions onto the objects of the cloud (models/refine.py). horizon: most steps a plan keeps
    (None = the model's horizon). grouping: how a cloud's objects are found (data/objects.py):
    "auto" (instance labels when the cloud has them, else segmentation), "labels" (a cloud without
    them is refused) or "segment" (labels are ignored, as if the cloud came from a bare camera).
    """

    def __init__(self, policy: Policy, device: str = "cpu", dtype: str = "float32", frozen: bool = True,
                 refine: bool = False, horizon: int | None = None, grouping: str = "auto"):
        if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1):
            raise ValueError(f"horizon must be a positive int or None, got {horizon!r}")
        if grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
        self.grouping = grouping
        torch_dtype, self.dtype = parse_dtype(dtype), dtype
        self.policy = policy.to(parse_device(device)).eval()
        self.refine, self.horizon = refine, horizon
        self._generator = torch.Generator().manual_seed(policy.config.seed)
        # The head sampled with: the policy's own, a half-precision copy, or a frozen copy (serving.py).
        self.head: nn.Module | FrozenPoseDiT = policy.head
        if torch_dtype != torch.float32:
            self.head = HeadInDtype(policy.head, torch_dtype)
        elif frozen:
            self.head = FrozenPoseDiT(policy.head)
        self.frozen = isinstance(self.head, FrozenPoseDiT)
        if torch_dtype != torch.float32:
            # Half precision needs kernels a device may lack: find out now, not at the first cloud.
            self.warm_up(plans=1)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: str = "float32", **kwargs) -> "Planner":
        """A planner for the checkpoint directory `path`; ValueError for a bad device or dtype (checked
        before anything is loaded), CheckpointError naming what is wrong with the checkpoint."""
        parse_device(device)
        parse_dtype(dtype)
        return cls(Policy.from_pretrained(path), device=device, dtype=dtype, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.policy.device

    @torch.no_grad()
    def plan(self, cloud: Cloud, instruction: str, steps: int | None = None, seed: int | None = None,
             cloud_checked: bool = False) -> PlanResult:
        """Sample a pick-and-place plan for `cloud`. `steps`: sampling steps; None or 0 = the checkpoint's
        own (its scheduler's num_inference_steps), so callers pass on what their user gave.
        `seed` makes the plan reproducible; without it the planner's own generator advances.
        `cloud_checked`: the caller has already run validation.validate_cloud on `cloud` (the policy node
        does, with its own limits, when the cloud arrives), so it is not scanned a second time.
        Raises validation.InputError (a ValueError) with the reason on input a caller should have caught."""
        t_in = time.perf_counter()
        if not cloud_checked:
            validate_cloud(cloud, drop=False)
        instruction = self._check_text(instruction)
        try:
            steps = self.policy.scheduler.inference_steps(steps)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise InputError(f"seed must be an int >= 0 or None, got {seed!r}")
        generator = torch.Generator().manual_seed(seed) if seed is not None else self._generator
        cloud = self._grouped(cloud)
        t0 = time.perf_counter()
        cond = self.policy.condition([cloud], [instruction])
        self._sync()
        t1 = time.perf_counter()
        poses, valid_prob = self.sample(cond, steps, generator)
        poses, valid_prob = poses[0].double().cpu().numpy(), valid_prob[0].double().cpu().numpy()
        t2 = time.perf_counter()
        # Keep the steps before the first invalid one: a plan is a prefix, never a plan with holes.
        invalid = np.flatnonzero(valid_prob <= 0.5)
        n = int(invalid[0]) if len(invalid) else len(valid_prob)
        poses = poses[: min(n, self.horizon or n)]
        if self.refine:
            poses = refine_plan(poses, cloud)
        problem = validate_plan(poses)
        t3 = time.perf_counter()
        return PlanResult(poses, valid_prob, steps, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t_in) * 1e3, problem)

    def _grouped(self, cloud: Cloud) -> Cloud:
        """`cloud` as the grouping setting wants it: without its labels for "segment"; refused without
        them for "labels"."""
        if self.grouping == "segment" and cloud.label is not None:
            return cloud.unlabelled()
        if self.grouping == "labels" and (cloud.label is None or not (cloud.label > 0).any()):
            raise InputError("grouping is 'labels' but the cloud has no instance labels > 0 (no 'label' field, or "
                             "only the table's 0): send a labelled cloud or set grouping to auto or segment")
        return cloud

    @torch.no_grad()
    def sample(self, cond: Condition, steps: int | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Condition (from Policy.condition) → (poses (B, T, 2, 7), valid_prob (B, T)) for the whole horizon,
        sampled with the planner's head by the policy's scheduler and decoded by its codec."""
        x, logit = self.policy.scheduler.sample(self.head, cond, None, steps, generator)
        return self.policy.codec.decode(x), torch.sigmoid(logit)

    def answer(self, cloud: Cloud, question: str) -> str:
        """Answer a question about the scene with the policy's language model (the lm encoder's 3D-MoE)."""
        if self.policy.answerer is None:
            raise NotImplementedError(
                "this policy has no language model for answering questions: it was built with the "
                f"{self.policy.config.encoder!r} condition encoder; attach a 3D-MoE answerer (policy.answerer = callable) "
                "or load an lm policy"
            )
        validate_cloud(cloud, drop=False)
        return self.policy.answerer(cloud, self._check_text(question, "question"))

    def warm_up(self, plans: int = 2) -> None:
        """Plan on a synthetic scene, so the first real cloud does not pay for lazy initialisation
        (TorchScript profiles its first calls; allocators warm up); also proves the device and dtype
        work. ValueError naming the dtype and device when they do not."""
        try:
            for _ in range(plans):
                poses = self.plan(warm_up_scene(), "put the red block in the green zone", seed=0).poses
            if not np.isfinite(poses).all():
                raise ValueError("the warm-up plan is not finite")
        except Exception as exc:  # noqa: BLE001 - e.g. a dtype the device has no kernels for
            raise ValueError(f"the policy does not run with dtype {self.dtype} on {self.device}: "
                             f"{type(exc).__name__}: {exc}; use dtype float32") from None

    def reset(self) -> None:
        """Rewind the planner's generator (to the policy config's seed); it keeps no other state between plans."""
        self._generator.manual_seed(self.policy.config.seed)

    def _check_text(self, text: str, what: str = "instruction") -> str:
        """The stripped text, or InputError with the reason (threedmoe_ros.validation, the one input validator;
        clouds are checked strictly there: callers pass clouds they made, so a point to drop is their bug)."""
        return validate_text(text, self.policy.config.max_instruction_chars, what)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
