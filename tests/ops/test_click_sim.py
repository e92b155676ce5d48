"""Simulated correction sessions (training data for click models)."""

from __future__ import annotations

import random

import numpy as np

from instaseg.ops.click_sim import perturb_mask, simulate_session
from instaseg.ops.clicks import first_click, mask_iou


def _disk(size: int = 80, r: int = 25) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size]
    return (ys - size / 2) ** 2 + (xs - size / 2) ** 2 <= r * r


def test_perturbed_masks_are_wrong_but_near_the_object():
    gt = _disk()
    ious = [mask_iou(gt, perturb_mask(gt, random.Random(seed))) for seed in range(20)]
    assert all(0.2 < v < 1.0 for v in ious)  # always some error, never a different place
    assert len({round(v, 4) for v in ious}) > 10  # and not the same error every time


def test_session_clicks_sit_on_errors_and_earlier_ones_are_fixed():
    gt = _disk()
    first = first_click(gt)
    lengths = set()
    for seed in range(25):
        clicks, prev = simulate_session(gt, first, 6, random.Random(seed))
        assert clicks[0] == first and 1 <= len(clicks) <= 7 and prev.shape == gt.shape
        lengths.add(len(clicks))
        for x, y, positive in clicks[1:]:
            assert gt[y, x] == positive  # a positive click on the object, a negative one off it
        if len(clicks) > 1:
            x, y, positive = clicks[-1]
            assert prev[y, x] != positive  # the last click is on the previous mask's error...
            for x, y, positive in clicks[1:-1]:
                assert prev[y, x] == positive  # ...the ones before it were answered
    assert max(lengths) >= 4  # sessions run on while errors are left
