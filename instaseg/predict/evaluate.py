"""``instaseg evaluate`` as functions: score a trained model (through the Predictor, exactly as training's
validation does) or a COCO results file on a dataset, then write the report folder."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.errors import ConfigError, DataError
from instaseg.evaluation.coco import IOU_TYPES, STAT_NAMES, evaluate_results
from instaseg.evaluation.panoptic import format_pq_table
from instaseg.evaluation.panoptic_report import panoptic_metrics
from instaseg.evaluation.report import write_report
from instaseg.evaluation.results import load_results
from instaseg.evaluation.summary import EvalReport, full_report, resolve_ground_truth, subset_gt
from instaseg.evaluation.tables import headline_metrics, per_class_rows, pr_curve_rows, write_csv
from instaseg.models.checkpoint import load_model
from instaseg.ops.refine import MaskRefinement
from instaseg.predict.dataset import FirstImages, map_labels, predict_dataset
from instaseg.predict.panoptic import PanopticValidator
from instaseg.predict.predictor import Predictor, check_device
from instaseg.structures.panoptic import PanopticResult
from instaseg.viz.draw import make_grid
from instaseg.viz.figures import save_image
from instaseg.viz.panoptic import overlay_panoptic


@dataclass
class Evaluation:
    """What :func:`evaluate` computed: the report, the dataset it drew on (None when only a COCO JSON
    was read), the run directory of a checkpoint (for training curves) and notes for the report."""

    report: EvalReport
    dataset: Any
    run_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    panoptic: PanopticOutcome | None = None


@dataclass
class PanopticOutcome:
    """PQ of a panoptic checkpoint on a panoptic dataset (:class:`PanopticValidator`'s result, the
    categories) and the first images as ``(RGB uint8 image, GT, prediction)`` for the report."""

    result: dict[str, Any]
    categories: list[dict[str, Any]]
    samples: list[tuple[np.ndarray, PanopticResult, PanopticResult]] = field(default_factory=list)

    def table(self) -> str:
        return format_pq_table(self.result, self.categories)


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory a checkpoint file (or run directory) belongs to."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def parse_iou_types(text: str) -> tuple[str, ...]:
    """``"segm,bbox"`` -> ``("segm", "bbox")``; ConfigError for anything else."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds or any(k not in IOU_TYPES for k in kinds):
        raise ConfigError(f"--iou-types {text!r}: use a comma list of {', '.join(IOU_TYPES)}")
    return kinds


def checkpoint_predictor(
    checkpoint: str | Path, *, device: str = "cpu", score_thresh: float | None = None,
    tta: bool | None = None,
    refine: bool | None = None,
) -> Predictor:
    """The Predictor of the model in ``checkpoint``; ``score_thresh``, ``tta`` and ``refine`` default
    to the run's own ``eval.score_thresh``, ``eval.tta`` and ``eval.refine_masks``."""
    check_device(device)
    model, meta = load_model(checkpoint, device=device)
    run_eval = (meta.get("config") or {}).get("eval") or {}
    thr = float(run_eval.get("score_thresh", 0.05) if score_thresh is None else score_thresh)
    flips = bool(run_eval.get("tta", False) if tta is None else tta)
    refined = bool(run_eval.get("refine_masks", False) if refine is None else refine)
    return Predictor.from_model(model, meta, device=device, score_thresh=thr, tta=flips,
                                refine=MaskRefinement() if refined else None)


def _run_eval(predictor: Predictor) -> dict[str, Any]:
    return (predictor.meta.get("config") or {}).get("eval") or {}


