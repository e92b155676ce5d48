"""Greedy mask-IoU tracker: ids persist while objects move, new objects get new ids."""

from __future__ import annotations

import numpy as np

from instaseg.predict.tracker import MaskIoUTracker, greedy_match, rle_iou_matrix
from instaseg.structures.masks import rle_encode


def _disk(cx: float, cy: float, r: float = 8, h: int = 64, w: int = 96) -> dict:
    yy, xx = np.mgrid[0:h, 0:w]
    return rle_encode((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r)


def test_greedy_match_takes_best_pairs_first() -> None:
    iou = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert greedy_match(iou, 0.3) == [(0, 0)]  # row 1's only good match is taken by row 0
    assert greedy_match(np.array([[0.9, 0.8], [0.85, 0.4]]), 0.3) == [(0, 0), (1, 1)]
    assert greedy_match(np.zeros((0, 3)), 0.3) == []


def test_rle_iou_matrix() -> None:
    a, b = _disk(20, 20), _disk(60, 40)
    iou = rle_iou_matrix([a, b], [a, _disk(22, 20)])
    assert iou.shape == (2, 2)
    assert iou[0, 0] == 1.0 and 0.5 < iou[0, 1] < 1.0 and iou[1, 0] == 0.0


def test_ids_follow_moving_objects_and_swapped_order() -> None:
    tracker = MaskIoUTracker(iou_threshold=0.3)
    first = tracker.update([_disk(20, 20), _disk(60, 40)], [1, 1])
    assert first == [1, 2]
    # Objects move a little and come in the opposite order: ids follow the masks, not the order.
    second = tracker.update([_disk(63, 41), _disk(23, 21)], [1, 1])
    assert second == [2, 1]
    # A new object appears; the old ones keep their ids.
    third = tracker.update([_disk(26, 22), _disk(80, 10, r=5), _disk(66, 42)], [1, 1, 1])
    assert third == [1, 3, 2]


def test_class_mismatch_starts_a_new_track_and_old_tracks_expire() -> None:
    tracker = MaskIoUTracker(iou_threshold=0.3, max_age=1)
    assert tracker.update([_disk(20, 20)], [1]) == [1]
    assert tracker.update([_disk(20, 20)], [2]) == [2]  # same place, other class
    tracker.update([], [])
    tracker.update([], [])
    assert tracker.num_tracks == 0
    assert tracker.update([_disk(20, 20)], [2]) == [3]  # ids are never reused
