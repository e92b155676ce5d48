"""Validation for the trainer, through the one inference path.

The engine knows nothing of predictors: :func:`~instaseg.engine.launch.run_training` takes a
``make_validator(cfg)`` and calls what it returns as ``validator(model, device, amp=...) -> (metrics,
samples)``. :class:`PredictorValidator` is that callable: it wraps the live model in a
:class:`~instaseg.predict.predictor.Predictor` and scores it exactly as ``instaseg evaluate
--checkpoint`` does (same ground truth, same untransformed images, same ``score_thresh`` filter, same
masks), so a run's ``metrics.json`` and ``instaseg evaluate --checkpoint RUN --data VAL`` agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from instaseg.config import Config
from instaseg.engine.launch import TrainResult, run_training
from instaseg.engine.rundir import resolve_resume
from instaseg.engine.trainer import HookBase
from instaseg.errors import DataError
from instaseg.evaluation.summary import coco_metrics, resolve_ground_truth, subset_gt
from instaseg.models import model_task
from instaseg.models.checkpoint import load_checkpoint
from instaseg.models.registry import list_models
from instaseg.ops.refine import MaskRefinement
from instaseg.predict.dataset import FirstImages, Samples, predict_dataset
from instaseg.predict.panoptic import PanopticValidator
from instaseg.predict.predictor import Predictor


class PredictorValidator:
    """COCO mask/box AP of a model on the dataset ``spec`` (``split``), through a Predictor.

    The ground truth is built once. Each call returns ``(metrics, samples)``: ``{"segm", "bbox",
    "per_class"}`` on a 0-1 scale and the first ``num_samples`` ``(image, Instances)`` pairs.
    """

    def __init__(
        self,
        spec: str,
        split: str | None,
        *,
        batch_size: int = 8,
        score_thresh: float = 0.05,
        max_images: int | None = None,
        num_samples: int = 0,
        num_workers: int = 0,
        tta: bool = False,
        refine: bool = False,
    ) -> None:
        gt, dataset, notes = resolve_ground_truth(spec, split)
        if dataset is None:
            raise DataError(spec, "validation needs the dataset's images: " + "; ".join(notes))
        if max_images is not None:
            dataset = FirstImages(dataset, max_images)
            gt = subset_gt(gt, {int(dataset.image_info(i)["id"]) for i in range(len(dataset))})
        self.gt, self.dataset = gt, dataset
        self.batch_size, self.score_thresh = batch_size, score_thresh
        self.num_samples, self.num_workers, self.tta = num_samples, num_workers, tta
        self.refine = refine

    def __call__(
        self, model: nn.Module, device: torch.device, *, amp: bool = False, progress: bool = False
    ) -> tuple[dict[str, Any], Samples]:
        was_training = model.training
        model.eval()
        try:
            predictor = Predictor(
                model,
                self.dataset.class_names,
                device=device,
                score_thresh=self.score_thresh,
                category_ids=self.dataset.category_ids,
                autocast=amp,
                tta=self.tta,
                refine=MaskRefinement() if self.refine else None,
            )
            results, samples = predict_dataset(
                predictor,
                self.dataset,
                category_ids=predictor.category_ids,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                num_samples=self.num_samples,
                progress=progress,
            )
        finally:
            model.train(was_training)
        metrics, _ = coco_metrics(self.gt, results)
        return metrics, samples


def make_validator(cfg: Config) -> Any:
    """The validation of a training run: ``data.val`` (``data.val_split``) with the ``eval`` section
    (PQ for a panoptic model, point AP for a point-cloud model, COCO AP otherwise)."""
    if model_task(cfg.model.name) == "points":
        from instaseg.predict.points import PointValidator

        return PointValidator(cfg.data.val, cfg.data.val_split, max_scenes=cfg.eval.max_images)
    if model_task(cfg.model.name) == "panoptic":
        return PanopticValidator(cfg.data.val, cfg.data.val_split, batch_size=cfg.eval.batch_size,
                                 max_images=cfg.eval.max_images, num_samples=cfg.eval.num_overlays)
    return PredictorValidator(
        cfg.data.val,
        cfg.data.val_split,
        batch_size=cfg.eval.batch_size,
        score_thresh=cfg.eval.score_thresh,
        max_images=cfg.eval.max_images,
        num_samples=cfg.eval.num_overlays,
        num_workers=cfg.data.num_workers,
        tta=cfg.eval.tta,
        refine=cfg.eval.refine_masks,
    )


class MLflowModelHook(HookBase):
    """Logs the run's model as an MLflow pyfunc model (:mod:`instaseg.predict.mlflow_model`) when the
    engine's MLflow run ends, registered as ``output.mlflow_register_name`` when set."""

    def __init__(self, score_thresh: float = 0.5) -> None:
        self.score_thresh = score_thresh

    def on_mlflow_run(self, mlflow: Any, *, run_dir: Path, register_name: str | None) -> None:
        # Imported here: mlflow.pyfunc costs seconds, and only runs that track to MLflow need it.
        from instaseg.predict.mlflow_model import log_model

        log_model(run_dir, register_name=register_name, score_thresh=self.score_thresh)


def train(
    cfg: Config | None = None,
    *,
    output: str | Path | None = None,
    resume: str | Path | None = None,
    overrides: list[str] | None = None,
    hooks: list[Any] | None = None,
) -> TrainResult:
    """:func:`~instaseg.engine.launch.run_training` validated by :class:`PredictorValidator` (what
    ``instaseg train`` runs). Interactive (click) models are not validated here: their metric is the
    click protocol of ``instaseg evaluate-interactive``."""
    if resume is None:
        name = (cfg or Config()).model.name
    else:  # the resumed run's own model
        saved = load_checkpoint(resolve_resume(resume)[1]).get("config") or {}
        name = str(saved.get("model", {}).get("name", ""))
    interactive = bool(name) and name in list_models("interactive")
    return run_training(
        cfg, output=output, resume=resume, overrides=overrides,
        hooks=[*(hooks or []), *([] if interactive else [MLflowModelHook()])],
        make_validator=None if interactive else make_validator,
    )
