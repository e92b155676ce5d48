"""Tiled inference geometry: cut a large image into overlapping tiles, bring each tile's detections back
to image coordinates, and merge the duplicates that tiles produce along their borders.

The idea is SAHI's (slicing-aided hyper inference): a model that resizes its input to ~800 px loses
objects of a few pixels in a 4000 px image, while on 640 px tiles at native resolution it sees them.
Written here against our own mask forms so memory stays bounded for a 10k x 10k image:

- a mask is a *crop*: ``(crop, window)`` with ``crop`` a bool ``(y1 - y0, x1 - x0)`` array and
  ``window = (x0, y0, x1, y1)`` its half-open integer pixel window in the full image. Memory is the
  box area of each detection, never ``H x W`` per detection;
- boxes are XYXY float pixels, ``(K, 4)``;
- merging is greedy, in decreasing score: a detection absorbs the later same-class detections whose
  masks match it (``"ios"``: intersection over the smaller mask, or ``"iou"``), either dropping them
  (``"nms"``) or OR-ing their masks into it (``"nmm"``, non-maximum merging, which stitches an object
  that two tiles each saw a part of).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from instaseg.structures.paste import encode_crop, paste_mask_crop

Window = tuple[int, int, int, int]
Crop = tuple[np.ndarray, Window]
MERGE_MODES = ("nmm", "nms")
MATCH_METRICS = ("ios", "iou")


def tile_grid(height: int, width: int, tile: int, overlap: float) -> list[Window]:
    """Windows ``(x0, y0, x1, y1)`` (half-open, pixels) of ``tile x tile`` tiles covering a
    ``height x width`` image, neighbours overlapping by ``round(tile * overlap)`` pixels at least.

    The last tile of each row/column is aligned to the image edge (so every tile has the full size and
    the overlap there may be larger); an image side smaller than ``tile`` gives one tile of that side.
    Raises ValueError for ``tile < 1`` or ``overlap`` outside ``[0, 1)``.
    """
    if tile < 1:
        raise ValueError(f"tile must be >= 1 pixel, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(tile - int(round(tile * overlap)), 1)

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        out = list(range(0, size - tile, stride))
        out.append(size - tile)  # the last tile ends at the edge
        return out

    return [
        (x0, y0, min(x0 + tile, width), min(y0 + tile, height))
        for y0 in starts(height)
        for x0 in starts(width)
    ]


def shift_boxes(boxes: np.ndarray, dx: float, dy: float, scale: float = 1.0) -> np.ndarray:
    """``(K, 4)`` XYXY boxes of a tile (or of a resized image) -> image pixels: ``box * scale + (dx, dy)``."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.float32(scale)
    out[:, 0::2] += np.float32(dx)
    out[:, 1::2] += np.float32(dy)
    return out


def lowres_to_crops(
    mask_lowres: np.ndarray, boxes: np.ndarray, height: int, width: int, offset: tuple[int, int] = (0, 0),
    threshold: float = 0.5,
) -> list[Crop]:
    """Box-relative low-res masks ``(K, M, M)`` on ``(K, 4)`` XYXY boxes of a ``height x width`` tile
    -> K crops in image coordinates (windows shifted by ``offset = (x0, y0)`` of the tile).
    Pixels with probability ``>= threshold`` are foreground; memory is one box-sized crop each."""
    dx, dy = offset
    out = []
    for mask, box in zip(np.asarray(mask_lowres, np.float32), np.asarray(boxes, np.float32), strict=True):
        crop, (x0, y0, x1, y1) = paste_mask_crop(mask, box, height, width, threshold)
        out.append((crop, (x0 + dx, y0 + dy, x1 + dx, y1 + dy)))
    return out


