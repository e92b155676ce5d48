import numpy as np
import torch

from instaseg.structures import (
    box_iou,
    mask_iou,
    masks_to_boxes,
    polygons_to_mask,
    rle_decode,
    rle_encode,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def test_masks_to_boxes_covers_whole_pixels_and_empty_masks():
    m = torch.zeros(3, 10, 12, dtype=torch.bool)
    m[0, 5, 3] = True
    m[1, 2:4, 1:7] = True
    boxes = masks_to_boxes(m)
    assert boxes.tolist() == [[3, 5, 4, 6], [1, 2, 7, 4], [0, 0, 0, 0]]


def test_box_iou_known_values():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]])
    iou = box_iou(a, b)
    assert torch.allclose(iou, torch.tensor([[1.0, 50 / 150, 0.0, 0.0]]))


def test_xywh_roundtrip():
    b = torch.tensor([[1.0, 2, 3, 4]])
    assert torch.equal(xyxy_to_xywh(xywh_to_xyxy(b)), b)
    assert xywh_to_xyxy(b).tolist() == [[1, 2, 4, 6]]


def test_mask_iou_and_rle_roundtrip():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 17, 23)) > 0.5
    for m in masks:
        assert np.array_equal(rle_decode(rle_encode(m)), m)
    t = torch.from_numpy(masks)
    iou = mask_iou(t, t)
    assert torch.allclose(iou.diag(), torch.ones(4))
    inter = (masks[0] & masks[1]).sum()
    union = (masks[0] | masks[1]).sum()
    assert abs(float(iou[0, 1]) - inter / union) < 1e-6


def test_polygons_to_mask_square_and_multi_part():
    m = polygons_to_mask([[2, 2, 6, 2, 6, 6, 2, 6], [9, 9, 14, 9, 14, 14]], 16, 16)
    assert m.dtype == bool and m.shape == (16, 16)
    assert m[2:6, 2:6].all() and m.sum() > 16  # second part adds pixels
    assert not m[0, 0] and not m[8, 8]
    assert not polygons_to_mask([[1, 1, 2, 2]], 8, 8).any()  # degenerate parts are ignored
