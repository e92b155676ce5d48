"""Drawing a panoptic segmentation: stuff regions tinted by category, things by instance with a
contour and a "name 0.93" label; VOID is left as it is. uint8 ``(H, W, 3)`` RGB in and out."""

from __future__ import annotations

import numpy as np

from instaseg.structures.panoptic import PanopticResult
from instaseg.viz.draw import _put_label, instance_colors


def draw_panoptic(
    image: np.ndarray,
    result: PanopticResult,
    category_names: dict[int, str] | None = None,
    *,
    alpha: float = 0.5,
) -> np.ndarray:
    """``image`` uint8 (H, W, 3) RGB with ``result`` drawn on it: each stuff category a fixed muted
    colour (the same in every image), each thing segment its own bright colour, contour and label."""
    import cv2

    out = np.asarray(image, dtype=np.uint8).copy()
    if out.shape[:2] != result.image_size:
        raise ValueError(f"image is {out.shape[:2]} but the panoptic result is {result.image_size}")
    names = category_names or {}
    things = [s for s in result.segments if s.isthing]
    thing_colors = instance_colors(max(len(things), 1))
    labels = []
    for seg in result.segments:
        mask = result.id_map == seg.id
        if not mask.any():
            continue
        if seg.isthing:
            color = thing_colors[things.index(seg)]
        else:  # one colour per stuff category, muted so things stand out
            color = instance_colors(int(seg.category_id) + 1, saturation=0.35, value=0.8)[-1]
        out[mask] = (out[mask] * (1 - alpha) + color.astype(np.float64) * alpha).astype(np.uint8)
        if seg.isthing:
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), 1)
        text = names.get(int(seg.category_id), str(seg.category_id))
        if seg.score is not None:
            text += f" {seg.score:.2f}"
        ys, xs = np.nonzero(mask)
        labels.append((text, int(xs.min()), int(ys.min()), color))
    scale = max(0.3, min(out.shape[:2]) / 800)
    for text, x, y, color in labels:
        _put_label(out, text, x, y, color, scale)
    return out