def checkpoint_results(
    checkpoint: str | Path,
    dataset: Any,
    *,
    batch_size: int | None = None,
    device: str = "cpu",
    score_thresh: float | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    predictor: Predictor | None = None,
) -> list[dict[str, Any]]:
    """COCO results of the model in ``checkpoint`` on ``dataset`` (untransformed), through the
    Predictor. ``batch_size`` and ``score_thresh`` default to the run's own ``eval.batch_size`` and
    ``eval.score_thresh``, so a run's metrics.json is reproduced exactly. ``predictor``: that
    checkpoint's :func:`checkpoint_predictor`, when the caller already has it."""
    if predictor is None:
        predictor = checkpoint_predictor(checkpoint, device=device, score_thresh=score_thresh)
    run_eval = _run_eval(predictor)
    mapping = map_labels(predictor.class_names, dataset, str(checkpoint))
    if log is not None:
        log(f"{predictor.meta['path']}: {predictor.name} on {len(dataset)} images ({device}, "
            f"score >= {predictor.score_thresh}{', test-time flips' if predictor.tta else ''}"
            f"{', refined masks' if predictor.refine else ''})")
    results, _ = predict_dataset(
        predictor,
        dataset,
        category_ids=mapping,
        batch_size=int(batch_size or run_eval.get("batch_size") or 2),
        progress=progress,
    )
    return results


def checkpoint_panoptic(
    predictor: Predictor,
    dataset: Any,
    *,
    batch_size: int | None = None,
    max_images: int | None = None,
    num_samples: int = 0,
    log: Callable[[str], None] | None = None,
) -> PanopticOutcome | None:
    """PQ of a panoptic model (``predictor``, e.g. :func:`checkpoint_predictor`) on ``dataset``
    (untransformed, with ``panoptic_categories``) exactly as training's validator computes it
    (:meth:`PanopticValidator.run`); None for a model that is not panoptic. A panoptic model on a
    dataset without panoptic ground truth gets a ``log`` line and None (instance AP only)."""
    if not predictor.is_panoptic:
        return None
    if not getattr(dataset, "panoptic_categories", None):
        if log is not None:
            log(f"{predictor.meta.get('path', predictor.name)}: a panoptic model, but the dataset has no "
                "panoptic ground truth (stuff and thing segments): instance mask/box AP of the things only")
        return None
    run_eval = _run_eval(predictor)
    validator = PanopticValidator("", None, dataset=dataset, max_images=max_images, num_samples=num_samples,
                                  batch_size=int(batch_size or run_eval.get("batch_size") or 2))
    metrics, samples = validator.run(predictor)
    shown = []
    for i, (image, pred) in enumerate(samples):
        rgb = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        shown.append((rgb, dataset.load_record(i).extra["panoptic"], pred))
    return PanopticOutcome(metrics["panoptic"], validator.categories, shown)


def evaluate(
    data: str,
    *,
    checkpoint: str | Path | None = None,
    predictions: str | Path | None = None,
    split: str | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    score_thresh: float | None = None,
    max_images: int | None = None,
    iou_types: tuple[str, ...] = IOU_TYPES,
    analysis: bool = True,
    need_images: bool = True,
    num_samples: int = 6,
    log: Callable[[str], None] | None = None,
    tta: bool | None = None,
    refine: bool | None = None,
) -> Evaluation:
    """Score ``checkpoint`` (a run directory or checkpoint file) or ``predictions`` (a COCO results
    JSON) on the dataset spec ``data``: every metric of :func:`~instaseg.evaluation.summary.full_report`
    (with ``analysis`` and both IoU types), else the COCO stats of ``iou_types``. A panoptic checkpoint
    on a panoptic dataset adds PQ (``metrics["panoptic"]``, as training's validator computes it) and
    ``num_samples`` panoptic pictures (with ``need_images``). ``tta`` (default: the run's
    ``eval.tta``) adds test-time flips to a checkpoint's predictions; ``refine`` (default: the run's
    ``eval.refine_masks``) refines its masks (:mod:`instaseg.ops.refine`)."""
    if (checkpoint is None) == (predictions is None):
        raise ConfigError("evaluate needs exactly one of --checkpoint RUN_OR_FILE or --predictions FILE")
    gt, dataset, notes = resolve_ground_truth(data, split, need_images=checkpoint is not None or need_images)
    if max_images is not None:
        if dataset is not None:
            dataset = FirstImages(dataset, max_images)
            keep = {int(dataset.image_info(i)["id"]) for i in range(len(dataset))}
        else:
            keep = {int(im["id"]) for im in gt["images"][:max_images]}
        gt = subset_gt(gt, keep)
    run_dir, panoptic = None, None
    if predictions is not None:
        results = load_results(predictions, gt, subset=max_images is not None or split not in (None, "all"))
        if log is not None:
            log(f"{predictions}: {len(results)} results on {len(gt['images'])} images")
    else:
        assert checkpoint is not None
        if dataset is None:
            raise DataError(data, "--checkpoint needs the dataset's images: " + "; ".join(notes))
        predictor = checkpoint_predictor(checkpoint, device=device, score_thresh=score_thresh, tta=tta,
                                         refine=refine)
        results = checkpoint_results(
            checkpoint, dataset, batch_size=batch_size, device=device, progress=sys.stderr.isatty(),
            log=log, predictor=predictor,
        )
        run_dir = run_dir_of(checkpoint)
        panoptic = checkpoint_panoptic(  # the whole dataset: FirstImages keeps no panoptic metadata
            predictor, getattr(dataset, "base", dataset), batch_size=batch_size, max_images=max_images,
            num_samples=num_samples if need_images else 0, log=log,
        )
    if analysis and set(iou_types) == set(IOU_TYPES):
        report = full_report(gt, results)
    else:
        metrics, evals = evaluate_results(gt, results, iou_types=iou_types, return_evals=True)
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}
        for kind in IOU_TYPES:
            metrics.setdefault(kind, {n: -1.0 for n in STAT_NAMES})
        ordered = {k: metrics[k] for k in ("segm", "bbox", "per_class")}
        report = EvalReport(
            metrics={**ordered, "pq": {}}, gt=gt, results=results, evals=evals, class_names=names
        )
    if panoptic is not None:  # the full PQ (things and stuff) replaces the things-only one
        report.metrics["pq"] = {}
        report.metrics["panoptic"] = panoptic_metrics(panoptic.result, panoptic.categories)
    return Evaluation(report, dataset, run_dir, notes, panoptic)


