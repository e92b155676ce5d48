"""``instaseg evaluate`` as functions: score a trained model (through the Predictor, exactly as training's
validation does) or a COCO results file on a dataset, then write the report folder."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instaseg.errors import ConfigError, DataError
from instaseg.evaluation.coco import IOU_TYPES, STAT_NAMES, evaluate_results
from instaseg.evaluation.report import write_report
from instaseg.evaluation.results import load_results
from instaseg.evaluation.summary import EvalReport, full_report, resolve_ground_truth, subset_gt
from instaseg.evaluation.tables import headline_metrics, per_class_rows, pr_curve_rows, write_csv
from instaseg.models.checkpoint import load_model
from instaseg.predict.dataset import FirstImages, map_labels, predict_dataset
from instaseg.predict.predictor import Predictor, check_device


@dataclass
class Evaluation:
    """What :func:`evaluate` computed: the report, the dataset it drew on (None when only a COCO JSON
    was read), the run directory of a checkpoint (for training curves) and notes for the report."""

    report: EvalReport
    dataset: Any
    run_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


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


def checkpoint_results(
    checkpoint: str | Path,
    dataset: Any,
    *,
    batch_size: int | None = None,
    device: str = "cpu",
    score_thresh: float | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """COCO results of the model in ``checkpoint`` on ``dataset`` (untransformed), through the
    Predictor. ``batch_size`` and ``score_thresh`` default to the run's own ``eval.batch_size`` and
    ``eval.score_thresh``, so a run's metrics.json is reproduced exactly."""
    check_device(device)
    model, meta = load_model(checkpoint, device=device)
    run_eval = (meta.get("config") or {}).get("eval") or {}
    thr = float(run_eval.get("score_thresh", 0.05) if score_thresh is None else score_thresh)
    predictor = Predictor.from_model(model, meta, device=device, score_thresh=thr)
    mapping = map_labels(predictor.class_names, dataset, str(checkpoint))
    if log is not None:
        log(f"{predictor.meta['path']}: {predictor.name} on {len(dataset)} images ({device}, "
            f"score >= {predictor.score_thresh})")
    results, _ = predict_dataset(
        predictor,
        dataset,
        category_ids=mapping,
        batch_size=int(batch_size or run_eval.get("batch_size") or 2),
        progress=progress,
    )
    return results


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
    log: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score ``checkpoint`` (a run directory or checkpoint file) or ``predictions`` (a COCO results
    JSON) on the dataset spec ``data``: every metric of :func:`~instaseg.evaluation.summary.full_report`
    (with ``analysis`` and both IoU types), else the COCO stats of ``iou_types``."""
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
    run_dir = None
    if predictions is not None:
        results = load_results(predictions, gt, subset=max_images is not None or split not in (None, "all"))
        if log is not None:
            log(f"{predictions}: {len(results)} results on {len(gt['images'])} images")
    else:
        assert checkpoint is not None
        if dataset is None:
            raise DataError(data, "--checkpoint needs the dataset's images: " + "; ".join(notes))
        results = checkpoint_results(
            checkpoint, dataset, batch_size=batch_size, device=device, score_thresh=score_thresh,
            progress=sys.stderr.isatty(), log=log,
        )
        run_dir = run_dir_of(checkpoint)
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
    return Evaluation(report, dataset, run_dir, notes)


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
    return write_report(
        out,
        evaluation.report,
        dataset=evaluation.dataset,
        run_dir=evaluation.run_dir,
        notes=evaluation.notes,
        figures=figures,
        title=title,
        num_samples=num_samples,
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
