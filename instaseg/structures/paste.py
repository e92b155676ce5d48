"""Mask post-processing that scales with the number of detections, not with the image size.

Mask R-CNN-style heads predict a small ``M x M`` mask (e.g. 28 x 28) per detection, relative to its
box. Pasting every one into a full-resolution float image (what torchvision's ``paste_masks_in_image``
does) costs ``K x H x W`` floats; with 100 detections on a 1333 x 800 image that is ~400 MB and most of
the post-processing time. Here each mask is resampled only over the integer pixel window its box
touches, thresholded there, and run-length encoded straight from that crop: the RLE of the full image
is obtained by shifting the crop's runs (column-major, COCO order) to their absolute positions, so no
full-size canvas is ever built. Work and memory are ``O(box area)`` per detection.

Sampling convention: the ``M x M`` mask covers the continuous box ``[x1, x2] x [y1, y2]``; the value
at pixel ``(x, y)`` is the bilinear interpolation of the mask at the pixel centre ``(x + 0.5, y + 0.5)``
with zero padding outside the mask (as ``F.grid_sample(..., align_corners=False)``, and as Detectron2
pastes masks). This agrees with torchvision's paste up to boundary pixels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from instaseg.structures.masks import counts_to_rle, encode_masks


def box_window(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """Integer pixel window ``(x0, y0, x1, y1)`` (half-open) of the pixels whose centres may get
    a non-zero value from a mask on ``box`` (XYXY float pixels), clipped to a ``height x width`` image.
    The window is empty (``x1 <= x0`` or ``y1 <= y0``) when the box lies outside the image."""
    bx1, by1, bx2, by2 = (float(v) for v in box)
    x0 = max(int(math.floor(bx1)), 0)
    y0 = max(int(math.floor(by1)), 0)
    x1 = min(int(math.ceil(bx2)), width)
    y1 = min(int(math.ceil(by2)), height)
    return x0, y0, max(x1, x0), max(y1, y0)


def _interp_matrix(start_px: int, stop_px: int, lo: float, hi: float, m: int) -> np.ndarray:
    """Bilinear weights (float32 ``[stop_px - start_px, m]``) mapping ``m`` mask cells spread over the
    continuous interval ``[lo, hi]`` to the centres of pixels ``start_px .. stop_px - 1`` (zero padding)."""
    n = max(stop_px - start_px, 0)
    weights = np.zeros((n, m + 2), dtype=np.float32)
    i0, i1, w0, w1 = _lerp_indices(start_px, stop_px, lo, hi, m)
    rows = np.arange(n)
    weights[rows, i0] += w0
    weights[rows, i1] += w1
    return weights[:, 1:-1]


def _lerp_indices(
    start_px: int, stop_px: int, lo: float, hi: float, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the centres of pixels ``start_px .. stop_px - 1``: the two neighbouring mask cells and their
    bilinear weights, as indices into the cells padded with one zero cell on each side (``0 .. m + 1``)."""
    extent = max(hi - lo, 1e-6)
    centres = np.arange(start_px, stop_px, dtype=np.float64) + 0.5
    u = (centres - lo) / extent * m - 0.5  # position in mask-cell coordinates
    base = np.floor(u)
    frac = (u - base).astype(np.float32)
    base = base.astype(np.int64)
    i0 = np.clip(base + 1, 0, m + 1)
    i1 = np.clip(base + 2, 0, m + 1)
    return i0, i1, 1.0 - frac, frac


