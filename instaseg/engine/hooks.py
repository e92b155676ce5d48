"""Hooks the training run registers: checkpoints, validation, progress, TensorBoard, MLflow, time budget.

Only rank 0 writes files or logs; the other ranks run the same hooks as no-ops (validation makes
them wait at a barrier).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from instaseg.engine import distributed as du
from instaseg.engine.checkpoint import BEST, LAST, capture_rng_state, save_checkpoint
from instaseg.engine.evaluate import EvalSamples, overlay, write_overlays
from instaseg.engine.trainer import HookBase

METRIC_KINDS = ("segm", "bbox", "panoptic")  # sections of a validation's metrics (panoptic: PQ tables)


def key_metric(metrics: dict[str, Any]) -> tuple[str, float]:
    """The metric ``best.pt`` follows: mask AP, or PQ (All) for a panoptic validation without AP."""
    if "segm" in metrics:
        return "mask AP", float(metrics["segm"]["AP"])
    return "PQ", float(metrics["panoptic"]["All"]["pq"])


def describe_metrics(metrics: dict[str, Any]) -> str:
    """One log line's worth: mask and box AP, and PQ (All/Things/Stuff) when present."""
    parts = []
    if "segm" in metrics:
        parts.append(f"mask AP {float(metrics['segm']['AP']):.4f}, box AP {float(metrics['bbox']['AP']):.4f}")
    if "panoptic" in metrics:
        pq = metrics["panoptic"]
        groups = [g for g in ("All", "Things", "Stuff") if g in pq]
        parts.append("PQ " + ", ".join(f"{g} {float(pq[g]['pq']):.4f}" for g in groups))
    return "; ".join(parts)


def _publish_eval(trainer: Any, metrics: dict[str, Any], samples: EvalSamples) -> None:
    for h in trainer.hooks:
        fn = getattr(h, "on_eval", None)
        if fn is not None:
            fn(metrics, samples)


class CheckpointHook(HookBase):
    """``checkpoints/last.pt`` every ``period`` iterations (0: never mid-epoch), at each epoch end and
    at the end. ``meta`` (model_spec, class_names, category_ids, config) goes into every file."""

    def __init__(self, run_dir: Path, meta: dict[str, Any], period: int = 0) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.meta = meta
        self.period = period
        self.last_saved = -1

    def state(self) -> dict[str, Any]:
        t = self.trainer
        return {
            "model": t.module.state_dict(),
            **t.state_dict(),
            "rng": capture_rng_state(),
            **self.meta,
        }

    def save(self) -> None:
        if du.is_main_process() and self.last_saved != self.trainer.iter:
            save_checkpoint(self.state(), self.dir / LAST)
            self.last_saved = self.trainer.iter

    def after_step(self) -> None:
        t = self.trainer
        if self.period and t.iter % self.period == 0 and t.iter < t.max_iter:
            self.save()

    def after_epoch(self) -> None:
        self.save()

    def after_train(self) -> None:
        self.save()


