"""Drawing panoptic segmentations: stuff regions in their category's colour, each thing in its own shade
of its category's colour, VOID black (or left as the image), with segment boundaries and names.

Everything takes and returns uint8 ``(H, W, 3)`` RGB arrays; nothing is written to disk here.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np

from instaseg.structures.panoptic import PanopticResult
from instaseg.viz.draw import _put_label

GOLDEN = 0.6180339887498949


def category_color(category: dict[str, Any] | int) -> np.ndarray:
    """uint8 (3,) colour of a category: its ``color`` entry when the dict has one (COCO panoptic
    categories do), else a fixed hue from its id."""
    if isinstance(category, dict) and isinstance(category.get("color"), list | tuple):
        return np.asarray(category["color"][:3], dtype=np.uint8)
    cid = int(category["id"] if isinstance(category, dict) else category)
    rgb = colorsys.hsv_to_rgb((0.13 + cid * GOLDEN) % 1.0, 0.65, 0.9)
    return (np.asarray(rgb) * 255 + 0.5).astype(np.uint8)


def _thing_shade(base: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th instance's shade of a thing colour: brightness steps so neighbours differ."""
    if k == 0:
        return base
    h, s, v = colorsys.rgb_to_hsv(*(base.astype(np.float64) / 255.0))
    v2 = 0.45 + ((v - 0.45 + k * 0.37) % 0.55)
    s2 = min(1.0, max(0.35, s + (0.15 if k % 2 else -0.15)))
    return (np.asarray(colorsys.hsv_to_rgb(h, s2, v2)) * 255 + 0.5).astype(np.uint8)


def segment_colors(
    result: PanopticResult, categories: Sequence[dict[str, Any]] | None = None
) -> dict[int, np.ndarray]:
    """Segment id -> uint8 (3,) colour: stuff = its category colour, things = shades of it per instance."""
    cats = {int(c["id"]): c for c in categories or []}
    seen: dict[int, int] = {}
    out: dict[int, np.ndarray] = {}
    for seg in result.segments:
        base = category_color(cats.get(seg.category_id, seg.category_id))
        if seg.isthing:
            k = seen.get(seg.category_id, 0)
            seen[seg.category_id] = k + 1
            out[seg.id] = _thing_shade(base, k)
        else:
            out[seg.id] = base
    return out


def colorize_panoptic(
    result: PanopticResult, categories: Sequence[dict[str, Any]] | None = None
) -> np.ndarray:
    """uint8 (H, W, 3) picture of ``result``: every segment in its colour (:func:`segment_colors`),
    VOID and unlisted ids black."""
    colors = segment_colors(result, categories)
    ids = np.asarray(result.id_map)
    out = np.zeros((*ids.shape, 3), np.uint8)
    if not colors:
        return out
    keys = np.array(sorted(colors), dtype=np.int64)
    pos = np.searchsorted(keys, ids)
    pos = np.clip(pos, 0, len(keys) - 1)
    hit = keys[pos] == ids
    palette = np.stack([colors[int(k)] for k in keys])
    out[hit] = palette[pos[hit]]
    return out


def overlay_panoptic(
    image: np.ndarray,
    result: PanopticResult,
    categories: Sequence[dict[str, Any]] | None = None,
    *,
    alpha: float = 0.55,
    boundaries: bool = True,
    labels: bool = True,
    min_label_area: int = 64,
) -> np.ndarray:
    """``image`` uint8 (H, W, 3) with ``result`` blended on it (``alpha`` = colour weight; VOID left
    as the image), white boundaries around things and dark ones between stuff regions, and category
    names on segments of at least ``min_label_area`` pixels (things at their top-left, stuff at the
    pixel nearest its centroid)."""
    import cv2

    image = np.asarray(image)
    if image.shape[:2] != result.image_size:
        raise ValueError(f"image is {image.shape[:2]} but the panoptic map is {result.image_size}")
    color = colorize_panoptic(result, categories).astype(np.float32)
    labelled = np.isin(result.id_map, [s.id for s in result.segments])
    out = image.astype(np.float32)
    out[labelled] = (1 - alpha) * out[labelled] + alpha * color[labelled]
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in categories or []}
    colors = segment_colors(result, categories)
    thickness = max(1, round(min(result.image_size) / 300))
    for seg in result.segments:
        mask = (result.id_map == seg.id).astype(np.uint8)
        if not mask.any():
            continue
        if boundaries:
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            ink = (255, 255, 255) if seg.isthing else (40, 40, 40)
            cv2.drawContours(out, contours, -1, ink, thickness, cv2.LINE_AA)
        area = int(mask.sum())
        if labels and area >= min_label_area:
            ys, xs = np.nonzero(mask)
            if seg.isthing:
                x, y = int(xs.min()), int(ys.min())
            else:
                k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
                x, y = int(xs[k]), int(ys[k])
            text = names.get(seg.category_id, str(seg.category_id))
            if seg.score is not None:
                text += f" {seg.score:.2f}"
            _put_label(out, text, x, y, colors[seg.id], max(0.35, min(result.image_size) / 700))
    return out
