"""Turn raw export-graph outputs into the model contract's detection dicts.

Shared by the ONNX Runtime and TorchScript runtimes so both give what the PyTorch model gives:
``mask_lowres`` [K, M, M] box-relative probabilities (the cheap path), or ``masks`` [K, 1, H, W] pasted
with :func:`instaseg.ops.masks.paste_in_image`, as :meth:`InstanceSegmentationModel.paste_full_size`
does. Files from earlier exports with whole-image masks (``mask_kind`` "image") are converted to
box-relative masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from instaseg.ops.masks import masks_in_boxes, paste_in_image

IMAGE_MASK_SIZE = 56  # box-relative side for whole-image masks of earlier exports


def _tensor(value: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(dtype)
    return torch.from_numpy(np.ascontiguousarray(value)).to(dtype)


def raw_to_detections(
    boxes: Any, scores: Any, labels: Any, masks: Any, *, mask_kind: str, image_size: tuple[int, int],
    paste: bool,
) -> dict[str, Tensor]:
    """One image's graph outputs -> a detection dict.

    Args:
        boxes: [K, 4] XYXY input pixels; scores: [K]; labels: [K]; masks: [K, M, M] probabilities
            relative to each box (``mask_kind`` "box"), or [K, h, w] covering the whole image ("image").
        image_size: the input image's (H, W).
        paste: True -> ``masks`` [K, 1, H, W] probabilities; False -> ``mask_lowres`` [K, M, M].
    """
    height, width = image_size
    out = {
        "boxes": _tensor(boxes, torch.float32).reshape(-1, 4),
        "labels": _tensor(labels, torch.int64).reshape(-1),
        "scores": _tensor(scores, torch.float32).reshape(-1),
    }
    k = out["boxes"].shape[0]
    m = _tensor(masks, torch.float32)
    m = m.reshape(k, *m.shape[-2:]) if k else m.new_zeros(0, *(m.shape[-2:] if m.ndim == 3 else (28, 28)))
    if mask_kind == "image":
        # the masks cover the whole image at a lower resolution: cut each box out, in mask cells
        cells = out["boxes"].new_tensor([m.shape[-1] / width, m.shape[-2] / height]).repeat(2)
        m = masks_in_boxes(m, out["boxes"] * cells, 1.0, IMAGE_MASK_SIZE)
    elif mask_kind != "box":
        raise ValueError(f"unknown mask_kind {mask_kind!r}")
    if paste:
        out["masks"] = paste_in_image(m, out["boxes"], height, width)[:, None]
    else:
        out["mask_lowres"] = m
    return out
