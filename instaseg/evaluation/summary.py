"""Every metric of a set of COCO results against a ground truth (COCO segm/bbox, per class, PQ,
TIDE-style errors, confusion, matched IoU statistics), the terminal table, and the ground truth of a
dataset spec. Where the results come from (a checkpoint, a file) is :mod:`instaseg.predict.evaluate`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instaseg.data.build import build_dataset, parse_spec
from instaseg.data.coco import dataset_to_coco
from instaseg.errors import InstasegError
from instaseg.evaluation.coco import STAT_NAMES, CocoEval, evaluate_results, load_coco_gt


@dataclass
class EvalReport:
    """Everything ``instaseg evaluate`` computed; ``metrics`` is what metrics.json holds."""

    metrics: dict[str, Any]
    gt: dict[str, Any]
    results: list[dict[str, Any]]
    evals: dict[str, CocoEval] = field(default_factory=dict)
    errors: dict[str, Any] | None = None
    confusion: tuple[np.ndarray, list[int]] | None = None
    matches: dict[str, np.ndarray] | None = None
    class_names: dict[int, str] = field(default_factory=dict)


def coco_metrics(
    gt: dict[str, Any], results: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, CocoEval]]:
    """``({"segm", "bbox", "per_class"}, evals)`` of ``results``: the numbers metrics.json holds, for
    training's validation and ``instaseg evaluate`` alike. Results without any segmentation give segm
    stats of -1 (undefined)."""
    has_segm = any("segmentation" in r for r in results) or not results
    iou_types = ("segm", "bbox") if has_segm else ("bbox",)
    metrics, evals = evaluate_results(gt, results, iou_types=iou_types, return_evals=True)
    if not has_segm:
        metrics["segm"] = {name: -1.0 for name in STAT_NAMES}
    return {k: metrics[k] for k in ("segm", "bbox", "per_class")}, evals


def full_report(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    *,
    analysis: bool = True,
    pq_score_thresh: float = 0.5,
) -> EvalReport:
    """Compute metrics.json's ``{"segm", "bbox", "per_class", "pq"}`` and, with ``analysis``, the
    error analysis, confusion matrix and matched-IoU statistics the dashboard draws.

    Results without any segmentation give segm stats of -1 (undefined) and an empty PQ.
    """
    from instaseg.evaluation.errors import tide_errors
    from instaseg.evaluation.metrics import confusion_matrix, match_statistics
    from instaseg.evaluation.panoptic import coco_panoptic_quality

    metrics, evals = coco_metrics(gt, results)
    has_segm = "segm" in evals
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}
    pq: dict[str, Any] = {"PQ": -1.0, "SQ": -1.0, "RQ": -1.0, "n": 0, "per_class": {}}
    if has_segm:
        raw = coco_panoptic_quality(gt, results, score_thresh=pq_score_thresh)
        pq = {**raw, "per_class": {names.get(c, str(c)): v for c, v in raw["per_class"].items()}}
        pq["score_thresh"] = pq_score_thresh
    ordered = {k: metrics[k] for k in ("segm", "bbox", "per_class")}
    report = EvalReport(metrics={**ordered, "pq": pq}, gt=gt, results=results, evals=evals, class_names=names)
    if analysis:
        kind = "segm" if has_segm else "bbox"
        report.errors = {"iou_type": kind, **tide_errors(gt, results, iou_type=kind)}
        report.confusion = confusion_matrix(gt, results, iou_type=kind)
        report.matches = match_statistics(gt, results, iou_type=kind)
    return report


def format_table(metrics: dict[str, Any], *, max_classes: int = 30) -> str:
    """The terminal summary: the 12 COCO stats for segm and bbox, PQ, and per-class AP."""
    head = "        " + "".join(f"{n:>7}" for n in STAT_NAMES)
    lines = [head]
    for kind in ("segm", "bbox"):
        if kind in metrics:
            lines.append(f"{kind:<8}" + "".join(_cell(metrics[kind][n]) for n in STAT_NAMES))
    pq = metrics.get("pq") or {}
    if pq.get("n"):
        line = f"PQ {pq['PQ']:.3f}  SQ {pq['SQ']:.3f}  RQ {pq['RQ']:.3f}  over {pq['n']} classes"
        if pq.get("pixel_accuracy", -1) >= 0:
            line += f"; pixel accuracy {pq['pixel_accuracy']:.3f}"
        lines.append(line)
    per_class = metrics.get("per_class") or {}
    rows = [(n, v) for n, v in per_class.items() if v.get("segm", v.get("bbox", {})).get("AP", -1) >= 0]
    if rows:
        lines.append("")
        width = max(len(n) for n, _ in rows[:max_classes])
        lines.append(f"{'class':<{width}}  mask AP   box AP")
        for name, v in rows[:max_classes]:
            seg = v.get("segm", {}).get("AP", -1.0)
            box = v.get("bbox", {}).get("AP", -1.0)
            lines.append(f"{name:<{width}} {_cell(seg, 8)} {_cell(box, 8)}")
        if len(rows) > max_classes:
            lines.append(f"... and {len(rows) - max_classes} more classes (see metrics.json)")
    lines.append("(0-1 scale; -1 = no ground truth in that range)")
    return "\n".join(lines)


def _cell(v: float, width: int = 7) -> str:
    return f"{v:>{width}.3f}" if v >= 0 else f"{'-':>{width}}"


def resolve_ground_truth(
    spec: str, split: str | None, *, need_images: bool = True
) -> tuple[dict[str, Any], Any, list[str]]:
    """``(COCO GT dict, dataset or None, notes)`` for a dataset spec. A COCO JSON (without a split) is
    used as is, so the numbers match what pycocotools gives on that file (its ``area`` fields decide
    small/medium/large); its images are only needed for predictions and sample pictures
    (``need_images``). Other formats are converted with :func:`instaseg.data.coco.dataset_to_coco`.
    The dataset has no transform: images at their own size, as a deployed model sees them."""
    fmt, args = parse_spec(spec)
    notes: list[str] = []
    if fmt == "coco" and split in (None, "all"):
        cut = args.lower().find(".json:")
        gt = load_coco_gt(args[: cut + 5] if cut >= 0 else args)
        if not need_images:
            return gt, None, notes
        try:
            dataset = build_dataset(spec)
        except InstasegError as exc:
            dataset = None
            notes.append(f"no pictures: {exc}")
        return gt, dataset, notes
    dataset = build_dataset(spec, split=split)
    return dataset_to_coco(dataset), dataset, notes


def subset_gt(gt: dict[str, Any], image_ids: set[int]) -> dict[str, Any]:
    """``gt`` restricted to the images ``image_ids`` (and their annotations)."""
    return {
        **gt,
        "images": [im for im in gt["images"] if int(im["id"]) in image_ids],
        "annotations": [a for a in gt["annotations"] if int(a["image_id"]) in image_ids],
    }
