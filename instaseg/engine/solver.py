"""Optimizer and iteration-based learning-rate schedule (warmup, then step / cosine / constant)."""

from __future__ import annotations

import math

import torch
from torch import nn

from instaseg.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over the trainable parameters.

    Norm-layer weights and biases get no weight decay (standard practice; decaying them only hurts).
    A model may set ``lr_scales`` (``{parameter-name prefix: factor}``): those parameters learn at
    ``cfg.lr * factor`` (e.g. new layers on a pretrained trunk); the schedule scales every group alike.
    """
    scales: dict[str, float] = dict(getattr(model, "lr_scales", None) or {})
    groups_by_key: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = next((float(f) for prefix, f in scales.items() if name.startswith(prefix)), 1.0)
        decays = not (param.ndim <= 1 or name.endswith(".bias"))
        groups_by_key.setdefault((scale, decays), []).append(param)
    groups = [{"params": params, "weight_decay": cfg.weight_decay if decays else 0.0, "lr": cfg.lr * scale}
              for (scale, decays), params in sorted(groups_by_key.items(),
                                                    key=lambda kv: (kv[0][0], not kv[0][1]))]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def lr_factor(
    it: int,
    *,
    total: int,
    schedule: str = "cosine",
    warmup_iters: int = 0,
    warmup_factor: float = 0.001,
    warmup_method: str = "linear",
    milestones: tuple[float, ...] | list[float] = (),
    gamma: float = 0.1,
    min_lr_factor: float = 0.0,
) -> float:
    """The learning-rate multiplier at optimizer step ``it`` (0-based) of ``total`` steps.

    Warmup (``it < warmup_iters``): linear ramp from ``warmup_factor`` to 1, or constant
    ``warmup_factor``. Then ``step``: ``gamma ** (number of milestones passed)``, milestones given as
    fractions of ``total``; ``cosine``: half cosine from 1 down to ``min_lr_factor`` at ``total``;
    ``constant``: 1. Warmup multiplies the main schedule, as in Detectron2.
    """
    if schedule == "step":
        passed = sum(1 for m in milestones if it >= int(round(m * total)))
        base = gamma**passed
    elif schedule == "cosine":
        progress = min(max(it / max(total, 1), 0.0), 1.0)
        base = min_lr_factor + (1.0 - min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "constant":
        base = 1.0
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    if it < warmup_iters:
        if warmup_method == "constant":
            warm = warmup_factor
        else:
            alpha = it / warmup_iters
            warm = warmup_factor * (1.0 - alpha) + alpha
        return base * warm
    return base


class WarmupScheduler(torch.optim.lr_scheduler.LRScheduler):
    """``lr = base_lr * lr_factor(step)``; step it once per optimizer step. Its state is plain
    numbers (no lambdas), so it round-trips through ``weights_only`` checkpoints."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, total: int, cfg: TrainConfig) -> None:
        self.total = int(total)
        self.schedule = cfg.schedule
        self.warmup_iters = int(cfg.warmup_iters)
        self.warmup_factor = float(cfg.warmup_factor)
        self.warmup_method = cfg.warmup_method
        self.milestones = [float(m) for m in cfg.milestones]
        self.gamma = float(cfg.gamma)
        self.min_lr_factor = float(cfg.min_lr_factor)
        super().__init__(optimizer)

    def factor(self, it: int) -> float:
        """The multiplier at step ``it``."""
        return lr_factor(
            it,
            total=self.total,
            schedule=self.schedule,
            warmup_iters=self.warmup_iters,
            warmup_factor=self.warmup_factor,
            warmup_method=self.warmup_method,
            milestones=self.milestones,
            gamma=self.gamma,
            min_lr_factor=self.min_lr_factor,
        )

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the position only: the schedule's shape comes from the (possibly changed) config,
        so a resumed run with more epochs stretches its schedule instead of idling at the end."""
        for key in ("last_epoch", "_step_count", "base_lrs", "_last_lr"):
            if key in state_dict:
                setattr(self, key, state_dict[key])

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]
