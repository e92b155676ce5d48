"""Turn raw export-graph outputs into the torch detection-model contract.

Shared by the ONNX Runtime and TorchScript runtimes so both give exactly what the PyTorch model gives:
box-relative masks are pasted with torchvision's ``paste_masks_in_image`` (the function the eager
Mask R-CNN calls), whole-image low-resolution masks are resized bilinearly like
``instaseg.models.rt_common.postprocess``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _tensor(value: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(dtype)
    return torch.from_numpy(np.ascontiguousarray(value)).to(dtype)


def raw_to_detections(
    boxes: Any,
    scores: Any,
    labels: Any,
    masks: Any,
    *,
    mask_kind: str,
    image_size: tuple[int, int],
    paste: bool,
) -> dict[str, Tensor]:
    """One image's graph outputs -> a detection dict.

    Args:
        boxes: [K, 4] XYXY input pixels; scores: [K]; labels: [K]; masks: [K, h, w] probabilities
            (``mask_kind`` "box": relative to each box; "image": covering the whole image).
        image_size: the input image's (H, W).
        paste: True -> ``masks`` [K, 1, H, W] float probabilities (the torch model contract);
            False -> box-relative masks are returned as ``mask_lowres`` [K, M, M] (what
            :mod:`instaseg.ops.lowres` consumers use); whole-image masks are always resized.
    """
    height, width = image_size
    out = {
        "boxes": _tensor(boxes, torch.float32).reshape(-1, 4),
        "labels": _tensor(labels, torch.int64).reshape(-1),
        "scores": _tensor(scores, torch.float32).reshape(-1),
    }
    m = _tensor(masks, torch.float32)
    k = out["boxes"].shape[0]
    if mask_kind == "box":
        m = m.reshape(k, *m.shape[-2:]) if m.numel() or k else m.new_zeros(0, 28, 28)
        if not paste:
            out["mask_lowres"] = m
            return out
        from torchvision.models.detection.roi_heads import paste_masks_in_image

        if k:
            out["masks"] = paste_masks_in_image(m[:, None], out["boxes"], (height, width))
        else:
            out["masks"] = m.new_zeros(0, 1, height, width)
        return out
    if mask_kind != "image":
        raise ValueError(f"unknown mask_kind {mask_kind!r}")
    if k:
        out["masks"] = F.interpolate(m.reshape(k, 1, *m.shape[-2:]), size=(height, width), mode="bilinear",
                                     align_corners=False)
    else:
        out["masks"] = m.new_zeros(0, 1, height, width)
    return out
