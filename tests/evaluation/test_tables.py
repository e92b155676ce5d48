"""The flat evaluation tables: per-image error counts, PR curves (against pycocotools' precision
array), per-class rows and the headline metrics."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.evaluation.coco import evaluate_results
from instaseg.evaluation.tables import (
    headline_metrics,
    per_class_rows,
    per_image_errors,
    pr_curve,
    pr_curve_rows,
    write_csv,
)
from tests.evaluation.helpers import pycocotools_eval


def _box_poly(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _gt() -> dict[str, Any]:
    anns = []
    boxes = {1: [(10, 10, 20, 20, 1), (50, 50, 20, 20, 2)], 2: [(5, 5, 30, 30, 1)]}
    for image_id, items in boxes.items():
        for x, y, w, h, cat in items:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0, "segmentation": _box_poly(x, y, w, h)})
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 100, "width": 100},
                   {"id": 2, "file_name": "b.png", "height": 100, "width": 100}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def _det(image_id: int, cat: int, score: float, x: float, y: float, w: float, h: float) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": cat, "score": score, "bbox": [x, y, w, h],
            "segmentation": _box_poly(x, y, w, h)}


def _results() -> list[dict[str, Any]]:
    return [
        _det(1, 1, 0.9, 10, 10, 20, 20),  # TP on cat
        _det(1, 1, 0.8, 80, 0, 10, 10),  # FP on background; the dog is missed
        _det(2, 1, 0.95, 5, 5, 30, 30),  # TP
        _det(2, 2, 0.3, 60, 60, 10, 10),  # below the 0.5 score filter: ignored
    ]


def test_per_image_errors_counts_and_orders_worst_first() -> None:
    rows = per_image_errors(_gt(), _results(), iou_type="segm", score_thresh=0.5)
    assert [r["file_name"] for r in rows] == ["a.png", "b.png"]
    a, b = rows
    assert (a["num_gt"], a["num_dt"], a["tp"], a["fp"], a["fn"], a["errors"]) == (2, 2, 1, 1, 1, 2)
    assert (b["tp"], b["fp"], b["fn"], b["errors"]) == (1, 0, 0, 0)
    assert abs(a["mean_iou"] - 1.0) < 1e-9 and abs(b["mean_iou"] - 1.0) < 1e-9
    # without the score filter the low-score detection is a false positive of b
    b_all = [r for r in per_image_errors(_gt(), _results(), score_thresh=0.0) if r["image_id"] == 2][0]
    assert b_all["fp"] == 1


def test_pr_curve_is_pycocotools_precision_mean_over_classes(tmp_path: Path) -> None:
    gt, results = _gt(), _results()
    metrics, evals = evaluate_results(gt, results, iou_types=("segm",), return_evals=True)
    ref = pycocotools_eval(gt, results, "segm").eval["precision"]  # (T, R, K, A, M)
    recall, precision = pr_curve(evals["segm"], 0.5)
    expected = ref[0, :, :, 0, -1]
    np.testing.assert_allclose(precision, expected.mean(axis=1))
    assert recall.shape == (101,) and recall[0] == 0.0 and recall[-1] == 1.0
    rows = pr_curve_rows(evals["segm"])
    assert list(rows[0]) == ["recall", "precision_iou50", "precision_iou75"] and len(rows) == 101
    path = write_csv(tmp_path / "pr.csv", rows)
    with open(path) as f:
        back = list(csv.DictReader(f))
    assert float(back[50]["precision_iou50"]) == rows[50]["precision_iou50"]


def test_per_class_rows_and_headline() -> None:
    metrics, _ = evaluate_results(_gt(), _results(), return_evals=True)
    rows = per_class_rows(metrics)
    assert [r["class"] for r in rows] == ["cat", "dog"]
    assert rows[0]["mask_AP"] == metrics["per_class"]["cat"]["segm"]["AP"]
    head = headline_metrics({**metrics, "pq": {"PQ": 0.5, "SQ": 0.9, "RQ": 0.6, "n": 2, "per_class": {}}})
    assert list(head) == ["segm", "bbox", "pq"] and head["pq"] == {"PQ": 0.5, "SQ": 0.9, "RQ": 0.6}
    assert "per_class" not in head
    assert "pq" not in headline_metrics({**metrics, "pq": {"n": 0}})