class EvalHook(HookBase):
    """Validate every ``period`` epochs (0: only at the end) and after training. Keeps
    ``checkpoints/best.pt`` (highest mask AP, or PQ for panoptic validation); the final metrics go to
    ``metrics.json``, a line per validation to ``history.jsonl`` and prediction overlays to ``overlays/``.

    ``final_validator`` (e.g. with test-time flips, which cost two forwards an image) scores the final
    model for ``metrics.json`` after ``validator`` has added the last point of the learning curve, as
    Detectron2 runs its test-time augmentation once after training: the periodic validations stay
    cheap, and every ``history.jsonl`` point and the ``best.pt`` choice use one scoring. Its row in
    ``history.jsonl`` says ``"final": true``; it never competes for ``best.pt``."""

    def __init__(
        self,
        validator: Any,
        *,
        run_dir: Path,
        meta: dict[str, Any],
        period: int = 0,
        amp: bool = False,
        class_names: list[str] | None = None,
        progress: bool = False,
        log: Any = print,
        final_validator: Any = None,
    ) -> None:
        self.validator = validator
        self.final_validator = final_validator
        self.run_dir = Path(run_dir)
        self.meta = meta
        self.period = period
        self.amp = amp
        self.class_names = class_names
        self.progress = progress
        self.log = log
        self.final: dict[str, Any] | None = None
        self._done_at = -1

    def _validate(self, final: bool = False) -> dict[str, Any] | None:
        """One validation; ``final``: with ``final_validator`` (no ``best.pt`` update)."""
        t = self.trainer
        metrics = None
        started = time.perf_counter()
        if du.is_main_process():
            validator = self.final_validator if final else self.validator
            metrics, samples = validator(t.module, t.device, amp=self.amp, progress=self.progress)
            _, ap = key_metric(metrics)
            what = "final validation" if final else "validation"
            self.log(f"{what} (epoch {t.epoch}, iter {t.iter}): {describe_metrics(metrics)}")
            with open(self.run_dir / "history.jsonl", "a") as f:
                row: dict[str, Any] = {"epoch": t.epoch, "iteration": t.iter}
                if final:
                    row["final"] = True
                row.update({k: metrics[k] for k in METRIC_KINDS if k in metrics})
                f.write(json.dumps(row) + "\n")
            if not final and (t.best_metric is None or ap > t.best_metric):
                t.best_metric = ap
                state = {
                    "model": t.module.state_dict(),
                    "epoch": t.epoch,
                    "iteration": t.iter,
                    "best_metric": ap,
                    **self.meta,
                }
                save_checkpoint(state, self.run_dir / "checkpoints" / BEST)
            _publish_eval(t, metrics, samples)
            self._samples = samples
        self._done_at = t.iter
        du.barrier()
        seconds = float(du.broadcast_object(time.perf_counter() - started))  # type: ignore[arg-type]
        for h in t.hooks:
            fn = getattr(h, "on_eval_timed", None)
            if fn is not None:
                fn(seconds)
        return metrics

    def after_epoch(self) -> None:
        t = self.trainer
        if self.period and t.epoch % self.period == 0 and t.iter < t.max_iter:
            self._validate()

    def after_train(self) -> None:
        t = self.trainer
        if self._done_at == t.iter and self.final is not None:
            return
        if self.final_validator is None:
            metrics = self._validate()
        else:
            if self.period and self._done_at != t.iter:
                self._validate()  # the learning curve's last point, scored as the others
            metrics = self._validate(final=True)
        if metrics is not None:
            self.final = metrics
            out = {k: metrics[k] for k in METRIC_KINDS if k in metrics}
            if "per_class" in metrics:
                out["per_class"] = metrics["per_class"]
            (self.run_dir / "metrics.json").write_text(json.dumps(out, indent=2))
            write_overlays(self._samples, self.run_dir / "overlays", self.class_names)


class ProgressHook(HookBase):
    """A tqdm bar over all iterations with loss, lr and ETA (rank 0, ``bar``), else a log line every
    ``log_period`` iterations (``lines``)."""

    def __init__(
        self, *, bar: bool = True, lines: bool = True, log_period: int = 10, log: Any = print
    ) -> None:
        self.use_bar = bar
        self.lines = lines
        self.log_period = max(1, log_period)
        self.log = log
        self.bar: Any = None

    def before_train(self) -> None:
        if self.use_bar and du.is_main_process():
            from tqdm import tqdm

            t = self.trainer
            self.bar = tqdm(total=t.max_iter, initial=t.iter, desc="train", unit="it", dynamic_ncols=True)

    def after_step(self) -> None:
        t = self.trainer
        if not du.is_main_process():
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                epoch=t.epoch + 1, loss=f"{t.latest['loss']:.3f}", lr=f"{t.latest['lr']:.2e}", refresh=False
            )
        elif self.lines and (t.iter % self.log_period == 0 or t.iter == t.max_iter):
            elapsed = time.perf_counter() - t.start_time
            self.log(
                f"iter {t.iter}/{t.max_iter} epoch {t.epoch + 1} loss {t.latest['loss']:.4f} "
                f"lr {t.latest['lr']:.3g} ({elapsed:.0f}s)"
            )

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def after_train(self) -> None:
        self._close()

    def on_error(self, exc: BaseException) -> None:
        self._close()


