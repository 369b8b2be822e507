"""The condition interface between a scene+instruction encoder and the Pose-DiT head.

Pose-DiT cross-attends to a condition sequence (B, K, D). Who fills it is not the head's business:
the light development encoder, or the 3D-MoE LLM (final-token hidden state, K=1, as in the paper;
or all hidden states). Every encoder implements this one face.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from threedmoe_ros.types import Cloud


class Condition(NamedTuple):
    """What an encoder hands Pose-DiT. Object tokens may carry anchors: where the object is, in
    the world frame (metres), so a pointer head can put a pick or place exactly on it."""

    tokens: torch.Tensor  # (B, K, D)
    mask: torch.Tensor  # (B, K) bool, True = a real token
    anchors: torch.Tensor | None = None  # (B, K, 3) centre of the object's top face
    boxes: torch.Tensor | None = None  # (B, K, 4) its xy box: x_lo, y_lo, x_hi, y_hi
    anchor_mask: torch.Tensor | None = None  # (B, K) bool, True = the token is an object with an anchor

    @classmethod
    def of(cls, encoded) -> "Condition":
        """An encoder's output as a Condition (encoders without anchors may return (tokens, mask))."""
        return encoded if isinstance(encoded, Condition) else cls(*encoded)


class ConditionEncoder(nn.Module, abc.ABC):
    """(clouds, instructions) → condition tokens for Pose-DiT.

    Subclasses set `cond_dim` (D) and implement `forward`. The policy sizes Pose-DiT's condition
    projection from `cond_dim`, so the head always fits the encoder behind it.
    """

    cond_dim: int
    # Where the encoder's weights live in a policy checkpoint. False: they are part of the policy's state,
    # in its model.safetensors. True: the encoder has a checkpoint format of its own (`save_pretrained`,
    # `from_pretrained`), kept in the policy's encoder/ directory: the 3D-MoE LLM, whose base LM is
    # rebuilt from its preset and never copied.
    saves_itself: ClassVar[bool] = False

    def save_pretrained(self, path: str | Path) -> Path:
        raise NotImplementedError(f"{type(self).__name__} has no checkpoint of its own: its weights are the policy's")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "ConditionEncoder":
        raise NotImplementedError(f"{cls.__name__} has no checkpoint of its own: its weights are the policy's")

    @abc.abstractmethod
    def forward(self, clouds: list[Cloud], instructions: list[str]) -> Condition | tuple[torch.Tensor, torch.Tensor]:
        """Return a Condition, or (tokens (B, K, D) float, mask (B, K) bool with True = a real token)."""
