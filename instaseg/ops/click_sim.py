"""Simulated correction sessions for training click models without running the model.

A click model is evaluated over up to 20 clicks, each answered with the previous answer as an input;
training it only on the first click and a few model-driven rounds leaves the long sessions it meets
at evaluation unseen (and model rounds cost a forward pass each). :func:`simulate_session` builds such
a session for free: a plausible wrong previous mask (:func:`perturb_mask`: a shifted boundary, missed
parts and leaks), then the protocol's clicks on its largest errors, each error fixed before the next
click (fully or around the click, as a model would), the last click's error left for the model.

Masks are ``(H, W)`` bool arrays; clicks are ``(x, y, positive)`` (see :mod:`instaseg.ops.clicks`).
"""

from __future__ import annotations

import random

import numpy as np

from instaseg.ops.clicks import Click, interior_point, largest_error_region


def perturb_mask(gt: np.ndarray, rng: random.Random | None = None) -> np.ndarray:
    """A wrong version of ``gt`` (``(H, W)`` bool, non-empty): the boundary moved in or out by up to
    6% of the object's size, then 1-4 ellipses centred on the boundary that cut a part away (a miss)
    or add background (a leak)."""
    import cv2

    rng = rng or random.Random()
    m = np.ascontiguousarray(gt, dtype=np.uint8)
    ys, xs = np.nonzero(m)
    size = max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1)
    r = rng.randint(0, max(1, round(0.06 * size)))
    if r:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        m = cv2.erode(m, kernel) if rng.random() < 0.5 else cv2.dilate(m, kernel)
    edge = np.logical_xor(gt, cv2.erode(gt.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool))
    ey, ex = np.nonzero(edge)
    for _ in range(rng.randint(1, 4)):
        j = rng.randrange(len(ex))
        axes = (max(1, round(rng.uniform(0.05, 0.35) * size)), max(1, round(rng.uniform(0.05, 0.35) * size)))
        cv2.ellipse(m, (int(ex[j]), int(ey[j])), axes, rng.uniform(0, 180), 0, 360,
                    int(rng.random() < 0.5), -1)
    return m.astype(bool)


def simulate_session(gt: np.ndarray, first: Click, num_clicks: int,
                     rng: random.Random | None = None) -> tuple[list[Click], np.ndarray]:
    """Clicks ``[first, c2, ...]`` (at most ``1 + num_clicks``) and the previous mask ``(H, W)`` bool
    they would be answered with: ``c_k`` lies on the largest error of the mask that answered clicks
    ``< k``; every error but the last clicked one is fixed (70% fully, else within a disk around its
    click). Stops early when fixing the clicked error would leave the mask exact."""
    rng = rng or random.Random()
    gt = np.asarray(gt, dtype=bool)
    prev = perturb_mask(gt, rng)
    clicks: list[Click] = [first]
    for k in range(num_clicks):
        found = largest_error_region(gt, prev)
        if found is None:
            break
        region, positive = found
        x, y = interior_point(region)
        clicks.append((x, y, positive))
        if k == num_clicks - 1:
            break
        if rng.random() >= 0.7:  # a partial fix: the part of the region near the click
            ys, xs = np.nonzero(region)
            reach = rng.uniform(0.3, 1.0) * max(int(np.ptp(ys)), int(np.ptp(xs)), 1)
            near = np.zeros_like(region)
            near[ys, xs] = (ys - y) ** 2 + (xs - x) ** 2 <= reach * reach
            region = near
        fixed = prev.copy()
        fixed[region] = positive
        if np.array_equal(fixed, gt):  # nothing left to click: this click's error stays the model's
            break
        prev = fixed
    return clicks, prev


__all__ = ["perturb_mask", "simulate_session"]
