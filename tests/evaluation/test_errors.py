"""TIDE-style error analysis on constructed cases where one error type is present at a time."""

from __future__ import annotations

import json

import numpy as np
import pytest

from instaseg.evaluation.errors import ERROR_TYPES, average_precision, tide_errors

from .helpers import box_mask, det_from_mask, perturbed_detections, pycocotools_eval, tiny_gt

H = W = 40
A = box_mask(H, W, 0, 0, 10, 10)
B = box_mask(H, W, 20, 20, 30, 30)


def _only(result, kind):
    for t in ERROR_TYPES:
        if t == kind:
            assert result["dAP"][t] > 0.05, (t, result)
            assert result["counts"][t] >= 1
        else:
            assert result["dAP"][t] == 0.0, (t, result)
            assert result["counts"][t] == 0, (t, result)


def test_average_precision_known_values():
    # ranks TP, FP, TP with 2 GT: precision 1 up to recall 0.5, then 2/3
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), 2) == pytest.approx(expected)
    assert average_precision(np.array([0.9]), np.array([1]), 2) == pytest.approx(51 / 101)
    assert average_precision(np.array([]), np.array([]), 0) == 0.0


def test_only_duplicates():
    gt = tiny_gt([[(A, 1)], [(B, 1)]], cat_ids=[1])
    dets = [det_from_mask(A, 1, 1, 0.9), det_from_mask(A, 1, 1, 0.8), det_from_mask(B, 2, 1, 0.7)]
    res = tide_errors(gt, dets)
    assert res["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    _only(res, "dupe")
    assert res["AP50"] + res["dAP"]["dupe"] == pytest.approx(1.0)


def test_only_background():
    gt = tiny_gt([[(A, 1)], [(B, 1)]], cat_ids=[1])
    far = box_mask(H, W, 30, 0, 40, 10)
    dets = [det_from_mask(A, 1, 1, 0.9), det_from_mask(far, 1, 1, 0.8), det_from_mask(B, 2, 1, 0.7)]
    _only(tide_errors(gt, dets), "bkg")


def test_only_classification():
    gt = tiny_gt([[(A, 1)], [(B, 1)]], cat_ids=[1, 2])
    dets = [det_from_mask(A, 1, 1, 0.9), det_from_mask(B, 2, 2, 0.8)]  # B found, wrong class
    res = tide_errors(gt, dets)
    _only(res, "cls")
    assert res["AP50"] + res["dAP"]["cls"] == pytest.approx(1.0)


def test_only_localisation():
    gt = tiny_gt([[(A, 1)], [(B, 1)]], cat_ids=[1])
    loose = box_mask(H, W, 20, 20, 30, 24)  # IoU 0.4 with B
    res = tide_errors(gt, [det_from_mask(A, 1, 1, 0.9), det_from_mask(loose, 2, 1, 0.8)])
    _only(res, "loc")
    assert res["AP50"] + res["dAP"]["loc"] == pytest.approx(1.0)


def test_only_both():
    gt = tiny_gt([[(A, 1)], [(B, 1)]], cat_ids=[1, 2])
    loose = box_mask(H, W, 20, 20, 30, 24)  # IoU 0.4 with B, and the wrong class
    res = tide_errors(gt, [det_from_mask(A, 1, 1, 0.9), det_from_mask(loose, 2, 2, 0.8)])
    assert res["counts"]["both"] == 1 and res["dAP"]["both"] > 0
    # B is missed too (no cls/loc error points at it)
    assert res["counts"]["miss"] == 1
    assert {t for t in ERROR_TYPES if res["dAP"][t] > 0} <= {"both", "miss"}


def test_only_missed():
    gt = tiny_gt([[(A, 1)], [(B, 1)]], cat_ids=[1])
    res = tide_errors(gt, [det_from_mask(A, 1, 1, 0.9)])
    _only(res, "miss")
    assert res["AP50"] == pytest.approx(51 / 101)
    assert res["AP50"] + res["dAP"]["miss"] == pytest.approx(1.0)


@pytest.mark.data
def test_base_ap50_agrees_with_pycocotools(shared_data):
    gt = json.loads((shared_data / "coco_tiny/annotations/instances_val2017.json").read_text())
    gt_cats = {a["category_id"] for a in gt["annotations"]}
    dets = [d for d in perturbed_detections(gt, seed=3, n_random=2) if d["category_id"] in gt_cats]
    res = tide_errors(gt, dets, iou_type="bbox")
    ref = pycocotools_eval(gt, dets, "bbox").stats[1]  # AP50
    assert res["AP50"] == pytest.approx(float(ref), abs=1e-6)
    assert sum(res["counts"].values()) > 50
