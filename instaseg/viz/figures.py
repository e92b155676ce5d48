"""Matplotlib figures of single images: the three-panel view (image; instances with contours, class
names and scores; semantic map with a class legend), ground truth beside predictions, and a grid of
samples. Figures are built with :class:`matplotlib.figure.Figure` (Agg), never pyplot, so nothing
global changes on import or use.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.structures.instances import Instances
from instaseg.structures.masks import semantic_map


def _view(inst: Instances) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masks bool (K, H, W), labels (K,), scores (K,)) of ``inst`` as NumPy, for drawing."""
    return inst.to_dense_masks(), inst.labels.cpu().numpy(), inst.scores.cpu().numpy()


def instance_colors(n: int) -> np.ndarray:
    """``n`` distinct RGB colours in [0, 1], (n, 3): the palette of :mod:`instaseg.viz.draw`, so the
    Matplotlib figures and the OpenCV overlays colour instances alike."""
    from instaseg.viz.draw import instance_colors as palette

    return palette(n).astype(np.float64) / 255.0


def class_color(label: int) -> np.ndarray:
    """A fixed RGB colour in [0, 1] for class ``label``, the same in every figure (golden-ratio hue
    steps by label, offset from the instance palette)."""
    h = (0.51 + int(label) * 0.618033988749895) % 1.0
    s, v = (0.8, 0.95) if int(label) % 2 == 0 else (0.55, 0.85)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A pyplot-free Matplotlib Figure on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")  # constrained layout already fits; "tight" would draw twice
    return path


def draw_instances_on(
    ax: Any,
    image: np.ndarray,
    inst: Instances,
    class_names: dict[int, str] | Sequence[str] | None = None,
    *,
    alpha: float = 0.45,
    title: str | None = None,
    show_scores: bool = True,
) -> None:
    """Show ``image`` (uint8 H x W x 3) on ``ax`` with each instance filled in its own colour, its
    contour, and ``name score`` (``name`` alone without ``show_scores``) at the top-left of its extent."""
    masks, labels, scores = _view(inst)
    canvas = image.astype(np.float32) / 255.0
    colors = instance_colors(len(inst))
    for i in range(len(inst)):
        m = masks[i]
        canvas[m] = canvas[m] * (1 - alpha) + colors[i] * alpha
    ax.imshow(np.clip(canvas, 0, 1), interpolation="nearest")
    for i in range(len(inst)):
        m = masks[i]
        if not m.any():
            continue
        ax.contour(m.astype(np.float32), levels=[0.5], colors=[colors[i]], linewidths=1.2)
        ys, xs = np.nonzero(m)
        text = _name(class_names, int(labels[i]))
        if show_scores:
            text += f" {float(scores[i]):.2f}"
        ax.text(
            xs.min(),
            ys.min(),
            text,
            fontsize=7,
            color="white",
            va="bottom",
            bbox={"facecolor": colors[i], "alpha": 0.8, "pad": 1, "edgecolor": "none"},
        )
    _finish(ax, title)


def draw_semantic_on(
    ax: Any,
    image: np.ndarray,
    inst: Instances,
    class_names: dict[int, str] | Sequence[str] | None = None,
    *,
    title: str | None = None,
) -> None:
    """Semantic view: every pixel coloured by its class (highest score on overlaps), background dimmed
    image, with a legend of the classes present."""
    from matplotlib.patches import Patch

    sem = semantic_map(*_view(inst)) if len(inst) else np.zeros(image.shape[:2], int)
    canvas = image.astype(np.float32) / 255.0 * 0.35
    present = [int(c) for c in np.unique(sem) if c != 0]
    for c in present:
        canvas[sem == c] = class_color(c)
    ax.imshow(canvas, interpolation="nearest")
    handles = [Patch(color=class_color(c), label=_name(class_names, c)) for c in present]
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=6, framealpha=0.7)
    _finish(ax, title)


def three_panel(
    image: np.ndarray,
    inst: Instances,
    class_names: dict[int, str] | Sequence[str] | None = None,
    *,
    title: str = "",
    show_scores: bool = True,
) -> Any:
    """The three-panel figure: original, instances, semantic view (``show_scores=False`` for ground
    truth, whose scores mean nothing)."""
    h, w = image.shape[:2]
    fig = new_figure(12, 4.2 * h / max(w, 1) + 0.6)
    axes = fig.subplots(1, 3)
    axes[0].imshow(image)
    _finish(axes[0], "image")
    draw_instances_on(axes[1], image, inst, class_names, title=f"instances ({len(inst)})",
                      show_scores=show_scores)
    draw_semantic_on(axes[2], image, inst, class_names, title="semantic")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def gt_vs_pred(
    image: np.ndarray,
    gt: Instances,
    pred: Instances,
    class_names: dict[int, str] | Sequence[str] | None = None,
    *,
    title: str = "",
) -> Any:
    """Two rows of the three-panel view: ground truth on top, predictions below."""
    h, w = image.shape[:2]
    fig = new_figure(12, 2 * 4.0 * h / max(w, 1) + 0.8)
    axes = fig.subplots(2, 3)
    for row, (inst, name) in enumerate(((gt, "ground truth"), (pred, "predictions"))):
        axes[row, 0].imshow(image)
        _finish(axes[row, 0], name)
        draw_instances_on(axes[row, 1], image, inst, class_names, title=f"{name}: {len(inst)} instances",
                          show_scores=row == 1)
        draw_semantic_on(axes[row, 2], image, inst, class_names, title=f"{name}: semantic")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def sample_grid(
    items: Sequence[tuple[np.ndarray, Instances, str]],
    class_names: dict[int, str] | Sequence[str] | None = None,
    *,
    cols: int = 4,
    cell_size: int = 320,
    show_scores: bool = True,
) -> np.ndarray:
    """A grid of instance overlays as one uint8 (H, W, 3) image: ``items`` are ``(image, instances,
    caption)``; drawn with :func:`instaseg.viz.draw.draw_instances` and tiled by ``make_grid``."""
    import cv2

    from instaseg.viz.draw import draw_instances, make_grid

    tiles = []
    for image, inst, caption in items:
        masks, inst_labels, scores = _view(inst)
        keys = sorted({int(v) for v in inst_labels})
        index = {k: i for i, k in enumerate(keys)}  # contiguous indices for draw_instances' names
        names = [_name(class_names, k) for k in keys]
        labels = np.array([index[int(v)] for v in inst_labels], dtype=np.int64)
        tile = draw_instances(image, masks, labels=labels, scores=scores if show_scores else None,
                              class_names=names)
        scale = cell_size / max(tile.shape[:2])
        tile = cv2.resize(tile, (max(1, round(tile.shape[1] * scale)), max(1, round(tile.shape[0] * scale))))
        cv2.putText(tile, caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(tile, caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    if not tiles:
        return np.full((cell_size, cell_size, 3), 255, dtype=np.uint8)
    return make_grid(tiles, cols=min(cols, len(tiles)), cell_size=cell_size)


def save_image(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (H, W, 3) RGB array as PNG (folders created)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
    return path


def _name(class_names: dict[int, str] | Sequence[str] | None, label: int) -> str:
    if class_names is None:
        return str(label)
    if isinstance(class_names, dict):
        return class_names.get(label, str(label))
    return class_names[label] if 0 <= label < len(class_names) else str(label)


def _finish(ax: Any, title: str | None) -> None:
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
