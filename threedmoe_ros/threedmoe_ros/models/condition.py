"""The condition interface between a scene+instruction encoder and the Pose-DiT head.

Pose-DiT cross-attends to a condition sequence (B, K, D). Who fills it is not the head's business:
the light development encoder, or the 3D-MoE (models/lm_condition.py: the LM's states of the object and
instruction tokens beside the light encoder's). Every encoder implements this one face.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

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

    @abc.abstractmethod
    def forward(self, clouds: list[Cloud], instructions: list[str]) -> Condition | tuple[torch.Tensor, torch.Tensor]:
        """Return a Condition, or (tokens (B, K, D) float, mask (B, K) bool with True = a real token)."""
