"""Point AP on hand-made scenes whose answers are worked out by hand."""

import math

import numpy as np
import pytest

from instaseg.evaluation.points_ap import average_precision, evaluate_point_instances, match_scene
from instaseg.structures.points import PointInstances

NAMES = ["floor", "a", "b"]


def P(ids, labels, scores=None):
    labels = np.asarray(labels)
    return PointInstances(
        np.asarray(ids), labels, np.ones(len(labels)) if scores is None else np.asarray(scores)
    )


def test_perfect_prediction_scores_one():
    gt = P([0] * 40 + [1] * 40 + [-1] * 20, [1, 2])
    r = evaluate_point_instances([(gt, gt, None)], NAMES, min_points=10)
    assert r["AP"] == pytest.approx(1.0) and r["AP50"] == 1.0 and r["AP25"] == 1.0
    assert set(r["per_class"]) == {"a", "b"}


def test_iou_decides_the_thresholds():
    gt = P([0] * 100, [1])
    pred = P([0] * 60 + [-1] * 40, [1])  # IoU 0.6: TP at 0.25, 0.5, 0.55; FP from 0.6 up
    r = evaluate_point_instances([(gt, pred, None)], NAMES, min_points=10)
    assert r["AP50"] == 1.0 and r["AP25"] == 1.0
    assert r["AP"] == pytest.approx(2 / 10)  # overlaps 0.50, 0.55 of the ten


def test_wrong_class_is_a_miss_unless_class_agnostic():
    gt = P([0] * 50, [1])
    pred = P([0] * 50, [2])
    r = evaluate_point_instances([(gt, pred, None)], NAMES, min_points=10)
    assert r["per_class"]["a"]["AP"] == 0.0 and math.isnan(r["per_class"]["b"]["AP"])
    assert r["AP"] == 0.0
    assert (
        evaluate_point_instances([(gt, pred, None)], NAMES, min_points=10, class_agnostic=True)["AP"] == 1.0
    )


def test_small_instances_and_void_are_ignored():
    ids = [0] * 50 + [1] * 5 + [-1] * 10
    gt = P(ids, [1, 1])
    void = np.array([False] * 55 + [True] * 10)
    # prediction 0 = the big instance, 1 = the small one (ignored), 2 = void points (ignored)
    pred = P([0] * 50 + [1] * 5 + [2] * 10, [1, 1, 1], [0.5, 0.9, 0.8])
    r = evaluate_point_instances([(gt, pred, void)], NAMES, min_points=10)
    assert r["AP"] == 1.0 and r["per_class"]["a"]["num_gt"] == 1
    without_void = evaluate_point_instances([(gt, pred, None)], NAMES, min_points=10)
    assert without_void["AP50"] < 1.0  # the void cluster is now a false positive above the true one


def test_average_precision_by_hand():
    # scores 0.9 FP, 0.8 TP, 2 GT: precision/recall points (0.5, 0.5) at 0.8, (0, 0) at 0.9
    ap = average_precision(np.array([False, True]), np.array([0.9, 0.8]), 2)
    # ScanNet step widths: recall [0.5, 0, 0] -> widths [0.25, 0.25, 0], precision [0.5, 0, 1]
    assert ap == pytest.approx(0.125)
    assert average_precision(np.array([True]), np.array([0.5]), 1) == pytest.approx(1.0)
    assert math.isnan(average_precision(np.zeros(0, bool), np.zeros(0), 0))


def test_duplicates_are_false_positives_and_iou_matrix():
    gt = P([0] * 10 + [1] * 10, [1, 1])
    pred = P([0] * 10 + [1] * 10, [1, 1], [0.9, 0.8])
    m = match_scene(gt, pred)
    np.testing.assert_allclose(m.iou, np.eye(2))
    dup = P([0] * 20, [1])
    r = evaluate_point_instances([(gt, dup, None)], NAMES, min_points=1)
    assert r["AP50"] == 0.0 and r["AP25"] > 0  # IoU 0.5 is not > 0.5, but > 0.25
