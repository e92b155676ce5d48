"""Parallel (matrix) non-maximum suppression for one-stage instance models.

Both functions work on a batch of candidates already sorted by decreasing score and never branch on
data, so they trace and export to ONNX with fixed shapes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _same_class_upper(iou: Tensor, labels: Tensor) -> Tensor:
    """[B, K, K] IoUs kept only for pairs (i, j) with i < j (i scores higher) of the same label."""
    same = (labels[:, :, None] == labels[:, None, :]).to(iou.dtype)
    return torch.triu(iou * same, diagonal=1)


def fast_nms_keep(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Fast NMS (YOLACT).

    Args:
        boxes: [B, K, 4] XYXY; scores: [B, K] sorted descending; labels: [B, K] int.
        iou_threshold: a box is dropped if a higher-scored box of its label overlaps it more than this.
    Returns:
        keep [B, K] bool. Unlike greedy NMS, an already dropped box may still suppress (the paper's
        trade of exactness for one matrix operation).
    """
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    iou = inter / (area[:, :, None] + area[:, None, :] - inter).clamp(min=1e-6)
    return _same_class_upper(iou, labels).max(dim=1).values <= iou_threshold


def matrix_nms(masks: Tensor, labels: Tensor, scores: Tensor, sigma: float = 2.0) -> Tensor:
    """Matrix NMS (SOLOv2) with a Gaussian kernel.

    Args:
        masks: [B, K, P] binary (bool or 0/1 float) flattened masks; labels: [B, K] int;
            scores: [B, K] sorted descending.
        sigma: decay strength.
    Returns:
        decayed scores [B, K]: each mask's score times ``min_i exp(-sigma (iou_ij^2 - comp_i^2))`` over
        the higher-scored masks ``i`` of its label, where ``comp_i`` is how much mask ``i`` was itself
        overlapped by a higher-scored one.
    """
    m = masks.to(scores.dtype)
    inter = m @ m.transpose(1, 2)
    area = m.sum(-1)
    iou = _same_class_upper(inter / (area[:, :, None] + area[:, None, :] - inter).clamp(min=1e-6), labels)
    comp = iou.max(dim=1).values  # [B, K]: each mask's largest IoU with a higher-scored one
    decay = torch.exp(-sigma * (iou**2 - comp[:, :, None] ** 2)).min(dim=1).values
    return scores * decay
