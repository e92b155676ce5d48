"""Box coding for anchor-based heads and tight boxes of batched binary masks.

Boxes are XYXY pixels ``(x1, y1, x2, y2)`` unless a name says ``cxcywh`` (centre x, centre y, width,
height, also pixels).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: SSD/YOLACT regression variances: centre offsets are divided by 0.1 x anchor size, log-sizes by 0.2.
BOX_VARIANCE = (0.1, 0.2)
_MAX_LOG_SCALE = math.log(1000.0)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``boxes`` [..., 4] (cx, cy, w, h) -> [..., 4] XYXY."""
    return torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], -1)


def encode_boxes(gt_xyxy: Tensor, anchors: Tensor, variance: tuple[float, float] = BOX_VARIANCE) -> Tensor:
    """SSD-style regression targets.

    Args:
        gt_xyxy: [N, 4] XYXY ground-truth boxes (widths/heights below 1 px count as 1 px).
        anchors: [N, 4] cxcywh anchors, one per box.
    Returns:
        [N, 4] deltas ``((cx - acx) / (v0 aw), (cy - acy) / (v0 ah), log(w / aw) / v1, log(h / ah) / v1)``.
    """
    wh = (gt_xyxy[:, 2:] - gt_xyxy[:, :2]).clamp(min=1.0)
    centre = (gt_xyxy[:, :2] + gt_xyxy[:, 2:]) / 2
    d_c = (centre - anchors[:, :2]) / (variance[0] * anchors[:, 2:])
    d_wh = torch.log(wh / anchors[:, 2:]) / variance[1]
    return torch.cat([d_c, d_wh], -1)


def decode_boxes(deltas: Tensor, anchors: Tensor, variance: tuple[float, float] = BOX_VARIANCE) -> Tensor:
    """Inverse of :func:`encode_boxes`: deltas [..., 4] and cxcywh anchors [..., 4] -> XYXY [..., 4].
    Size scales are capped at 1000x the anchor (no overflow from untrained heads)."""
    centre = anchors[..., :2] + deltas[..., :2] * variance[0] * anchors[..., 2:]
    wh = anchors[..., 2:] * torch.exp((deltas[..., 2:] * variance[1]).clamp(max=_MAX_LOG_SCALE))
    return torch.cat([centre - wh / 2, centre + wh / 2], -1)


def boxes_of_masks(masks: Tensor, stride: float = 1.0) -> Tensor:
    """Tight XYXY boxes [..., K, 4] of binary masks [..., K, h, w], times ``stride`` (pixels per mask
    cell); an empty mask gets the box (0, 0, 0, 0). Tensor-only, so it traces with dynamic K."""
    h, w = masks.shape[-2:]
    cols, rows = masks.any(-2), masks.any(-1)  # [..., K, w], [..., K, h]
    xr = torch.arange(w, device=masks.device)
    yr = torch.arange(h, device=masks.device)
    big = max(h, w)
    x1 = torch.where(cols, xr, big).amin(-1)
    x2 = torch.where(cols, xr + 1, 0).amax(-1)
    y1 = torch.where(rows, yr, big).amin(-1)
    y2 = torch.where(rows, yr + 1, 0).amax(-1)
    boxes = torch.stack([x1, y1, x2, y2], -1).to(torch.float32) * stride
    empty = ~cols.any(-1)
    return torch.where(empty[..., None], torch.zeros_like(boxes), boxes)
