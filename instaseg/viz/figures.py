"""Matplotlib figures of single images: the three-panel view (image; instances with contours, class
names and scores; semantic map with a class legend), ground truth beside predictions, and a grid of
samples. Figures are built with :class:`matplotlib.figure.Figure` (Agg), never pyplot, so nothing
global changes on import or use.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Instances:
    """Instances of one image: ``masks`` bool (N, H, W), ``labels`` (N,) keys of ``class_names``
    (category ids or contiguous labels), optional ``scores`` (N,)."""

    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def instance_colors(n: int, seed: int = 0) -> np.ndarray:
    """``n`` well separated RGB colours in [0, 1], (n, 3): golden-ratio hue steps, alternating
    saturation/value so neighbours stay distinct."""
    out = np.zeros((n, 3))
    for i in range(n):
        h = (seed * 0.17 + i * 0.618033988749895) % 1.0
        s, v = (0.85, 0.95) if i % 2 == 0 else (0.6, 0.8)
        out[i] = colorsys.hsv_to_rgb(h, s, v)
    return out


def class_color(label: int) -> np.ndarray:
    """A fixed RGB colour in [0, 1] for class ``label`` (the same class gets the same colour in every
    figure)."""
    return instance_colors(int(label) + 1, seed=3)[int(label)]


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
) -> None:
    """Show ``image`` (uint8 H x W x 3) on ``ax`` with each instance filled in its own colour, its
    contour, and ``name score`` at the top-left of its extent."""
    canvas = image.astype(np.float32) / 255.0
    colors = instance_colors(len(inst))
    for i in range(len(inst)):
        m = inst.masks[i]
        canvas[m] = canvas[m] * (1 - alpha) + colors[i] * alpha
    ax.imshow(np.clip(canvas, 0, 1), interpolation="nearest")
    for i in range(len(inst)):
        m = inst.masks[i]
        if not m.any():
            continue
        ax.contour(m.astype(np.float32), levels=[0.5], colors=[colors[i]], linewidths=1.2)
        ys, xs = np.nonzero(m)
        text = _name(class_names, int(inst.labels[i]))
        if inst.scores is not None:
            text += f" {float(inst.scores[i]):.2f}"
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

    from instaseg.evaluation.metrics import semantic_map

    sem = semantic_map(inst.masks, inst.labels, inst.scores) if len(inst) else np.zeros(image.shape[:2], int)
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
) -> Any:
    """The three-panel figure: original, instances, semantic view."""
    h, w = image.shape[:2]
    fig = new_figure(12, 4.2 * h / max(w, 1) + 0.6)
    axes = fig.subplots(1, 3)
    axes[0].imshow(image)
    _finish(axes[0], "image")
    draw_instances_on(axes[1], image, inst, class_names, title=f"instances ({len(inst)})")
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
        draw_instances_on(axes[row, 1], image, inst, class_names, title=f"{name}: {len(inst)} instances")
        draw_semantic_on(axes[row, 2], image, inst, class_names, title=f"{name}: semantic")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def sample_grid(
    items: Sequence[tuple[np.ndarray, Instances, str]],
    class_names: dict[int, str] | Sequence[str] | None = None,
    *,
    cols: int = 4,
) -> Any:
    """A grid of instance overlays: ``items`` are ``(image, instances, caption)``."""
    n = max(len(items), 1)
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig = new_figure(3.2 * cols, 3.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (image, inst, caption) in zip(axes, items, strict=False):
        draw_instances_on(ax, image, inst, class_names, title=caption)
    for ax in axes[len(items) :]:
        ax.axis("off")
    return fig


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
