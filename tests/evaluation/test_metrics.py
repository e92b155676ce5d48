"""Matched-pair IoU, pixel accuracy, semantic maps, confusion matrix and matched-IoU statistics."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.evaluation.metrics import (
    confusion_matrix,
    match_statistics,
    paired_mask_iou,
    pixel_accuracy,
)
from instaseg.structures.masks import semantic_map

from .helpers import box_mask, det_from_mask, tiny_gt


def test_paired_mask_iou():
    a = box_mask(10, 10, 0, 0, 4, 5)  # 20 px
    b = box_mask(10, 10, 0, 0, 4, 10)  # 40 px, contains a
    empty = np.zeros((10, 10), bool)
    iou = paired_mask_iou(np.stack([a, a, empty]), np.stack([a, b, empty]))
    np.testing.assert_allclose(iou, [1.0, 0.5, 0.0])
    with pytest.raises(ValueError):
        paired_mask_iou(np.stack([a]), np.stack([a, b]))


def test_semantic_map_and_pixel_accuracy():
    a, b = box_mask(4, 4, 0, 0, 2, 4), box_mask(4, 4, 1, 0, 3, 4)
    sem = semantic_map(np.stack([a, b]), [1, 2], scores=[0.9, 0.1])  # a wins the overlap column
    assert (sem[:, 0:2] == 1).all() and (sem[:, 2] == 2).all() and (sem[:, 3] == 0).all()
    gt = np.zeros((4, 4), np.int64)
    gt[:, 0:3] = 1
    assert pixel_accuracy(sem, gt) == pytest.approx(12 / 16)  # column 2 is wrong
    gt[:, 2] = 255
    assert pixel_accuracy(sem, gt, ignore_index=255) == pytest.approx(1.0)


def test_confusion_matrix_counts_class_swaps_fp_and_missed():
    h, w = 30, 30
    a, b, c = box_mask(h, w, 0, 0, 10, 10), box_mask(h, w, 15, 0, 25, 10), box_mask(h, w, 0, 15, 10, 25)
    gt = tiny_gt([[(a, 1), (b, 2), (c, 2)]], cat_ids=[1, 2])
    dets = [
        det_from_mask(a, 1, 1, 0.9),  # correct
        det_from_mask(b, 1, 1, 0.8),  # GT 2 predicted as 1
        det_from_mask(box_mask(h, w, 20, 20, 29, 29), 1, 2, 0.7),  # on background
        det_from_mask(c, 1, 2, 0.2),  # below the score threshold: c counts as missed
    ]
    m, cats = confusion_matrix(gt, dets)
    assert cats == [1, 2]
    expected = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(m, expected)


def test_match_statistics_ious_and_best_iou():
    h, w = 30, 30
    a, b = box_mask(h, w, 0, 0, 10, 10), box_mask(h, w, 15, 15, 25, 25)
    gt = tiny_gt([[(a, 1), (b, 1)]], cat_ids=[1])
    dets = [det_from_mask(box_mask(h, w, 0, 0, 10, 8), 1, 1, 0.9),  # IoU 0.8 with a
            det_from_mask(box_mask(h, w, 15, 15, 25, 19), 1, 1, 0.8)]  # IoU 0.4 with b
    st = match_statistics(gt, dets)
    np.testing.assert_allclose(st["iou"], [0.8])
    np.testing.assert_allclose(st["gt_area"], [100])
    np.testing.assert_allclose(sorted(st["best_iou"]), [0.4, 0.8])
