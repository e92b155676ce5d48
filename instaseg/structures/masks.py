"""Binary masks, polygons and COCO run-length encodings (RLE): the project's only RLE module.

A COCO RLE is ``{"size": [H, W], "counts": ...}``. ``counts`` is compressed (``bytes`` or an ASCII
``str``: both are accepted everywhere here) or, in "uncompressed RLE", a list of run lengths. Runs go
down the columns (column-major), starting with a run of zeros. Functions that return RLEs for further
computation give ``bytes`` counts; those that return JSON-ready RLEs say ``str`` counts.

Every operation is pycocotools' C code (the COCO reference), except decoding, which uses
faster-coco-eval's C decoder: bit-identical output (tests/structures/test_rle.py checks it against
pycocotools) without pycocotools' NumPy 2 ``DeprecationWarning`` on each call. Other modules call the
functions here and never import pycocotools themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from faster_coco_eval.core import mask as _fast_mask
from pycocotools import mask as _coco_mask
from torch import Tensor

RLE = dict[str, Any]
"""A COCO RLE dict ``{"size": [H, W], "counts": bytes | str | list[int]}``."""

# pycocotools 2.0.x under NumPy 2 counts a list of RLEs in a uint8 inside ``area``: 256+ overflow.
_AREA_CHUNK = 255


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


# ---------------------------------------------------------------- encode / decode


def encode_masks(masks: np.ndarray) -> list[RLE]:
    """Compressed RLEs (``bytes`` counts) of binary ``masks`` (N, H, W), bool or 0/1 integers."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"encode_masks expects (N, H, W) masks, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    return _coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0), dtype=np.uint8))


def rle_encode(mask: np.ndarray) -> RLE:
    """Compressed, JSON-ready RLE (``str`` counts) of one ``(H, W)`` mask (bool or 0/1 integers)."""
    rle = encode_masks(np.asarray(mask)[None])[0]
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rles(rles: Sequence[RLE], height: int, width: int) -> np.ndarray:
    """Decode compressed RLEs of one ``height x width`` image to bool masks (N, H, W).

    Each plane is column-major in memory (``masks[i].T`` is C-contiguous), as COCO's decoder lays
    them out; ``(0, H, W)`` for no RLEs. Raises ValueError on counts that do not fill the image.
    """
    if not rles:
        return np.zeros((0, height, width), dtype=bool)
    for r in rles:
        if [int(v) for v in r["size"]] != [height, width]:
            raise ValueError(f"RLE of size {list(r['size'])} among masks of size [{height}, {width}]")
    try:
        decoded = _fast_mask.decode([_compressed(r) for r in rles])  # (H, W, N) uint8, Fortran order
    except RuntimeError as exc:  # a malformed counts string
        raise ValueError(str(exc)) from None
    return np.moveaxis(decoded, 2, 0).astype(bool)


def rle_decode(rle: RLE) -> np.ndarray:
    """Decode one RLE (compressed, or uncompressed with a list of counts) to an ``(H, W)`` bool mask."""
    h, w = (int(v) for v in rle["size"])
    return decode_rles([to_rle(rle, h, w)], h, w)[0]


def _compressed(rle: RLE) -> RLE:
    """The RLE with ``bytes`` counts (faster-coco-eval's decoder takes no ``str``)."""
    counts = rle["counts"]
    return rle if isinstance(counts, bytes) else {"size": rle["size"], "counts": counts.encode("ascii")}


# ---------------------------------------------------------------- conversions


