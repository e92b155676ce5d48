"""Mask cropping and resampling for one-stage models (tensor-only: they trace and export to ONNX).

A *mask map* is a per-detection probability map over a whole canvas at some stride (``stride`` canvas
pixels per map cell, cell ``(i, j)`` centred at ``((j + 0.5) * stride, (i + 0.5) * stride)``). The
cheap output of every instaseg model is a *box-relative* mask: ``[K, M, M]`` probabilities covering
the box ``boxes[k]`` (XYXY pixels), which :mod:`instaseg.structures.paste` pastes into the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align


def crop_masks(masks: Tensor, boxes: Tensor, stride: float) -> Tensor:
    """Zero mask-map cells whose centres lie outside their box.

    Args:
        masks: [..., K, h, w] mask maps; boxes: [..., K, 4] XYXY canvas pixels.
        stride: canvas pixels per mask cell.
    Returns:
        [..., K, h, w], ``masks`` times the inside-the-box indicator.
    """
    h, w = masks.shape[-2:]
    ys = (torch.arange(h, device=masks.device, dtype=masks.dtype) + 0.5) * stride
    xs = (torch.arange(w, device=masks.device, dtype=masks.dtype) + 0.5) * stride
    b = boxes[..., None, None, :]
    inside_x = (xs >= b[..., 0]) & (xs < b[..., 2])
    inside_y = (ys[:, None] >= b[..., 1]) & (ys[:, None] < b[..., 3])
    return masks * (inside_x & inside_y).to(masks.dtype)


def masks_in_boxes(maps: Tensor, boxes: Tensor, stride: float, size: int, sampling_ratio: int = 1) -> Tensor:
    """Box-relative low-resolution masks cut out of per-detection mask maps.

    Args:
        maps: [K, h, w] float mask maps (probabilities or logits), one per detection.
        boxes: [K, 4] XYXY canvas pixels, one per detection.
        stride: canvas pixels per map cell.
        size: ``M``, the side of the output.
        sampling_ratio: bilinear samples per output cell side (1: the value at the cell centre).
    Returns:
        [K, M, M]: ``maps[k]`` resampled bilinearly over ``boxes[k]`` (RoIAlign, pixel-centre
        aligned; zero beyond the map). Memory is ``K x M x M``, whatever the image size.
    """
    index = torch.cumsum(torch.ones_like(boxes[:, :1]), 0) - 1  # [K, 1] = 0..K-1, traces with dynamic K
    rois = torch.cat([index, boxes.to(maps.dtype)], 1)
    out = roi_align(maps[:, None], rois, (size, size), spatial_scale=1.0 / float(stride),
                    sampling_ratio=sampling_ratio, aligned=True)
    return out[:, 0]


def downsample_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """[N, H, W] float masks -> [N, h, w] soft masks by area averaging (exact when H/h is an integer)."""
    if masks.shape[0] == 0:
        return masks.new_zeros(0, *size)
    return F.adaptive_avg_pool2d(masks[None], size)[0]


def _tent_weights(centres: Tensor, lo: Tensor, hi: Tensor, m: int) -> Tensor:
    """[K, P, m] bilinear weights of ``m`` cells spread over ``[lo_k, hi_k]`` at the points ``centres``
    [P] (zero beyond the cells): ``max(0, 1 - |u - j|)`` with ``u`` the point in cell coordinates."""
    extent = (hi - lo).clamp(min=1e-6)
    u = (centres[None, :] - lo[:, None]) / extent[:, None] * m - 0.5  # [K, P]
    cells = torch.arange(m, device=u.device, dtype=u.dtype)
    return (1 - (u[..., None] - cells).abs()).clamp(min=0)


def paste_in_image(masks: Tensor, boxes: Tensor, height: int, width: int) -> Tensor:
    """Box-relative masks pasted into the image (the full-size path; memory ``K x H x W`` floats).

    Args:
        masks: [K, M, M] probabilities, each covering its box; boxes: [K, 4] XYXY image pixels.
        height, width: the image size.
    Returns:
        [K, H, W] probabilities: pixel ``(x, y)`` is the bilinear interpolation of its mask at the
        pixel centre ``(x + 0.5, y + 0.5)``, zero beyond the mask, the sampling of
        :func:`instaseg.structures.paste.paste_mask_crop` (so ``>= 0.5`` gives the same pixels as the
        predictor's RLEs, up to float rounding).
    """
    masks = masks.float()
    boxes = boxes.to(masks.device, torch.float32)
    ys = torch.arange(height, device=masks.device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=masks.device, dtype=torch.float32) + 0.5
    wy = _tent_weights(ys, boxes[:, 1], boxes[:, 3], masks.shape[-2])  # [K, H, M]
    wx = _tent_weights(xs, boxes[:, 0], boxes[:, 2], masks.shape[-1])  # [K, W, M]
    return wy @ masks @ wx.transpose(1, 2)
