"""Drawing instances on images with OpenCV (masks, contours, boxes, "name 0.93" labels) and grids.

Everything takes and returns uint8 ``(H, W, 3)`` RGB arrays; nothing is written to disk here.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

GOLDEN_RATIO_CONJUGATE = 0.6180339887498949


def instance_colors(n: int, *, saturation: float = 0.75, value: float = 0.95) -> np.ndarray:
    """``n`` distinct RGB colours (uint8 ``(n, 3)``): hues stepped by the golden ratio, so neighbours
    in the sequence are far apart on the colour wheel and the palette is the same on every call."""
    hues = (np.arange(n) * GOLDEN_RATIO_CONJUGATE + 0.11) % 1.0
    rgb = [colorsys.hsv_to_rgb(float(h), saturation, value) for h in hues]
    return (np.asarray(rgb, dtype=np.float64).reshape(n, 3) * 255 + 0.5).astype(np.uint8)


def _as_numpy(x: object) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _label_text(i: int, labels: np.ndarray | None, scores: np.ndarray | None, class_names) -> str:
    parts = []
    if labels is not None:
        label = int(labels[i])
        if class_names is not None and 0 <= label < len(class_names):
            parts.append(str(class_names[label]))
        else:
            parts.append(str(label))
    if scores is not None:
        parts.append(f"{float(scores[i]):.2f}")
    return " ".join(parts)


def draw_instances(
    image: np.ndarray,
    masks: np.ndarray | None,
    boxes: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Overlay instances on ``image`` and return a new uint8 ``(H, W, 3)`` RGB image.

    Args:
        image: uint8 ``(H, W, 3)`` RGB (not modified).
        masks: ``(N, H, W)`` bool (or probabilities, thresholded at 0.5; ``(N, 1, H, W)`` accepted), or
            ``None`` to draw boxes only. Each instance gets its own colour (fill + contour).
        boxes: optional ``(N, 4)`` XYXY pixels; drawn as rectangles, and anchor the label text.
        labels: optional ``(N,)`` class indices (names looked up in ``class_names``).
        scores: optional ``(N,)`` confidences, printed with two decimals (``"person 0.93"``).
        alpha: mask fill opacity in [0, 1].
    Torch tensors are accepted for every array argument.
    """
    import cv2

    img = _as_numpy(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    out = img.copy()
    m = None
    if masks is not None:
        m = _as_numpy(masks)
        if m.ndim == 4:
            m = m[:, 0]
        m = m > 0.5 if m.dtype.kind == "f" else m.astype(bool)
        if m.ndim != 3 or m.shape[1:] != (h, w):
            raise ValueError(f"masks must be (N, {h}, {w}), got {m.shape}")
    b = None if boxes is None else _as_numpy(boxes).reshape(-1, 4).astype(np.float64)
    lab = None if labels is None else _as_numpy(labels).reshape(-1)
    sc = None if scores is None else _as_numpy(scores).reshape(-1)
    n = m.shape[0] if m is not None else (b.shape[0] if b is not None else 0)
    for name, arr in (("boxes", b), ("labels", lab), ("scores", sc)):
        if arr is not None and arr.shape[0] != n:
            raise ValueError(f"{name} has {arr.shape[0]} entries for {n} instances")
    colors = instance_colors(n)
    thickness = max(1, round(max(h, w) / 400))

    if m is not None and n:
        # Fill in order in float: later instances blend over earlier ones where masks overlap.
        fill = out.astype(np.float32)
        for i in range(n):
            fill[m[i]] = fill[m[i]] * (1.0 - alpha) + colors[i].astype(np.float32) * alpha
        out = (fill + 0.5).astype(np.uint8)
        for i in range(n):
            contours, _ = cv2.findContours(m[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in colors[i]), thickness, cv2.LINE_AA)
    if b is not None:
        for i in range(n):
            x1, y1, x2, y2 = (int(round(v)) for v in b[i])
            cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), tuple(int(c) for c in colors[i]), thickness)

    scale = max(0.35, min(h, w) / 600)
    for i in range(n):
        text = _label_text(i, lab, sc, class_names)
        if not text:
            continue
        if b is not None:
            x, y = int(b[i, 0]), int(b[i, 1])
        elif m is not None and m[i].any():
            ys, xs = np.nonzero(m[i])
            x, y = int(xs.min()), int(ys.min())
        else:
            continue
        _put_label(out, text, x, y, colors[i], scale)
    return out


def _put_label(img: np.ndarray, text: str, x: int, y: int, color: np.ndarray, scale: float) -> None:
    """Text on a filled box of the instance colour, above (x, y) or inside the image if no room."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    h, w = img.shape[:2]
    x = int(np.clip(x, 0, max(0, w - tw - 2)))
    top = y - th - base - 2
    if top < 0:
        top = min(y, max(0, h - th - base - 2))
    cv2.rectangle(img, (x, top), (x + tw + 2, top + th + base + 2), tuple(int(c) for c in color), -1)
    # Dark text on light colours, white on dark ones.
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(img, text, (x + 1, top + th + 1), font, scale, ink, 1, cv2.LINE_AA)


def make_grid(
    images: Sequence[np.ndarray],
    cols: int = 4,
    *,
    cell_size: int | None = None,
    pad: int = 2,
    background: int = 255,
) -> np.ndarray:
    """Tile uint8 ``(H, W, 3)`` images into one uint8 image with ``cols`` columns.

    With ``cell_size`` each image is scaled so its longest side is ``cell_size`` (aspect kept);
    otherwise cells are as large as the largest image. Images are centred in their cells; ``pad``
    pixels of ``background`` separate the cells.
    """
    import cv2

    if not images:
        raise ValueError("make_grid needs at least one image")
    cols = max(1, min(int(cols), len(images)))
    tiles = []
    for im in images:
        im = _as_numpy(im)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        if im.dtype != np.uint8 or im.shape[2] != 3:
            raise ValueError(f"make_grid takes uint8 (H, W, 3) images, got {im.dtype} {im.shape}")
        if cell_size:
            s = cell_size / max(im.shape[:2])
            size = (max(1, round(im.shape[1] * s)), max(1, round(im.shape[0] * s)))
            im = cv2.resize(im, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        tiles.append(im)
    ch = max(t.shape[0] for t in tiles)
    cw = max(t.shape[1] for t in tiles)
    rows = (len(tiles) + cols - 1) // cols
    grid = np.full((rows * ch + (rows + 1) * pad, cols * cw + (cols + 1) * pad, 3), background, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        y = pad + r * (ch + pad) + (ch - t.shape[0]) // 2
        x = pad + c * (cw + pad) + (cw - t.shape[1]) // 2
        grid[y : y + t.shape[0], x : x + t.shape[1]] = t
    return grid
