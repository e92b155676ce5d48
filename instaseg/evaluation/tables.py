"""Flat tables of an evaluation for pipelines and notebooks: the headline metrics (DVC ``metrics``),
precision-recall curves and per-class AP (DVC ``plots``), and per-image error counts (worst images).

All values are on a 0-1 scale; -1 means undefined (no ground truth), as in the COCO stats.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.evaluation.coco import CocoEval
from instaseg.evaluation.matching import greedy_match, group_by_image, iou_matrix


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The compact ``metrics.json`` of a pipeline: ``{"segm": 12 stats, "bbox": 12 stats, "pq": {PQ,
    SQ, RQ}}`` from an evaluation's full metrics (per-class numbers go to the plots instead)."""
    out: dict[str, Any] = {k: dict(metrics[k]) for k in ("segm", "bbox") if k in metrics}
    pq = metrics.get("pq") or {}
    if pq.get("n"):
        out["pq"] = {k: float(pq[k]) for k in ("PQ", "SQ", "RQ")}
    return out


def pr_curve(ev: CocoEval, iou: float = 0.5, *, area: int = 0, max_dets: int = -1) -> tuple[np.ndarray, ...]:
    """``(recall (101,), precision (101,))``: COCO's interpolated precision at the 101 recall points
    for the IoU threshold nearest ``iou``, averaged over the categories that have ground truth
    (``area`` / ``max_dets`` index COCO's area-range and max-detections axes). Precision is -1
    everywhere when no category has ground truth."""
    t = int(np.argmin(np.abs(np.asarray(ev.iou_thresholds) - iou)))
    prec = np.asarray(ev.precision)[t, :, :, area, max_dets]  # (R, K)
    valid = (prec > -1).all(axis=0)
    recall = np.linspace(0.0, 1.0, prec.shape[0])
    if not valid.any():
        return recall, np.full(prec.shape[0], -1.0)
    return recall, prec[:, valid].mean(axis=1)


def pr_curve_rows(ev: CocoEval, ious: tuple[float, ...] = (0.5, 0.75)) -> list[dict[str, float]]:
    """One row per recall point: ``{"recall", "precision_iou50", "precision_iou75", ...}``."""
    curves = {f"precision_iou{round(100 * t)}": pr_curve(ev, t)[1] for t in ious}
    recall = np.linspace(0.0, 1.0, 101)
    return [
        {"recall": round(float(r), 4), **{k: round(float(v[i]), 6) for k, v in curves.items()}}
        for i, r in enumerate(recall)
    ]


def per_class_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{"class", "mask_AP", "mask_AP50", "box_AP", "box_AP50"}]`` from metrics' ``per_class``."""
    rows = []
    for name, v in (metrics.get("per_class") or {}).items():
        seg, box = v.get("segm", {}), v.get("bbox", {})
        rows.append({
            "class": str(name),
            "mask_AP": float(seg.get("AP", -1.0)), "mask_AP50": float(seg.get("AP50", -1.0)),
            "box_AP": float(box.get("AP", -1.0)), "box_AP50": float(box.get("AP50", -1.0)),
        })
    return rows


def per_image_errors(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    *,
    iou_type: str = "segm",
    iou_threshold: float = 0.5,
    score_thresh: float = 0.5,
) -> list[dict[str, Any]]:
    """Per-image counts at one IoU threshold (class-aware greedy matching as COCO does), detections
    with ``score >= score_thresh`` only: ``{"image_id", "file_name", "num_gt", "num_dt", "tp", "fp",
    "fn", "mean_iou" (of the matches; -1 if none), "errors" (fp + fn)}``, sorted by ``errors``
    descending (the worst images first). Crowd GT count neither as GT nor as misses."""
    names = {int(im["id"]): str(im.get("file_name", im["id"])) for im in gt["images"]}
    dets = [r for r in results if r["score"] >= score_thresh]
    rows = []
    for g in group_by_image(gt, dets, iou_type):
        ious = iou_matrix(g.dt_geoms, g.gt_geoms, g.gt_crowd)
        dt_match, gt_match = greedy_match(ious, g.dt_cats, g.gt_cats, g.gt_crowd, iou_threshold)
        matched = [ious[d, m] for d, m in enumerate(dt_match) if m >= 0]
        tp = len(matched)
        fp = int((dt_match == -1).sum())
        fn = int(((gt_match < 0) & ~g.gt_crowd).sum())
        rows.append({
            "image_id": g.image_id, "file_name": names[g.image_id],
            "num_gt": int((~g.gt_crowd).sum()), "num_dt": int(len(g.dt_cats)),
            "tp": tp, "fp": fp, "fn": fn,
            "mean_iou": float(np.mean(matched)) if matched else -1.0, "errors": fp + fn,
        })
    rows.sort(key=lambda r: (-r["errors"], r["image_id"]))
    return rows


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` (dicts with the same keys) as CSV with a header; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path