class TimeBudgetHook(HookBase):
    """Fits the run into ``minutes``: warmup, the whole LR schedule and the final validation.

    After ``calibrate_after`` steps of this process it measures seconds per step (the first steps
    are left out: they pay for allocator warm-up), reserves time for the final validation and
    saving, and sets the schedule's length (``trainer.max_iter`` and ``scheduler.total``) to the
    steps that fit, never more than the configured number; it re-measures every ``recheck`` steps
    (Ultralytics' ``time=`` does this once per epoch). A cosine schedule so ends at its minimum on
    time instead of being cut at full learning rate. It also stops the run outright once the time
    left is no more than the reserve (a hard cap, as before).

    The validation reserve: the measured duration of the last periodic validation times
    ``final_cost`` (what the final validation costs in periodic ones: 3 when it adds a two-view
    test-time-flip pass to a plain one) when there was one, else ``val_images`` times the training
    seconds per image (a validation image costs less than a training one: forward only) plus
    ``fixed_reserve_s``.
    """

    def __init__(
        self,
        minutes: float,
        *,
        val_images: int = 0,
        images_per_step: int = 1,
        elapsed_before_s: float = 0.0,
        calibrate_after: int = 10,
        recheck: int = 50,
        fixed_reserve_s: float = 3.0,
        final_cost: float = 1.0,
        log: Any = print,
    ) -> None:
        self.seconds = minutes * 60.0
        self.final_cost = final_cost
        self.val_images = val_images
        self.images_per_step = max(1, images_per_step)
        self.elapsed_before_s = elapsed_before_s
        self.calibrate_after = max(2, calibrate_after)
        self.recheck = max(1, recheck)
        self.fixed_reserve_s = fixed_reserve_s
        self.log = log
        self.configured: int | None = None
        self.eval_seconds: float | None = None  # measured by EvalHook.on_eval_timed
        self.sec_per_step: float | None = None
        self._mark: tuple[float, int] | None = None
        self._steps = 0
        self.planned: int | None = None

    def before_train(self) -> None:
        self.configured = self.trainer.max_iter

    def elapsed(self) -> float:
        return self.elapsed_before_s + time.perf_counter() - self.trainer.start_time

    def reserve(self) -> float:
        """Seconds kept for the final validation and saving."""
        if self.eval_seconds is not None:
            return 1.2 * self.final_cost * self.eval_seconds + self.fixed_reserve_s
        if self.sec_per_step is None:
            return self.fixed_reserve_s
        return self.val_images * self.sec_per_step / self.images_per_step + self.fixed_reserve_s

    def on_eval_timed(self, seconds: float) -> None:
        self.eval_seconds = seconds
        self._mark = None  # the validation's time is not training time

    def _plan(self) -> None:
        t = self.trainer
        # 5% slack: steps slow down when the machine gets busy, and the schedule should end on its
        # own (learning rate at its minimum) rather than be cut by the hard cap.
        left = 0.95 * (self.seconds - self.elapsed() - self.reserve())
        fit = t.iter + max(1, int(left / self.sec_per_step))
        cap = self.configured or fit
        # At least one more step, but never past the configured length (a check on the last step
        # would otherwise add one).
        total = max(min(t.iter + 1, cap), min(cap, fit))
        if total == t.max_iter:
            return
        t.max_iter = total
        if hasattr(t.scheduler, "total"):
            t.scheduler.total = total
        if self.planned is None or abs(total - self.planned) > 0.02 * self.planned:
            self.log(
                f"time budget {self.seconds / 60:.1f} min: schedule set to {total} iterations "
                f"({self.sec_per_step:.3f} s/it, {self.reserve():.0f} s kept for validation; "
                f"configured {self.configured})"
            )
        self.planned = total

    def after_step(self) -> None:
        t = self.trainer
        self._steps += 1
        now = time.perf_counter()
        if self._steps == 2 or self._mark is None:
            self._mark = (now, t.iter)
        elif self._steps >= self.calibrate_after and (
            self._steps == self.calibrate_after or self._steps % self.recheck == 0
        ):
            t0, it0 = self._mark
            if t.iter > it0:
                measured = (now - t0) / (t.iter - it0)
                # All ranks must agree on the plan: take rank 0's view (same data, same speed).
                self.sec_per_step = float(du.broadcast_object(measured))  # type: ignore[arg-type]
                self._plan()
        over = self.elapsed() > self.seconds - self.reserve()
        if du.all_true(not over, t.device):
            return
        t.request_stop(f"time budget of {self.seconds / 60:.1f} min reached")
        self.log(f"warning: stopping at iteration {t.iter}/{t.max_iter}: {t.stop_reason}")


def _flat(metrics: dict[str, Any]) -> dict[str, float]:
    out = {f"val/{kind}/{k}": float(v) for kind in ("segm", "bbox") if kind in metrics
           for k, v in metrics[kind].items()}
    for group, values in metrics.get("panoptic", {}).items():
        if group in ("All", "Things", "Stuff"):
            out.update({f"val/panoptic/{group}_{k}": float(v) for k, v in values.items()})
    return out