def paste_mask_crop(
    mask: np.ndarray, box: np.ndarray, height: int, width: int, threshold: float = 0.5
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Resample one low-resolution mask onto its box's pixel window.

    Args:
        mask: ``(Mh, Mw)`` float probabilities for the box (e.g. 28 x 28).
        box: ``(4,)`` XYXY float box in image pixels.
        height, width: image size.
        threshold: probability at or above which a pixel is foreground.

    Returns:
        ``(crop, (x0, y0, x1, y1))``: ``crop`` is a bool ``(y1 - y0, x1 - x0)`` array for the clipped
        integer window (possibly empty). It is a transposed view of a C-contiguous ``(w, h)`` array,
        i.e. Fortran-ordered, which is the order RLE needs.
    """
    window = box_window(box, height, width)
    x0, y0, x1, y1 = window
    if x1 <= x0 or y1 <= y0:
        return np.zeros((y1 - y0, x1 - x0), dtype=bool), window
    return paste_mask_probs(mask, box, window) >= threshold, window


def paste_mask_probs(mask: np.ndarray, box: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """The probabilities of one low-resolution mask resampled onto any pixel window.

    Args:
        mask: ``(Mh, Mw)`` float probabilities for the box.
        box: ``(4,)`` XYXY float box in image pixels.
        window: ``(x0, y0, x1, y1)`` half-open integer pixel window; it may reach beyond the box
            (those pixels read the zero padding) but must be non-empty.

    Returns:
        float32 ``(y1 - y0, x1 - x0)`` probabilities, Fortran-ordered (a transposed view).
    """
    mask = np.asarray(mask, dtype=np.float32)
    mh, mw = mask.shape
    x0, y0, x1, y1 = window
    # Separable bilinear resampling, computed transposed (x-major) so the result is column-major:
    # a small matmul along x (w x Mw @ Mw x Mh), then a 2-tap gather-lerp along y.
    wx = _interp_matrix(x0, x1, float(box[0]), float(box[2]), mw)
    cols = np.zeros((x1 - x0, mh + 2), dtype=np.float32)
    cols[:, 1:-1] = wx @ np.ascontiguousarray(mask.T)
    i0, i1, w0, w1 = _lerp_indices(y0, y1, float(box[1]), float(box[3]), mh)
    probs_t = cols[:, i0] * w0
    probs_t += cols[:, i1] * w1
    return probs_t.T


def crop_rle_counts(
    crop: np.ndarray, window: tuple[int, int, int, int], height: int, width: int
) -> list[int]:
    """Uncompressed COCO RLE counts of a full ``height x width`` mask that is zero except for ``crop``
    (bool ``(h, w)``) placed at ``window`` ``(x0, y0, x1, y1)``. Column-major order, starting with a
    run of zeros, as pycocotools expects. Cost is ``O(h * w)``, independent of the image size."""
    x0, y0, x1, y1 = window
    total = height * width
    crop = np.asarray(crop, dtype=bool)
    if crop.size == 0 or not crop.any():
        return [total]
    h, w = crop.shape
    # Pad each column with a zero above and below so runs start/end inside the padded column.
    padded = np.zeros((w, h + 2), dtype=np.int8)
    padded[:, 1:-1] = crop.T
    diff = np.diff(padded.reshape(-1))  # column-major flatten of the padded crop
    starts = np.flatnonzero(diff == 1)  # padded-flat index of the first foreground pixel, minus 1
    ends = np.flatnonzero(diff == -1)  # padded-flat index of the last foreground pixel
    # Padded-flat index p = col * (h + 2) + (row + 1) -> absolute index (x0 + col) * H + (y0 + row).
    s_col, s_row = np.divmod(starts + 1, h + 2)
    e_col, e_row = np.divmod(ends, h + 2)
    abs_start = (x0 + s_col) * height + (y0 + s_row - 1)
    abs_end = (x0 + e_col) * height + (y0 + e_row - 1) + 1  # exclusive
    if y0 == 0 and y0 + h == height and len(abs_start) > 1:
        # Runs touching the bottom of one column and the top of the next are one run in the image.
        keep = np.ones(len(abs_start), dtype=bool)
        keep[1:] = abs_start[1:] != abs_end[:-1]
        abs_end = np.maximum.reduceat(abs_end, np.flatnonzero(keep))
        abs_start = abs_start[keep]
    bounds = np.empty(2 * len(abs_start) + 2, dtype=np.int64)
    bounds[0] = 0
    bounds[1:-1:2] = abs_start
    bounds[2:-1:2] = abs_end
    bounds[-1] = total
    counts = np.diff(bounds).tolist()
    if counts[-1] == 0:  # the mask reaches the last pixel: no trailing run of zeros
        counts.pop()
    return counts


def encode_crop(
    crop: np.ndarray, window: tuple[int, int, int, int], height: int, width: int
) -> dict[str, Any]:
    """Compressed, JSON-ready COCO RLE (``{"size": [H, W], "counts": str}``) of a full-image mask that
    is ``crop`` at ``window`` and zero elsewhere; identical to ``pycocotools.mask.encode`` of that mask."""
    counts = crop_rle_counts(crop, window, height, width)
    rle = counts_to_rle(counts, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def paste_masks_to_rles(
    masks: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float = 0.5
) -> list[dict[str, Any]]:
    """Paste low-resolution masks into an image of ``height x width`` and return their COCO RLEs.

    Args:
        masks: ``(K, M, M)`` or ``(K, 1, M, M)`` float probabilities, one per detection, each relative
            to its box (Mask R-CNN's RoI masks after the sigmoid).
        boxes: ``(K, 4)`` XYXY float boxes in image pixels.
        height, width: the output image size.
        threshold: probability at or above which a pixel is foreground.

    Returns:
        ``K`` compressed COCO RLEs with ``str`` counts. Peak extra memory is one box-sized crop.
    """
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim == 4:
        masks = masks[:, 0]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(masks) != len(boxes):
        raise ValueError(f"paste_masks_to_rles: {len(masks)} masks but {len(boxes)} boxes")
    out = []
    for mask, box in zip(masks, boxes, strict=True):
        crop, window = paste_mask_crop(mask, box, height, width, threshold)
        out.append(encode_crop(crop, window, height, width))
    return out


def paste_masks_dense(
    masks: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float = 0.5
) -> np.ndarray:
    """Paste low-resolution masks into a bool ``(K, H, W)`` array (for callers that really need
    dense masks, e.g. drawing). Same sampling as :func:`paste_masks_to_rles`; memory ``K x H x W`` bytes."""
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim == 4:
        masks = masks[:, 0]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    out = np.zeros((len(boxes), height, width), dtype=bool)
    for k, (mask, box) in enumerate(zip(masks, boxes, strict=True)):
        crop, (x0, y0, x1, y1) = paste_mask_crop(mask, box, height, width, threshold)
        out[k, y0:y1, x0:x1] = crop
    return out


def dense_masks_to_rles(masks: np.ndarray, threshold: float = 0.5) -> list[dict[str, Any]]:
    """COCO RLEs (``str`` counts) of full-resolution masks ``(K, H, W)`` or ``(K, 1, H, W)`` given as
    bool or float probabilities (thresholded at ``threshold``). The fallback for models that only
    return full-size masks; encodes one mask at a time to keep memory at one ``H x W`` uint8 copy."""
    masks = np.asarray(masks)
    if masks.ndim == 4:
        masks = masks[:, 0]
    out = []
    for m in masks:
        binary = m if m.dtype == bool else m >= threshold
        rle = encode_masks(binary[None])[0]
        out.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return out
