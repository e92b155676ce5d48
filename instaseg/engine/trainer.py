"""A small Detectron2-style trainer: a loop over epochs and optimizer steps, a short ``run_step``,
and hooks (checkpointing, validation, logging) that watch it.

One iteration is one optimizer step, made of ``accumulate`` batches (fewer at an epoch's end).
The position ``(epoch, batch_in_epoch, iter)`` plus the RNG states is all a resumed run needs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from instaseg.engine import distributed as du
from instaseg.engine.data import Batch, draw_scale, resize_batch
from instaseg.errors import InstasegError


class NonFiniteLossError(InstasegError):
    """The loss became NaN or infinite; the run stopped without saving the bad state."""

    exit_code = 3


class HookBase:
    """Override any of these; ``self.trainer`` is set when the hook is registered."""

    trainer: Trainer

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def after_epoch(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...

    def on_error(self, exc: BaseException) -> None:
        """The run is failing with ``exc`` (after_train will not be called)."""


@dataclass
class StepOptions:
    """What one optimizer step does besides forward/backward."""

    loss_weights: dict[str, float] = field(default_factory=dict)
    clip_grad_norm: float | None = None
    accumulate: int = 1
    scales: list[int] = field(default_factory=list)
    amp: bool = False  # autocast + GradScaler (CUDA only)
    channels_last: bool = False


def _to_device(batch: Batch, device: torch.device, channels_last: bool) -> tuple[list[Tensor], list[dict]]:
    images = [im.to(device, non_blocking=True) for im in batch.images]
    if channels_last:
        images = [im.contiguous(memory_format=torch.channels_last) for im in images]
    targets = [
        {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()}
        for t in batch.targets
    ]
    return images, targets


class Trainer:
    """Runs ``max_iter`` optimizer steps over epochs of ``steps_per_epoch`` steps.

    ``make_loader(epoch, start_batch)`` returns an iterable of :class:`Batch` for that epoch from
    that batch on (see :func:`instaseg.engine.data.make_loader`).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        make_loader: Callable[[int, int], Any],
        batches_per_epoch: int,
        max_iter: int,
        device: torch.device,
        seed: int = 0,
        options: StepOptions | None = None,
        scaler: torch.amp.GradScaler | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.model = model  # possibly DDP-wrapped
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.make_loader = make_loader
        self.batches_per_epoch = batches_per_epoch
        self.options = options or StepOptions()
        self.steps_per_epoch = math.ceil(batches_per_epoch / self.options.accumulate)
        self.max_iter = max_iter
        self.device = device
        self.seed = seed
        self.scaler = scaler
        self.log = log
        self.iter = 0  # optimizer steps done
        self.epoch = 0
        self.batch_in_epoch = 0  # batches of the current epoch consumed
        self.hooks: list[HookBase] = []
        self.latest: dict[str, float] = {}  # scalars of the last step
        self.skipped: list[str] = []  # messages of skipped bad samples
        self.stop_reason: str | None = None
        self.best_metric: float | None = None  # best validation mask AP so far
        self.resume_rng: dict[str, Any] | None = None  # RNG states restored once hooks are ready
        self.start_time = 0.0
        self.loop_seconds = 0.0  # wall time of the iteration loop (hooks included), this process
        self.loop_iters = 0  # optimizer steps this process ran (fewer than ``iter`` after a resume)
        self._data: Iterator[Batch] | None = None

    @property
    def module(self) -> nn.Module:
        """The model without its DDP wrapper."""
        return getattr(self.model, "module", self.model)

    @property
    def max_epochs(self) -> int:
        return math.ceil(self.max_iter / self.steps_per_epoch)

    def register_hooks(self, hooks: list[HookBase]) -> None:
        for h in hooks:
            h.trainer = self
        self.hooks.extend(hooks)

    def request_stop(self, reason: str) -> None:
        """End training after the current step (hooks still run ``after_train``)."""
        self.stop_reason = reason

    def _call(self, name: str) -> None:
        for h in self.hooks:
            getattr(h, name)()

    def train(self) -> None:
        self.start_time = time.perf_counter()
        try:
            self._call("before_train")
            if self.resume_rng is not None:
                from instaseg.engine.checkpoint import restore_rng_state

                restore_rng_state(self.resume_rng)
                self.resume_rng = None
            loop_start, first_iter = time.perf_counter(), self.iter
            while self.iter < self.max_iter and self.stop_reason is None:
                self._call("before_epoch")
                self._data = iter(self.make_loader(self.epoch, self.batch_in_epoch))
                while self.batch_in_epoch < self.batches_per_epoch and self.iter < self.max_iter:
                    self._call("before_step")
                    self.run_step()
                    self._call("after_step")
                    if self.stop_reason is not None:
                        break
                self._data = None
                if self.batch_in_epoch >= self.batches_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    self._call("after_epoch")
            self.loop_seconds = time.perf_counter() - loop_start
            self.loop_iters = self.iter - first_iter
            self._call("after_train")
        except BaseException as exc:
            for h in self.hooks:
                with contextlib.suppress(Exception):
                    h.on_error(exc)
            raise

    def _next_batch(self) -> Batch:
        assert self._data is not None
        batch = next(self._data)
        self.batch_in_epoch += 1
        for s in batch.skipped:
            msg = f"skipped bad sample (index {s.index}): {s.message}"
            self.skipped.append(msg)
            self.log(f"warning: {msg}")
        return batch

    def run_step(self) -> None:
        """One optimizer step over up to ``accumulate`` batches."""
        opts = self.options
        self.model.train()
        k = min(opts.accumulate, self.batches_per_epoch - self.batch_in_epoch)
        scale = draw_scale(opts.scales, self.seed, self.iter)
        sums: dict[str, float] = {}
        n_images = 0
        for j in range(k):
            batch = self._next_batch()
            images, targets = _to_device(batch, self.device, opts.channels_last)
            if scale is not None and images:
                images, targets = resize_batch(images, targets, scale)
            sync = j == k - 1 or not du.is_dist()
            ctx = contextlib.nullcontext() if sync else self.model.no_sync()  # type: ignore[operator]
            with ctx:
                if images:
                    with torch.autocast(self.device.type, enabled=opts.amp):
                        loss_dict = self.model(images, targets)
                    total = sum(
                        opts.loss_weights.get(name, 1.0) * value.float() for name, value in loss_dict.items()
                    )
                    values = torch.stack([total.detach()] + [v.detach().float() for v in loss_dict.values()])
                else:  # every sample of this batch was bad: a zero loss keeps DDP ranks in step
                    loss_dict = {}
                    total = sum(p.sum() * 0.0 for p in self.module.parameters() if p.requires_grad)
                    values = torch.zeros(1, device=self.device)
                stats = values.tolist()
                if not du.all_true(all(math.isfinite(v) for v in stats), self.device):
                    self._raise_non_finite(dict(zip(loss_dict, stats[1:], strict=True)))
                loss = total / k
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            n_images += len(images)
            sums["loss"] = sums.get("loss", 0.0) + stats[0] / k
            for name, v in zip(loss_dict, stats[1:], strict=True):
                sums[name] = sums.get(name, 0.0) + v / k
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if opts.clip_grad_norm:
            params = [p for p in self.module.parameters() if p.grad is not None]
            sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, opts.clip_grad_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sums["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.iter += 1
        sums["images"] = float(n_images)
        if scale is not None:
            sums["scale"] = float(scale)
        self.latest = sums

    def _raise_non_finite(self, terms: dict[str, float]) -> None:
        detail = ", ".join(f"{k}={v:.4g}" for k, v in terms.items()) or "all samples bad"
        raise NonFiniteLossError(
            f"training stopped: the loss became non-finite at iteration {self.iter + 1} "
            f"(epoch {self.epoch + 1}; {detail}). The last good checkpoint is kept; try a lower "
            "train.lr, a longer train.warmup_iters or train.clip_grad_norm"
        )

    def state_dict(self) -> dict[str, Any]:
        """Training position and optimizer/scheduler/scaler states (RNG states are added by the
        checkpoint hook)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "iteration": self.iter,
            "best_metric": self.best_metric,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.iter = int(state["iteration"])
        self.best_metric = state.get("best_metric")
