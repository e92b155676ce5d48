"""draw_instances colours each instance, leaves the input alone, and checks its arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaseg.viz.draw import draw_instances, instance_colors, make_grid


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.full((120, 160, 3), 40, dtype=np.uint8)
    masks = np.zeros((3, 120, 160), dtype=bool)
    masks[0, 10:50, 10:60] = True
    masks[1, 60:110, 20:70] = True
    masks[2, 30:90, 100:150] = True
    boxes = np.array([[10, 10, 60, 50], [20, 60, 70, 110], [100, 30, 150, 90]], dtype=np.float32)
    return image, masks, boxes


def test_palette_is_distinct_and_stable() -> None:
    colors = instance_colors(30)
    assert colors.dtype == np.uint8 and colors.shape == (30, 3)
    assert len({tuple(c) for c in colors}) == 30
    assert np.array_equal(colors, instance_colors(30))
    # Consecutive instances are far apart in colour.
    diffs = np.abs(colors[1:].astype(int) - colors[:-1].astype(int)).sum(axis=1)
    assert diffs.min() > 60


def test_masks_are_filled_with_their_own_colour_and_input_untouched() -> None:
    image, masks, boxes = _scene()
    before = image.copy()
    out = draw_instances(
        image,
        masks,
        boxes,
        labels=np.array([1, 2, 1]),
        scores=np.array([0.9, 0.5, 0.7]),
        class_names=["background", "cat", "dog"],
        alpha=0.5,
    )
    assert np.array_equal(image, before)
    assert out.dtype == np.uint8 and out.shape == image.shape
    colors = instance_colors(3)
    for i in range(3):
        # Centre of each mask: half image, half instance colour.
        ys, xs = np.nonzero(masks[i])
        cy, cx = int(ys.mean()), int(xs.mean())
        expected = (40 * 0.5 + colors[i].astype(float) * 0.5).round()
        assert np.abs(out[cy, cx].astype(float) - expected).max() <= 1
    assert np.array_equal(out[115, 155], image[115, 155])  # background stays as it was


def test_label_text_is_drawn_and_tensors_accepted() -> None:
    image, masks, boxes = _scene()
    plain = draw_instances(image, masks, boxes)
    labelled = draw_instances(
        image,
        torch.from_numpy(masks),
        torch.from_numpy(boxes),
        labels=torch.tensor([1, 2, 1]),
        scores=torch.tensor([0.93, 0.5, 0.7]),
        class_names=["background", "person", "car"],
    )
    assert not np.array_equal(plain, labelled)


def test_probability_masks_and_boxes_only() -> None:
    image, masks, boxes = _scene()
    probs = masks[:, None].astype(np.float32) * 0.9  # (N, 1, H, W) probabilities, as models return
    a = draw_instances(image, probs)
    b = draw_instances(image, masks)
    assert np.array_equal(a, b)
    only_boxes = draw_instances(image, None, boxes, labels=np.array([1, 1, 1]))
    assert not np.array_equal(only_boxes, image)
    assert np.array_equal(draw_instances(image, np.zeros((0, 120, 160), bool)), image)


def test_bad_arguments_raise() -> None:
    image, masks, boxes = _scene()
    with pytest.raises(ValueError, match="uint8"):
        draw_instances(image.astype(np.float32), masks)
    with pytest.raises(ValueError, match="masks must be"):
        draw_instances(image, masks[:, :10])
    with pytest.raises(ValueError, match="boxes has 2 entries"):
        draw_instances(image, masks, boxes[:2])


def test_make_grid_layout() -> None:
    a = np.full((10, 20, 3), 1, np.uint8)
    b = np.full((30, 10, 3), 2, np.uint8)
    grid = make_grid([a, b, a], cols=2, pad=1)
    assert grid.shape == (2 * 30 + 3, 2 * 20 + 3, 3)
    assert (grid == 2).any() and (grid == 1).any()
    scaled = make_grid([a, b], cols=2, cell_size=16, pad=0)
    assert scaled.shape == (16, 32, 3)
    with pytest.raises(ValueError):
        make_grid([])
