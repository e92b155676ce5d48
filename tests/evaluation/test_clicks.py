"""The click protocol on hand-made masks: where clicks go, and NoC / mIoU@k / failures."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.evaluation.clicks import (
    ObjectRun,
    format_table,
    number_of_clicks,
    plot_curves,
    run_protocol,
    summarize,
)
from instaseg.ops.clicks import first_click, largest_error_region, mask_iou, next_click


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_first_click_is_the_interior_point_farthest_from_the_boundary():
    gt = _rect(40, 60, 10, 31, 20, 51)  # 21 x 31 box, centre (35, 20)
    x, y, positive = first_click(gt)
    assert positive and (x, y) == (35, 20)
    # An L shape: the click sits in the thick arm, not at the bounding-box centre (which is outside).
    L = _rect(50, 50, 0, 50, 0, 20) | _rect(50, 50, 40, 50, 0, 50)
    x, y, _ = first_click(L)
    assert L[y, x] and x < 20 and 5 <= y <= 40
    # The image border counts as boundary: an object filling the image is clicked at its centre.
    x, y, _ = first_click(np.ones((11, 21), dtype=bool))
    assert (x, y) == (10, 5)


def test_first_click_on_an_empty_mask_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        first_click(np.zeros((5, 5), dtype=bool))


def test_next_click_goes_to_the_largest_error_region():
    gt = _rect(60, 60, 10, 50, 10, 50)
    # Prediction misses the right third of the object and adds a small false positive: positive click
    # inside the missed strip.
    pred = _rect(60, 60, 10, 50, 10, 37) | _rect(60, 60, 52, 56, 52, 56)
    x, y, positive = next_click(gt, pred)
    assert positive and gt[y, x] and not pred[y, x] and 37 <= x < 50
    # A large false positive beside an almost right prediction: negative click inside it.
    pred = gt.copy()
    pred[0:8, 0:60] = True
    pred[10, 10] = False
    x, y, positive = next_click(gt, pred)
    assert not positive and pred[y, x] and not gt[y, x] and y < 8
    assert next_click(gt, gt) is None


def test_largest_error_region_is_the_component_next_click_lands_in():
    gt = _rect(60, 60, 10, 50, 10, 50)
    pred = _rect(60, 60, 10, 50, 10, 37) | _rect(60, 60, 52, 56, 52, 56)
    region, miss = largest_error_region(gt, pred)
    assert miss and region.sum() == 40 * 13 and not (region & pred).any()
    x, y, _ = next_click(gt, pred)
    assert region[y, x]
    region, miss = largest_error_region(gt, gt & ~_rect(60, 60, 0, 60, 0, 15) | _rect(60, 60, 0, 5, 0, 60))
    assert not miss and region.sum() == 5 * 60
    assert largest_error_region(gt, gt) is None


def test_number_of_clicks_and_failures():
    assert number_of_clicks([0.5, 0.86, 0.95], 0.85, 20) == 2
    assert number_of_clicks([0.5, 0.86, 0.95], 0.90, 20) == 3
    assert number_of_clicks([0.5, 0.6], 0.85, 20) == 20
    assert number_of_clicks([0.5, 0.6, 0.99], 0.85, 2) == 2  # only the first max_clicks count
    runs = [ObjectRun([0.9, 0.95, 0.95], [0.1] * 3, []), ObjectRun([0.2, 0.5, 0.86], [0.3] * 3, [])]
    m = summarize(runs, max_clicks=3)
    assert m["NoC@85"] == pytest.approx((1 + 3) / 2) and m["NoC@90"] == pytest.approx((1 + 3) / 2)
    assert m["failures@85"] == 0 and m["failures@90"] == 1
    assert m["mIoU@k"] == pytest.approx([0.55, 0.725, 0.905])
    assert m["seconds_per_click"] == pytest.approx(0.2) and m["objects"] == 2


def test_run_protocol_with_a_scripted_backend(tmp_path):
    gt = _rect(50, 50, 10, 40, 5, 45)
    calls = []

    def predict(points, labels, prev):
        calls.append((points.copy(), labels.copy(), None if prev is None else prev.copy()))
        if len(points) == 1:  # first answer: the left half only
            return _rect(50, 50, 10, 40, 5, 25)
        if len(points) == 2:  # second: everything plus a false-positive band on top
            return gt | _rect(50, 50, 0, 8, 0, 50)
        return gt

    run = run_protocol(predict, gt, max_clicks=5)
    assert len(calls) == 3 and calls[0][2] is None and calls[1][2] is not None
    assert run.clicks[0] == (*first_click(gt)[:2], True)
    assert run.clicks[1][2] is True and run.clicks[1][0] >= 25  # into the missed right half
    assert run.clicks[2][2] is False and run.clicks[2][1] < 8  # into the false positive band
    assert run.ious[0] == pytest.approx(mask_iou(gt, _rect(50, 50, 10, 40, 5, 25)))
    assert run.ious[2:] == [1.0, 1.0, 1.0] and len(run.seconds) == 3  # exact: no more clicks needed
    stopped = run_protocol(predict, gt, max_clicks=5, stop_iou=0.5)
    assert len(stopped.seconds) == 1 and stopped.ious == [0.5] * 5
    m = summarize([run], max_clicks=5)
    assert m["NoC@85"] == 3
    assert "NoC@85" in format_table({"scripted": m})
    plot_curves({"scripted": m}, str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
