"""Pure ops shared by the one-stage models: NMS variants, box coding, Dice loss."""

from __future__ import annotations

import math

import pytest
import torch

from instaseg.ops.boxes import boxes_of_masks, cxcywh_to_xyxy, decode_boxes, encode_boxes
from instaseg.ops.losses import dice_loss
from instaseg.ops.nms import fast_nms_keep, matrix_nms


def test_fast_nms_suppresses_same_class_only() -> None:
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]]]).float()
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    labels = torch.tensor([[1, 1, 2, 1]])
    assert fast_nms_keep(boxes, scores, labels, 0.5).tolist() == [[True, False, True, True]]
    # IoU of boxes 0 and 1 is 0.81: a higher threshold keeps both
    assert fast_nms_keep(boxes, scores, labels, 0.9).tolist() == [[True, True, True, True]]


def test_matrix_nms_decays_same_class_overlaps_only() -> None:
    masks = torch.zeros(1, 4, 10, 10, dtype=torch.bool)
    masks[0, 0, :5] = True
    masks[0, 1, :5] = True  # duplicate of 0, same class
    masks[0, 2, :5] = True  # duplicate of 0, other class
    masks[0, 3, 6:] = True  # disjoint
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    labels = torch.tensor([[1, 1, 2, 1]])
    out = matrix_nms(masks.flatten(2), labels, scores, sigma=2.0)[0]
    assert out[0] == pytest.approx(0.9) and out[2] == pytest.approx(0.7) and out[3] == pytest.approx(0.6)
    assert out[1] == pytest.approx(0.8 * math.exp(-2.0), rel=1e-4)


def test_box_coding_roundtrip_and_known_values() -> None:
    anchors = torch.tensor([[20.0, 20.0, 10.0, 10.0], [5.0, 5.0, 4.0, 8.0]])  # cxcywh
    assert torch.equal(cxcywh_to_xyxy(anchors[:1]), torch.tensor([[15.0, 15.0, 25.0, 25.0]]))
    gt = torch.tensor([[15.0, 15.0, 25.0, 25.0], [1.0, 2.0, 9.0, 10.0]])
    deltas = encode_boxes(gt, anchors)
    assert torch.allclose(deltas[0], torch.zeros(4))  # the anchor itself
    assert deltas[1, 2] == pytest.approx(math.log(2.0) / 0.2)  # twice the anchor's width
    assert torch.allclose(decode_boxes(deltas, anchors), gt, atol=1e-4)
    huge = decode_boxes(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), anchors[:1])
    assert bool(torch.isfinite(huge).all())  # size scale capped


def test_boxes_of_masks_tight_and_empty() -> None:
    masks = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    masks[0, 0, 2:5, 1:7] = True
    boxes = boxes_of_masks(masks, stride=4.0)
    assert boxes.tolist() == [[[4.0, 8.0, 28.0, 20.0], [0.0, 0.0, 0.0, 0.0]]]


def test_dice_loss_zero_for_perfect_one_for_inverted() -> None:
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1
    assert float(dice_loss(target, target).max()) < 1e-3
    assert float(dice_loss(1 - target, target).min()) > 0.99
    assert float(dice_loss(target * 0.5, target, smooth=1.0, eps=0.0)[0]) == pytest.approx(1 - 17 / 21)
