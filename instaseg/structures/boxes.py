"""Pure functions on boxes. All boxes are ``Tensor[N, 4]`` float, XYXY absolute pixels unless noted."""

from __future__ import annotations

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``boxes`` (Tensor[N, 4], XYXY) as Tensor[N]; degenerate boxes have area 0."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    return wh[:, 0] * wh[:, 1]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of ``boxes1`` (Tensor[N, 4]) and ``boxes2`` (Tensor[M, 4]), XYXY, as Tensor[N, M]."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Clip XYXY ``boxes`` (Tensor[N, 4]) to an image of ``height`` x ``width`` pixels."""
    out = boxes.clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight XYXY boxes (Tensor[N, 4] float) around ``masks`` (Tensor[N, H, W] bool/uint8).

    The box covers whole pixels: a mask with a single pixel at (x=3, y=5) gives (3, 5, 4, 6),
    so box area matches pixel extent. Empty masks give (0, 0, 0, 0).
    """
    n = masks.shape[0]
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    m = masks.bool()
    rows = m.any(dim=2)  # (N, H)
    cols = m.any(dim=1)  # (N, W)
    h, w = m.shape[1:]
    ys = torch.arange(h, device=m.device)
    xs = torch.arange(w, device=m.device)
    big = torch.tensor(max(h, w) + 1, device=m.device)
    y1 = torch.where(rows, ys, big).min(dim=1).values
    y2 = torch.where(rows, ys, -1).max(dim=1).values + 1
    x1 = torch.where(cols, xs, big).min(dim=1).values
    x2 = torch.where(cols, xs, -1).max(dim=1).values + 1
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    empty = ~rows.any(dim=1)
    boxes[empty] = 0
    return boxes


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Convert COCO ``(x, y, w, h)`` boxes (Tensor[N, 4]) to XYXY."""
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """Convert XYXY boxes (Tensor[N, 4]) to COCO ``(x, y, w, h)``."""
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