def write_evaluation(
    output: str | Path,
    evaluation: Evaluation,
    *,
    title: str,
    write_results: bool,
    figures: bool = True,
    num_samples: int = 6,
) -> dict[str, Path]:
    """Write the report folder (metrics.json, analysis, figures, report.html) and, with
    ``write_results``, the COCO results as ``results.json``; returns the written paths."""
    out = Path(output)
    if write_results:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(evaluation.report.results))
    extra: dict[str, Path] = {}
    pan = evaluation.panoptic
    if pan is not None and figures:  # GT beside prediction, as `evaluate --panoptic-gt/--panoptic-pred`
        for i, (image, gt, pred) in enumerate(pan.samples[:num_samples]):
            grid = make_grid([overlay_panoptic(image, gt, pan.categories),
                              overlay_panoptic(image, pred, pan.categories)], cols=2, pad=4)
            extra[f"panoptic_{i}_gt_vs_pred"] = save_image(grid, out / "figures" / f"panoptic_{i:02d}.png")
    return write_report(
        out,
        evaluation.report,
        dataset=evaluation.dataset,
        run_dir=evaluation.run_dir,
        notes=evaluation.notes,
        figures=figures,
        title=title,
        num_samples=num_samples,
        extra_images=extra,
    )


def write_pipeline_outputs(
    evaluation: Evaluation, *, metrics_file: str | Path | None = None, plots_dir: str | Path | None = None
) -> list[Path]:
    """The files a DVC pipeline tracks: ``metrics_file`` (the headline metrics, see
    :func:`~instaseg.evaluation.tables.headline_metrics`) and in ``plots_dir`` ``pr_curve.csv``
    (mask and box precision at 101 recall points, IoU 0.5 and 0.75) and ``per_class_ap.json``."""
    written = []
    metrics = evaluation.report.metrics
    if metrics_file is not None:
        path = Path(metrics_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(headline_metrics(metrics), indent=2))
        written.append(path)
    if plots_dir is not None:
        out = Path(plots_dir)
        out.mkdir(parents=True, exist_ok=True)
        for kind, ev in evaluation.report.evals.items():
            name = "pr_curve.csv" if kind == "segm" else f"pr_curve_{kind}.csv"
            written.append(write_csv(out / name, pr_curve_rows(ev)))
        path = out / "per_class_ap.json"
        path.write_text(json.dumps(per_class_rows(metrics), indent=2))
        written.append(path)
    return written
