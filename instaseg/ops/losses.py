"""Loss functions shared by the models."""

from __future__ import annotations

from torch import Tensor


def dice_loss(probs: Tensor, target: Tensor, *, smooth: float = 0.0, eps: float = 1e-3) -> Tensor:
    """Per-instance Dice loss ``1 - (2 |p t| + smooth) / (|p|^2 + |t|^2 + smooth + eps)``.

    Args:
        probs: [N, ...] predicted probabilities in [0, 1]; target: [N, ...] in [0, 1], same shape.
    Returns:
        [N] losses in [0, 1] (0 for a perfect prediction).
    """
    p = probs.flatten(1)
    t = target.flatten(1).to(p.dtype)
    return 1 - (2 * (p * t).sum(1) + smooth) / ((p * p).sum(1) + (t * t).sum(1) + smooth + eps)
