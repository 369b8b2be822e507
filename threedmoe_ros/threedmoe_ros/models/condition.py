"""The condition interface between a scene+instruction encoder and the Pose-DiT head.

Pose-DiT cross-attends to a condition sequence (B, K, D). Who fills it is not the head's business:
the light development encoder, or the 3D-MoE LLM (final-token hidden state, K=1, as in the paper;
or all hidden states). Every encoder implements this one face.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from threedmoe_ros.types import Cloud


class ConditionEncoder(nn.Module, abc.ABC):
    """(clouds, instructions) → condition tokens for Pose-DiT.

    Subclasses set `cond_dim` (D) and implement `forward`.
    """

    cond_dim: int

    @abc.abstractmethod
    def forward(self, clouds: list[Cloud], instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (tokens (B, K, D) float, mask (B, K) bool with True = a real token)."""
