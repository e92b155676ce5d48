"""Pure functions on binary masks, polygons and COCO run-length encodings (RLE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor


def mask_area(masks: Tensor) -> Tensor:
    """Pixel count of each mask in ``masks`` (Tensor[N, H, W]) as float Tensor[N]."""
    return masks.flatten(1).bool().sum(dim=1).float()


def mask_iou(masks1: Tensor, masks2: Tensor) -> Tensor:
    """Pairwise IoU of ``masks1`` (Tensor[N, H, W]) and ``masks2`` (Tensor[M, H, W]) as Tensor[N, M]."""
    a = masks1.flatten(1).float()
    b = masks2.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (each a flat ``[x1, y1, x2, y2, ...]`` list, parts of one object)
    into one ``(height, width)`` bool mask, as pycocotools does."""
    polys = [list(map(float, p)) for p in polygons if len(p) >= 6]
    if not polys:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects(polys, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of one ``(H, W)`` mask; ``counts`` is a str so it is JSON-ready."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed, or uncompressed with a list of counts) to an ``(H, W)`` bool mask."""
    h, w = rle["size"]
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, h, w)
    elif isinstance(rle["counts"], str):
        rle = {"size": [h, w], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)