def mask_to_crop(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> Crop:
    """A bool ``(h, w)`` mask of a tile -> the crop of its foreground's bounding window, in image
    coordinates (shifted by ``offset = (x0, y0)``). An empty mask gives an empty crop."""
    mask = np.asarray(mask, dtype=bool)
    dx, dy = offset
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(ys) == 0:
        return np.zeros((0, 0), bool), (dx, dy, dx, dy)
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    return mask[y0:y1, x0:x1].copy(), (x0 + dx, y0 + dy, x1 + dx, y1 + dy)


def crop_intersection(a: Crop, b: Crop) -> int:
    """Number of foreground pixels two crops share (computed on their windows' overlap only)."""
    (ca, (ax0, ay0, _, _)), (cb, (bx0, by0, _, _)) = a, b
    x0, y0 = max(ax0, bx0), max(ay0, by0)
    x1, y1 = min(a[1][2], b[1][2]), min(a[1][3], b[1][3])
    if x1 <= x0 or y1 <= y0:
        return 0
    pa = ca[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
    pb = cb[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
    return int(np.count_nonzero(pa & pb))


def union_crops(crops: Sequence[Crop]) -> Crop:
    """The OR of several crops as one crop over the union of their windows."""
    x0 = min(w[0] for _, w in crops)
    y0 = min(w[1] for _, w in crops)
    x1 = max(w[2] for _, w in crops)
    y1 = max(w[3] for _, w in crops)
    out = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=bool)
    for crop, (cx0, cy0, cx1, cy1) in crops:
        if crop.size:
            out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] |= crop
    return out, (x0, y0, x1, y1)


def _box_areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def merge_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    crops: Sequence[Crop] | None = None,
    *,
    mode: str = "nmm",
    metric: str = "ios",
    threshold: float = 0.5,
    class_agnostic: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Crop] | None]:
    """Greedy NMS / NMM of detections gathered from overlapping tiles.

    Args:
        boxes: ``(K, 4)`` XYXY pixels of the full image; scores: ``(K,)``; labels: ``(K,)`` int.
        crops: K masks as crops (see the module docstring), or ``None`` to match boxes instead.
        mode: ``"nmm"`` merges matched detections into the best one (mask OR, box union, its score and
            label); ``"nms"`` drops them.
        metric: ``"ios"`` intersection over the smaller mask (a partial view of an object cut by a tile
            border matches the whole object), or ``"iou"``.
        threshold: detections match when ``metric >= threshold``.
        class_agnostic: match across labels too.

    Returns:
        ``(boxes, scores, labels, crops)`` of the kept detections, in decreasing score (crops ``None``
        when given ``None``). Each detection is compared with the best remaining one's *own* mask, as
        in SAHI's greedy NMM, so merging never chains across unrelated objects.
    """
    if mode not in MERGE_MODES:
        raise ValueError(f"merge mode must be one of {MERGE_MODES}, got {mode!r}")
    if metric not in MATCH_METRICS:
        raise ValueError(f"match metric must be one of {MATCH_METRICS}, got {metric!r}")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    k = len(boxes)
    if crops is not None and len(crops) != k:
        raise ValueError(f"merge_detections: {len(crops)} crops for {k} boxes")
    areas = (
        np.array([int(np.count_nonzero(c)) for c, _ in crops], np.float64)
        if crops is not None else _box_areas(boxes).astype(np.float64)
    )
    order = np.argsort(-scores, kind="stable")
    alive = np.ones(k, dtype=bool)
    out_boxes, out_scores, out_labels, out_crops = [], [], [], []
    for i in order:
        if not alive[i]:
            continue
        alive[i] = False
        # Only detections whose boxes overlap the best one's can match it.
        bi = boxes[i]
        ix = np.minimum(boxes[:, 2], bi[2]) - np.maximum(boxes[:, 0], bi[0])
        iy = np.minimum(boxes[:, 3], bi[3]) - np.maximum(boxes[:, 1], bi[1])
        cand = alive & (ix > 0) & (iy > 0)
        if not class_agnostic:
            cand &= labels == labels[i]
        group = [int(i)]
        for j in order[cand[order]]:  # candidates in decreasing score
            if crops is not None:
                inter = float(crop_intersection(crops[i], crops[j]))
            else:
                inter = float(max(ix[j], 0) * max(iy[j], 0))
            denom = min(areas[i], areas[j]) if metric == "ios" else areas[i] + areas[j] - inter
            if denom > 0 and inter / denom >= threshold:
                alive[j] = False
                group.append(int(j))
        if mode == "nmm" and len(group) > 1:
            g = boxes[group]
            union = [g[:, 0].min(), g[:, 1].min(), g[:, 2].max(), g[:, 3].max()]
            out_boxes.append(np.array(union, np.float32))
            if crops is not None:
                out_crops.append(union_crops([crops[j] for j in group]))
        else:
            out_boxes.append(bi)
            if crops is not None:
                out_crops.append(crops[i])
        out_scores.append(scores[i])
        out_labels.append(labels[i])
    return (
        np.array(out_boxes, np.float32).reshape(-1, 4),
        np.array(out_scores, np.float32),
        np.array(out_labels, np.int64),
        out_crops if crops is not None else None,
    )


def crops_to_rles(crops: Sequence[Crop], height: int, width: int) -> list[dict[str, Any]]:
    """Compressed COCO RLEs (``str`` counts) of crops in a ``height x width`` image; each costs its
    crop's area, not ``H x W`` (:func:`instaseg.structures.paste.encode_crop`)."""
    return [encode_crop(crop, window, height, width) for crop, window in crops]
