"""Panoptic quality on hand-built segment maps with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.evaluation.panoptic import (
    PanopticQuality,
    Segment,
    coco_panoptic_quality,
    instances_to_segments,
)

from .helpers import box_mask, tiny_gt


def _maps(shape=(10, 20)):
    return np.zeros(shape, np.int64), np.zeros(shape, np.int64)


def test_perfect_match_and_partial_iou():
    gt, pred = _maps()
    gt[0:10, 0:10] = 1  # 100 px
    pred[0:8, 0:10] = 5  # 80 px inside the GT: IoU 0.8
    pq = PanopticQuality(void_id=-1)
    pq.update(gt, [Segment(1, 1)], pred, [Segment(5, 1)])
    res = pq.compute()
    assert res["per_class"][1] == {"PQ": 0.8, "SQ": 0.8, "RQ": 1.0, "TP": 1, "FP": 0, "FN": 0}
    assert res["PQ"] == pytest.approx(0.8) and res["n"] == 1


def test_category_mismatch_is_fn_plus_fp():
    gt, pred = _maps()
    gt[0:10, 0:10] = 1
    pred[0:10, 0:10] = 2  # same pixels, other category
    pq = PanopticQuality(void_id=-1)
    pq.update(gt, [Segment(1, 1)], pred, [Segment(2, 2)])
    res = pq.compute()
    assert res["per_class"][1]["FN"] == 1 and res["per_class"][1]["TP"] == 0
    assert res["per_class"][2]["FP"] == 1
    assert res["PQ"] == 0.0 and res["n"] == 2


def test_one_prediction_over_two_gt_matches_once():
    gt, pred = _maps()
    gt[0:10, 0:6] = 1  # 60 px
    gt[0:10, 6:10] = 2  # 40 px
    pred[0:10, 0:10] = 7  # covers both: IoU 0.6 with the first, 0.4 with the second
    pq = PanopticQuality(void_id=-1)
    pq.update(gt, [Segment(1, 1), Segment(2, 1)], pred, [Segment(7, 1)])
    c = pq.compute()["per_class"][1]
    assert (c["TP"], c["FP"], c["FN"]) == (1, 0, 1)
    assert c["SQ"] == pytest.approx(0.6)
    assert c["RQ"] == pytest.approx(1 / 1.5)
    assert c["PQ"] == pytest.approx(0.6 / 1.5)


def test_void_pixels_leave_iou_and_hide_false_positives():
    gt, pred = _maps()
    gt[0:10, 0:10] = 1  # 100 px segment
    gt[:, 10:20] = 0  # VOID (panopticapi's id 0)
    gt[0:10, 10:12] = 0
    pred[0:8, 0:12] = 3  # 80 px on the GT + 16 px on void: IoU = 80 / (96 + 100 - 80 - 16) = 0.8
    pred[0:5, 14:20] = 4  # 30 px all on VOID: not a false positive
    pq = PanopticQuality(void_id=0)
    pq.update(gt, [Segment(1, 1)], pred, [Segment(3, 1), Segment(4, 1)])
    c = pq.compute()["per_class"][1]
    assert (c["TP"], c["FP"], c["FN"]) == (1, 0, 0)
    assert c["SQ"] == pytest.approx(0.8)


def test_unlabeled_background_prediction_is_false_positive():
    gt, pred = _maps()
    gt[0:10, 0:10] = 1
    pred[0:5, 14:20] = 4  # on background, which is not VOID here
    pq = PanopticQuality(void_id=-1)
    pq.update(gt, [Segment(1, 1)], pred, [Segment(4, 1)])
    c = pq.compute()["per_class"][1]
    assert (c["TP"], c["FP"], c["FN"]) == (0, 1, 1)


def test_crowd_regions_hide_same_class_predictions_only():
    gt, pred = _maps()
    gt[0:10, 0:10] = 1  # crowd of class 1
    gt[0:10, 10:20] = 2  # a regular class-1 object
    pred[0:6, 0:10] = 5  # class 1 on the crowd: ignored (60/60 px on crowd)
    pred[6:10, 0:10] = 6  # class 2 on the class-1 crowd: a false positive of class 2
    pred[0:10, 10:20] = 7  # matches the regular object
    pq = PanopticQuality(void_id=-1)
    gts = [Segment(1, 1, iscrowd=True), Segment(2, 1)]
    pq.update(gt, gts, pred, [Segment(5, 1), Segment(6, 2), Segment(7, 1)])
    res = pq.compute()["per_class"]
    assert (res[1]["TP"], res[1]["FP"], res[1]["FN"]) == (1, 0, 0)  # crowd is never a FN
    assert (res[2]["TP"], res[2]["FP"], res[2]["FN"]) == (0, 1, 0)


def test_matching_the_crowd_itself_is_not_a_true_positive():
    gt, pred = _maps()
    gt[0:10, 0:10] = 1
    pred[0:10, 0:10] = 5
    pq = PanopticQuality(void_id=-1)
    pq.update(gt, [Segment(1, 1, iscrowd=True)], pred, [Segment(5, 1)])
    assert pq.compute()["n"] == 0  # no TP, and the prediction is on the crowd: nothing counted


def test_instances_to_segments_fuses_by_score_and_drops_hidden():
    a = box_mask(10, 10, 0, 0, 6, 6)
    b = box_mask(10, 10, 2, 2, 8, 8)  # 36 px, 16 overlap with a
    c = box_mask(10, 10, 1, 1, 5, 5)  # entirely inside a: nothing stays visible
    ids, segs = instances_to_segments(np.stack([a, b, c]), [1, 2, 1], scores=[0.5, 0.9, 0.3])
    assert [s.id for s in segs] == [2, 1]  # b painted first, c dropped
    assert (ids == 2).sum() == 36 and (ids == 1).sum() == 36 - 16


def test_coco_panoptic_quality_on_coco_style_input():
    a, b = box_mask(20, 20, 0, 0, 10, 10), box_mask(20, 20, 10, 10, 20, 20)
    gt = tiny_gt([[(a, 1), (b, 2)]], cat_ids=[1, 2])
    from instaseg.structures.masks import rle_encode

    results = [
        {"image_id": 1, "category_id": 1, "segmentation": rle_encode(a), "score": 0.9},
        {"image_id": 1, "category_id": 2, "segmentation": rle_encode(b), "score": 0.3},  # below 0.5
    ]
    res = coco_panoptic_quality(gt, results)
    assert res["pixel_accuracy"] == pytest.approx(1 - 100 / 400)  # object b (100 px) predicted as background
    assert res["per_class"][1]["PQ"] == 1.0
    assert res["per_class"][2]["FN"] == 1
    assert res["PQ"] == pytest.approx(0.5)


def test_instance_gt_crowds_of_one_category_become_one_segment():
    """pq_compute keeps one crowd region per category, so instance GT merges its crowds per category:
    a prediction on either crowd of its class is then ignored, not a false positive."""
    a, b = box_mask(10, 20, 0, 0, 5, 10), box_mask(10, 20, 10, 0, 15, 10)  # x0, y0, x1, y1
    c = box_mask(10, 20, 16, 0, 20, 10)
    ids, segs = instances_to_segments(np.stack([a, b, c]), [1, 1, 1], iscrowd=[True, True, False])
    assert [(s.id, s.iscrowd) for s in segs] == [(1, True), (3, False)]
    assert (ids == 1).sum() == 100
    pred = np.where(a, 5, 0) + np.where(b, 6, 0)
    pq = PanopticQuality(void_id=-1)
    pq.update(ids, segs, pred, [Segment(5, 1), Segment(6, 1)])
    assert pq.compute()["per_class"][1]["FP"] == 0


def test_several_crowds_in_one_map_keep_only_the_last_like_pq_compute():
    gt, pred = _maps()
    gt[0:10, 0:5] = 1  # crowd of class 1, listed first
    gt[0:10, 5:10] = 2  # another crowd of class 1, listed last: the one pq_compute remembers
    pred[0:10, 0:5] = 7
    pred[0:10, 5:10] = 8
    pq = PanopticQuality(void_id=0)
    crowds = [Segment(1, 1, iscrowd=True), Segment(2, 1, iscrowd=True)]
    pq.update(gt, crowds, pred, [Segment(7, 1), Segment(8, 1)])
    assert pq.compute()["per_class"][1]["FP"] == 1  # only the prediction on segment 2 is ignored


def test_ground_truth_area_comes_from_the_segment_when_given():
    from instaseg.structures.panoptic import PanopticSegment

    gt, pred = _maps()
    gt[0:10, 0:10] = 1
    pred[0:8, 0:10] = 5
    pq = PanopticQuality(void_id=0)
    pq.update(gt, [PanopticSegment(1, 1, True, area=90)], pred, [Segment(5, 1)])  # JSON says 90 px
    assert pq.compute()["per_class"][1]["SQ"] == pytest.approx(80 / 90)