class TensorBoardHook(HookBase):
    """Scalars (losses, lr every ``period`` iterations; val metrics) and overlay images in
    ``<run_dir>/tensorboard``."""

    def __init__(self, run_dir: Path, period: int = 10, class_names: list[str] | None = None) -> None:
        self.dir = Path(run_dir) / "tensorboard"
        self.period = max(1, period)
        self.class_names = class_names
        self.writer: Any = None

    def before_train(self) -> None:
        if du.is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.dir), purge_step=self.trainer.iter or None)

    def after_step(self) -> None:
        t = self.trainer
        if self.writer is not None and (t.iter % self.period == 0 or t.iter == t.max_iter):
            for k, v in t.latest.items():
                self.writer.add_scalar(f"train/{k}", v, t.iter)

    def on_eval(self, metrics: dict[str, Any], samples: EvalSamples) -> None:
        if self.writer is None:
            return
        t = self.trainer
        for k, v in _flat(metrics).items():
            self.writer.add_scalar(k, v, t.iter)
        for i, (image, output) in enumerate(samples):
            self.writer.add_image(
                f"val/overlay_{i}", overlay(image, output, self.class_names), t.iter, dataformats="HWC"
            )
        self.writer.flush()

    def after_train(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def on_error(self, exc: BaseException) -> None:
        self.after_train()


class MLflowHook(HookBase):
    """MLflow tracking: params (the flattened config), per-epoch mean losses, val metrics, overlay
    figures, and the final checkpoints as artifacts. A resumed run continues the same MLflow run.

    Before the run ends, every hook with ``on_mlflow_run(mlflow, run_dir=..., register_name=...)``
    is called (``instaseg train`` logs the pyfunc model there; the engine does not know predictors)."""

    def __init__(
        self, run_dir: Path, *, uri: str, experiment: str, params: dict[str, Any],
        register_name: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.uri = uri
        self.experiment = experiment
        self.params = params
        self.register_name = register_name
        self.mlflow: Any = None
        self._sums: dict[str, float] = {}
        self._count = 0

    def before_train(self) -> None:
        if not du.is_main_process():
            return
        import logging

        import mlflow

        for name in ("mlflow", "alembic"):  # table-creation chatter on a new store
            logging.getLogger(name).setLevel(logging.WARNING)
        self.mlflow = mlflow
        mlflow.set_tracking_uri(self.uri)
        if mlflow.get_experiment_by_name(self.experiment) is None:
            artifacts = None
            if self.uri.startswith("sqlite:///"):
                artifacts = (Path(self.uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
            mlflow.create_experiment(self.experiment, artifact_location=artifacts)
        mlflow.set_experiment(self.experiment)
        id_file = self.run_dir / "mlflow_run_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else self.run_dir.name)
        if run_id is None:
            id_file.write_text(run.info.run_id)
            mlflow.log_params({k: str(v)[:500] for k, v in self.params.items()})

    def after_step(self) -> None:
        if self.mlflow is None:
            return
        for k, v in self.trainer.latest.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1

    def after_epoch(self) -> None:
        if self.mlflow is None or not self._count:
            return
        t = self.trainer
        means = {f"train/{k}": v / self._count for k, v in self._sums.items() if k != "images"}
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in means.items()}, step=t.epoch)
        self._sums, self._count = {}, 0

    def on_eval(self, metrics: dict[str, Any], samples: EvalSamples) -> None:
        if self.mlflow is None:
            return
        t = self.trainer
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in _flat(metrics).items()}, step=t.epoch)
        for i, (image, output) in enumerate(samples):
            self.mlflow.log_image(overlay(image, output), f"overlays/epoch{t.epoch:03d}_val_{i}.png")

    def after_train(self) -> None:
        if self.mlflow is None:
            return
        ckpt = self.run_dir / "checkpoints"
        for name in (BEST, LAST):
            if (ckpt / name).is_file():
                # "model" is the MLflow model's name (runs:/<id>/model): checkpoints go beside it
                self.mlflow.log_artifact(str(ckpt / name), artifact_path="checkpoints")
        for name in ("metrics.json", "config.yaml"):
            if (self.run_dir / name).is_file():
                self.mlflow.log_artifact(str(self.run_dir / name))
        for h in self.trainer.hooks:
            fn = getattr(h, "on_mlflow_run", None)
            if fn is not None:
                fn(self.mlflow, run_dir=self.run_dir, register_name=self.register_name)
        self.mlflow.end_run()
        self.mlflow = None

    def on_error(self, exc: BaseException) -> None:
        if self.mlflow is not None:
            self.mlflow.end_run(status="FAILED")
            self.mlflow = None
