"""Learning-rate schedule values and optimizer construction."""

from __future__ import annotations

import math

import pytest
import torch

from instaseg.config import TrainConfig
from instaseg.engine.solver import WarmupScheduler, build_optimizer, lr_factor


def test_linear_warmup_then_step() -> None:
    kw = dict(
        total=100, schedule="step", warmup_iters=10, warmup_factor=0.001, milestones=[0.5, 0.8], gamma=0.1
    )
    assert lr_factor(0, **kw) == pytest.approx(0.001)
    assert lr_factor(5, **kw) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(10, **kw) == 1.0
    assert lr_factor(49, **kw) == 1.0
    assert lr_factor(50, **kw) == pytest.approx(0.1)
    assert lr_factor(80, **kw) == pytest.approx(0.01)
    assert lr_factor(99, **kw) == pytest.approx(0.01)


def test_cosine_and_constant_warmup() -> None:
    kw = dict(total=100, schedule="cosine", warmup_iters=0, min_lr_factor=0.1)
    assert lr_factor(0, **kw) == 1.0
    assert lr_factor(50, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, **kw) == pytest.approx(0.1)
    const = lr_factor(
        3, total=100, schedule="constant", warmup_iters=5, warmup_factor=0.2, warmup_method="constant"
    )
    assert const == pytest.approx(0.2)
    assert lr_factor(5, total=100, schedule="constant", warmup_iters=5) == 1.0


def test_scheduler_drives_optimizer_and_round_trips() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    cfg = TrainConfig(lr=0.1, schedule="cosine", warmup_iters=4, warmup_factor=0.25)
    opt = build_optimizer(model, cfg)
    # Biases and norm weights are not decayed.
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg.weight_decay, 0.0]
    sched = WarmupScheduler(opt, total=20, cfg=cfg)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1 * sched.factor(i) for i in range(10)]
    assert seen == pytest.approx(expected)
    assert seen[0] == pytest.approx(0.025) and seen[4] == pytest.approx(
        0.1 * 0.5 * (1 + math.cos(math.pi * 4 / 20))
    )
    fresh = WarmupScheduler(build_optimizer(model, cfg), total=20, cfg=cfg)
    fresh.load_state_dict(sched.state_dict())
    assert fresh.get_last_lr() == pytest.approx(sched.get_last_lr())


def test_adamw_option() -> None:
    opt = build_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer="adamw", lr=1e-3, betas=[0.8, 0.9]))
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.8, 0.9)


def test_model_lr_scales_give_new_layers_a_larger_learning_rate() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model.lr_scales = {"1.": 5.0}  # the second layer is "new"
    cfg = TrainConfig(optimizer="adamw", lr=0.01, warmup_iters=0, schedule="cosine")
    opt = build_optimizer(model, cfg)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model[0].weight)]["lr"] == pytest.approx(0.01)
    assert by_param[id(model[1].weight)]["lr"] == pytest.approx(0.05)
    assert by_param[id(model[1].bias)]["weight_decay"] == 0.0
    sched = WarmupScheduler(opt, total=10, cfg=cfg)
    for _ in range(5):
        opt.step()
        sched.step()
    half = 0.5 * (1 + math.cos(math.pi * 5 / 10))
    assert by_param[id(model[1].weight)]["lr"] == pytest.approx(0.05 * half)
    assert by_param[id(model[0].weight)]["lr"] == pytest.approx(0.01 * half)


def test_resumed_scheduler_follows_the_new_total() -> None:
    cfg = TrainConfig(lr=0.1, schedule="cosine", warmup_iters=0)
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = WarmupScheduler(opt, total=10, cfg=cfg)
    for _ in range(5):
        opt.step()
        sched.step()
    longer = WarmupScheduler(build_optimizer(torch.nn.Linear(2, 2), cfg), total=20, cfg=cfg)
    longer.load_state_dict(sched.state_dict())
    assert longer.last_epoch == 5 and longer.total == 20
    assert longer.get_lr()[0] == pytest.approx(0.1 * longer.factor(5))