def polygons_to_rles(polygons: Sequence[Sequence[float]], height: int, width: int) -> list[RLE]:
    """One compressed RLE (``bytes`` counts) per polygon, each a flat ``[x1, y1, x2, y2, ...]`` list
    of at least 3 points in pixel coordinates, rasterised as COCO does."""
    if not polygons:
        return []
    return _coco_mask.frPyObjects([[float(v) for v in p] for p in polygons], height, width)


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> RLE:
    """The union of COCO polygons (parts of one object, each a flat list of >= 3 points) as one
    compressed RLE (``bytes`` counts); an empty mask for no polygons."""
    rles = polygons_to_rles(polygons, height, width)
    return merge_rles(rles) if rles else empty_rle(height, width)


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (parts of one object) into one ``(height, width)`` bool mask; parts
    with fewer than 3 points are ignored."""
    polys = [p for p in polygons if len(p) >= 6]
    return decode_rles([polygons_to_rle(polys, height, width)], height, width)[0]


def counts_to_rle(counts: Sequence[int], height: int, width: int) -> RLE:
    """Compressed RLE (``bytes`` counts) from uncompressed run lengths (column-major, zeros first)."""
    return _coco_mask.frPyObjects({"size": [height, width], "counts": list(counts)}, height, width)


def empty_rle(height: int, width: int) -> RLE:
    """Compressed RLE (``bytes`` counts) of an all-zero ``height x width`` mask."""
    return encode_masks(np.zeros((1, height, width), dtype=np.uint8))[0]


def to_rle(segmentation: Any, height: int, width: int) -> RLE:
    """Any COCO segmentation of a ``height x width`` image as a compressed RLE, as COCO's ``annToRLE``
    makes it: polygons (a list of flat lists) are rasterised and merged, uncompressed RLE is
    compressed (``bytes`` counts), compressed RLE is returned as it is (``str`` or ``bytes``)."""
    if isinstance(segmentation, list):
        return _coco_mask.merge(_coco_mask.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return _coco_mask.frPyObjects(segmentation, height, width)
    return segmentation


def xywh_to_polygon(box: Sequence[float]) -> list[list[float]]:
    """The one-polygon segmentation COCO's ``loadRes`` gives a box-only result: the corners of
    ``box`` (XYWH pixels) as ``[[x1, y1, x1, y2, x2, y2, x2, y1]]``."""
    x, y, w, h = box
    x2, y2 = x + w, y + h
    return [[x, y, x, y2, x2, y2, x2, y]]


# ---------------------------------------------------------------- measures


def merge_rles(rles: Sequence[RLE], *, intersect: bool = False) -> RLE:
    """Union (or with ``intersect`` the intersection) of compressed RLEs of one image size, as one
    compressed RLE (``bytes`` counts)."""
    if not rles:
        raise ValueError("merge_rles needs at least one RLE")
    return _coco_mask.merge(list(rles), int(intersect))


def rle_areas(rles: Sequence[RLE]) -> np.ndarray:
    """Pixel areas (N,) float64 of N compressed RLEs."""
    rles = list(rles)
    parts = [_coco_mask.area(rles[i : i + _AREA_CHUNK]) for i in range(0, len(rles), _AREA_CHUNK)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0, dtype=np.float64)


def rle_boxes(rles: Sequence[RLE]) -> np.ndarray:
    """Tight XYWH pixel boxes (N, 4) float64 of N compressed RLEs (all zeros for an empty mask)."""
    if not rles:
        return np.zeros((0, 4), dtype=np.float64)
    return np.asarray(_coco_mask.toBbox(list(rles)), dtype=np.float64).reshape(-1, 4)


def rle_iou(dt: Sequence[RLE], gt: Sequence[RLE], iscrowd: Sequence[bool] | None = None) -> np.ndarray:
    """COCO mask IoU (K, N) float64 of K compressed RLEs ``dt`` against N ``gt`` of one image size.
    Where ``iscrowd[j]`` is true the value is intersection / area of the ``dt`` mask (COCO's crowd
    rule)."""
    return _coco_iou(list(dt), list(gt), iscrowd)


def xywh_iou(dt: np.ndarray, gt: np.ndarray, iscrowd: Sequence[bool] | None = None) -> np.ndarray:
    """COCO box IoU (K, N) float64 of XYWH pixel boxes ``dt`` (K, 4) against ``gt`` (N, 4); crowd
    columns as in :func:`rle_iou`."""
    dt = np.asarray(dt, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    return _coco_iou(dt, gt, iscrowd)


def _coco_iou(dt: Any, gt: Any, iscrowd: Sequence[bool] | None) -> np.ndarray:
    k, n = len(dt), len(gt)
    if k == 0 or n == 0:
        return np.zeros((k, n), dtype=np.float64)
    crowd = [0] * n if iscrowd is None else [int(bool(c)) for c in iscrowd]
    if len(crowd) != n:
        raise ValueError(f"{len(crowd)} iscrowd flags for {n} ground-truth regions")
    return np.asarray(_coco_mask.iou(dt, gt, crowd), dtype=np.float64).reshape(k, n)


def semantic_map(
    masks: np.ndarray, labels: Sequence[int], scores: Sequence[float] | None = None
) -> np.ndarray:
    """Paint instance masks bool (N, H, W) with their ``labels`` (N,) into an int64 (H, W) class map
    (0 = background). Where instances overlap the higher score wins (later index without scores)."""
    masks = np.asarray(masks, dtype=bool)
    out = np.zeros(masks.shape[1:], dtype=np.int64)
    order = np.arange(len(masks)) if scores is None else np.argsort(np.asarray(scores), kind="stable")
    for i in order:  # ascending: the best is painted last
        out[masks[i]] = int(labels[i])
    return out
