"""Pure tracking ops: Kalman filter on boxes, IoU, cosine similarity, assignment."""

from __future__ import annotations

import numpy as np

from instaseg.ops.tracking import (
    assign,
    box_iou,
    cosine_similarity,
    kalman_init,
    kalman_predict,
    kalman_update,
    xyah_to_xyxy,
    xyxy_to_xyah,
)


def test_box_conversions_roundtrip() -> None:
    b = np.array([[10.0, 20.0, 50.0, 40.0], [0, 0, 5, 10]])
    assert np.allclose(xyah_to_xyxy(xyxy_to_xyah(b)), b)
    assert np.allclose(xyxy_to_xyah(b)[0], [30, 30, 2.0, 20])


def test_kalman_learns_constant_velocity() -> None:
    box = np.array([[10.0, 10.0, 30.0, 30.0]])
    mean, cov = kalman_init(box)
    for t in range(1, 12):  # moving +3 px/frame in x
        mean, cov = kalman_predict(mean, cov)
        mean, cov = kalman_update(mean, cov, box + [3 * t, 0, 3 * t, 0])
    assert abs(mean[0, 4] - 3.0) < 0.3 and abs(mean[0, 5]) < 0.3
    pred, pcov = kalman_predict(mean, cov)
    for _ in range(2):  # coast through two missed frames
        pred, pcov = kalman_predict(pred, pcov)
    expected = box + [3 * 14, 0, 3 * 14, 0]
    assert box_iou(xyah_to_xyxy(pred[:, :4]), expected)[0, 0] > 0.85
    assert np.allclose(cov, np.transpose(cov, (0, 2, 1)))


def test_box_iou_and_cosine() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]])
    assert np.allclose(box_iou(a, b), [[50 / 150, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 2)
    c = cosine_similarity(np.array([[1.0, 0], [0, 2]]), np.array([[3.0, 0], [1, 1]]))
    assert np.allclose(c, [[1, 2**-0.5], [0, 2**-0.5]])


def test_assign_is_optimal_and_thresholded() -> None:
    s = np.array([[0.9, 0.8], [0.85, 0.1]])  # greedy would take (0,0) then leave row 1 with 0.1
    pairs, rows, cols = assign(s, 0.3)
    assert sorted(pairs) == [(0, 1), (1, 0)] and rows == [] and cols == []
    pairs, rows, cols = assign(np.array([[0.2]]), 0.3)
    assert pairs == [] and rows == [0] and cols == [0]
    assert assign(np.zeros((0, 3)), 0.5) == ([], [], [0, 1, 2])


def test_suppress_duplicates_is_class_agnostic_nms() -> None:
    from instaseg.ops.tracking import suppress_duplicates

    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [1, 0, 11, 10]])
    keep = suppress_duplicates(boxes, np.array([0.5, 0.9, 0.8, 0.3]), 0.7)
    assert keep.tolist() == [1, 2]  # 0 and 3 duplicate the higher-scoring box 1
    assert suppress_duplicates(boxes, np.array([0.5, 0.9, 0.8, 0.3]), 1.0).tolist() == [1, 2, 0, 3]
