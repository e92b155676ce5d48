"""Click placement of the standard interactive-segmentation protocol (pure functions on ``(H, W)``
bool masks; clicks are ``(x, y, positive)`` integer pixel coordinates). The protocol and its metrics
are in :mod:`instaseg.evaluation.clicks`; click models use the same placement to simulate users."""

from __future__ import annotations

import numpy as np

Click = tuple[int, int, bool]
"""``(x, y, positive)``: pixel column, row, and whether the click marks the object."""


def mask_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """IoU of two ``(H, W)`` bool masks (1.0 when both are empty)."""
    union = np.logical_or(gt, pred).sum()
    return float(np.logical_and(gt, pred).sum() / union) if union else 1.0


def interior_point(region: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the pixel of ``region`` (non-empty ``(H, W)`` bool) farthest from its boundary;
    pixels outside the image count as outside the region. Ties: the tied pixel nearest their mean."""
    import cv2

    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    ys, xs = np.nonzero(dist >= dist.max() - 1e-3)
    # Ties (a rectangle's ridge): the tied pixel nearest their mean, i.e. the middle of the ridge.
    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return int(xs[k]), int(ys[k])


def first_click(gt: np.ndarray) -> Click:
    """The protocol's first click on ground truth ``gt`` (``(H, W)`` bool, non-empty): positive, at
    the interior point farthest from the object's boundary. ValueError on an empty mask."""
    gt = np.asarray(gt, dtype=bool)
    if not gt.any():
        raise ValueError("cannot click on an empty ground-truth mask")
    x, y = interior_point(gt)
    return x, y, True


def largest_error_region(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """The protocol's error region: the largest 8-connected component of the misses (``gt & ~pred``)
    or of the false positives (``pred & ~gt``), as ``(region (H, W) bool, is_miss)``; None when
    ``pred`` equals ``gt``. Misses win ties."""
    import cv2

    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    best: tuple[int, np.ndarray, bool] | None = None
    for errors, positive in ((gt & ~pred, True), (pred & ~gt, False)):
        if not errors.any():
            continue
        n, comp, stats, _ = cv2.connectedComponentsWithStats(errors.astype(np.uint8), connectivity=8)
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, comp == k, positive)
    return None if best is None else (best[1], best[2])


def next_click(gt: np.ndarray, pred: np.ndarray) -> Click | None:
    """The protocol's next click given ground truth and the current prediction (``(H, W)`` bool).

    The largest 8-connected error region (false negatives and false positives are separate regions,
    :func:`largest_error_region`) gets the click, at its interior point farthest from its boundary;
    positive when the region is a miss. None when the prediction is exact.
    """
    found = largest_error_region(gt, pred)
    if found is None:
        return None
    x, y = interior_point(found[0])
    return x, y, found[1]
