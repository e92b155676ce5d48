"""Mask pasting inside boxes and RLE from crops: exact against pycocotools, close to torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from torchvision.models.detection.roi_heads import paste_masks_in_image

from instaseg.structures.masks import rle_decode
from instaseg.structures.paste import (
    box_window,
    dense_masks_to_rles,
    encode_crop,
    paste_mask_crop,
    paste_masks_dense,
    paste_masks_to_rles,
)


def _full(crop: np.ndarray, window: tuple[int, int, int, int], h: int, w: int) -> np.ndarray:
    x0, y0, x1, y1 = window
    out = np.zeros((h, w), dtype=np.uint8)
    out[y0:y1, x0:x1] = crop
    return out


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    data=st.data(),
)
def test_encode_crop_matches_pycocotools(h: int, w: int, data: st.DataObject) -> None:
    full_height = data.draw(st.booleans())  # crops spanning whole columns merge runs across columns
    y0 = 0 if full_height else data.draw(st.integers(0, h - 1))
    y1 = h if full_height else data.draw(st.integers(y0, h))
    x0 = data.draw(st.integers(0, w - 1))
    x1 = data.draw(st.integers(x0, w))
    density = data.draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    seed = data.draw(st.integers(0, 2**16))
    crop = np.random.default_rng(seed).random((y1 - y0, x1 - x0)) < density
    window = (x0, y0, x1, y1)
    expected = mask_utils.encode(np.asfortranarray(_full(crop, window, h, w)))
    got = encode_crop(crop, window, h, w)
    assert got["size"] == [h, w]
    assert got["counts"] == expected["counts"].decode("ascii")


def test_box_window_clips_and_handles_outside_boxes() -> None:
    assert box_window(np.array([-5.5, 2.2, 10.1, 7.0]), 6, 8) == (0, 2, 8, 6)
    x0, y0, x1, y1 = box_window(np.array([20.0, 20.0, 30.0, 30.0]), 10, 10)
    assert x1 <= x0 or y1 <= y0


def _smooth_masks(n: int, m: int = 28, seed: int = 0) -> np.ndarray:
    """Blob-like probabilities (what a trained mask head gives), not per-cell noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:m, 0:m] / (m - 1)
    cx, cy = rng.uniform(0.3, 0.7, (2, n, 1, 1))
    rx, ry = rng.uniform(0.2, 0.45, (2, n, 1, 1))
    d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    return (1.0 / (1.0 + np.exp((d - 1.0) * 6.0))).astype(np.float32)


def _random_boxes(n: int, h: int, w: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-20, w - 40, n)
    y1 = rng.uniform(-20, h - 40, n)
    bw = rng.uniform(30, w / 2, n)
    bh = rng.uniform(30, h / 2, n)
    return np.stack([x1, y1, x1 + bw, y1 + bh], 1).astype(np.float32)


def test_paste_agrees_with_torchvision_paste_masks_in_image() -> None:
    h, w, n = 240, 320, 40
    masks = _smooth_masks(n)
    boxes = _random_boxes(n, h, w)
    rles = paste_masks_to_rles(masks, boxes, h, w)
    ref = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (h, w))[:, 0] >= 0.5
    ious = []
    for rle, r in zip(rles, ref.numpy(), strict=True):
        ours = rle_decode(rle)
        ious.append((ours & r).sum() / max((ours | r).sum(), 1))
    assert np.mean(ious) > 0.95, ious
    assert np.min(ious) > 0.85, ious


def test_dense_and_rle_paths_agree_and_stay_inside_boxes() -> None:
    h, w = 120, 160
    masks = _smooth_masks(6, seed=3)
    boxes = _random_boxes(6, h, w, seed=4)
    dense = paste_masks_dense(masks[:, None], boxes, h, w)
    rles = paste_masks_to_rles(masks[:, None], boxes, h, w)
    for k, rle in enumerate(rles):
        np.testing.assert_array_equal(rle_decode(rle), dense[k])
        x0, y0, x1, y1 = box_window(boxes[k], h, w)
        outside = dense[k].copy()
        outside[y0:y1, x0:x1] = False
        assert not outside.any()
        assert dense[k].any()


def test_mask_fully_outside_image_gives_empty_rle() -> None:
    crop, window = paste_mask_crop(np.ones((28, 28), np.float32), np.array([50.0, 50, 90, 90]), 40, 40)
    assert crop.size == 0
    rle = paste_masks_to_rles(np.ones((1, 28, 28), np.float32), np.array([[50.0, 50, 90, 90]]), 40, 40)[0]
    assert not rle_decode(rle).any()


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="2 masks but 1 boxes"):
        paste_masks_to_rles(np.zeros((2, 28, 28)), np.zeros((1, 4)), 10, 10)


def test_dense_masks_to_rles_thresholds_probabilities() -> None:
    probs = np.zeros((2, 1, 9, 7), np.float32)
    probs[0, 0, 2:5, 1:3] = 0.8
    probs[1, 0, 0, 0] = 0.4
    rles = dense_masks_to_rles(probs)
    assert rle_decode(rles[0]).sum() == 6
    assert rle_decode(rles[1]).sum() == 0
