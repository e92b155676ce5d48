"""The standard click protocol of interactive segmentation, and its metrics (NoC, mIoU@k).

Protocol (one object at a time, masks are ``(H, W)`` bool arrays, clicks are ``(x, y, positive)``
in integer pixel coordinates):

- click 1 is positive, at the object's interior point farthest from its boundary (the maximum of the
  distance transform of the ground-truth mask, the image border counting as boundary);
- each next click goes into the largest error region (largest 8-connected component of the false
  negatives and false positives together): positive when it is a miss (ground truth not predicted),
  negative when it is a false positive; at that region's interior point farthest from its boundary;
- up to ``max_clicks`` (20) clicks.

NoC@t is the number of clicks needed to reach IoU >= t; an object that never reaches it counts
``max_clicks`` and is a failure. mIoU@k is the mean over objects of the IoU after k clicks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from instaseg.ops.clicks import Click, first_click, mask_iou, next_click


def number_of_clicks(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """NoC: the first click count ``k`` (1-based) with ``ious[k - 1] >= threshold``; ``max_clicks``
    when none of the first ``max_clicks`` reaches it (a failure)."""
    for k, v in enumerate(ious[:max_clicks], start=1):
        if v >= threshold:
            return k
    return max_clicks


@dataclass
class ObjectRun:
    """One object's run of the protocol: the IoU and the seconds spent after each click."""

    ious: list[float]
    seconds: list[float]
    clicks: list[Click]


# predict(points (P, 2) float (x, y), labels (P,) int 1/0, prev_mask (H, W) bool or None) -> mask (H, W)
PredictFn = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


def run_protocol(
    predict: PredictFn, gt: np.ndarray, *, max_clicks: int = 20, stop_iou: float | None = None
) -> ObjectRun:
    """Run the click protocol on one object.

    Args:
        predict: the backend, called with all clicks so far and the previous prediction.
        gt: ``(H, W)`` bool ground truth (non-empty).
        max_clicks: clicks at most.
        stop_iou: stop early once IoU >= this (the remaining clicks keep the last IoU, so NoC below
            ``stop_iou`` is unchanged; mIoU@k after the stop is then a lower bound); None runs them all.
    """
    gt = np.asarray(gt, dtype=bool)
    clicks: list[Click] = [first_click(gt)]
    ious: list[float] = []
    seconds: list[float] = []
    prev: np.ndarray | None = None
    while True:
        pts = np.array([[c[0], c[1]] for c in clicks], dtype=np.float64)
        labels = np.array([1 if c[2] else 0 for c in clicks], dtype=np.int64)
        t0 = time.perf_counter()
        pred = np.asarray(predict(pts, labels, prev), dtype=bool)
        seconds.append(time.perf_counter() - t0)
        ious.append(mask_iou(gt, pred))
        prev = pred
        if len(clicks) >= max_clicks or (stop_iou is not None and ious[-1] >= stop_iou):
            break
        nxt = next_click(gt, pred)
        if nxt is None:
            break
        clicks.append(nxt)
    ious += [ious[-1]] * (max_clicks - len(ious))  # an exact (or stopped) prediction stays as it is
    return ObjectRun(ious, seconds, clicks)


def summarize(runs: Sequence[ObjectRun], *, max_clicks: int = 20,
              thresholds: Sequence[float] = (0.85, 0.90)) -> dict[str, Any]:
    """Metrics over objects: ``NoC@85``, ``NoC@90`` (means), ``failures@85``/``@90`` (objects that
    never reach it within ``max_clicks``), ``mIoU@k`` (list, index ``k - 1``), ``seconds_per_click``
    (mean over all clicks made) and ``objects``."""
    if not runs:
        raise ValueError("no objects to summarize")
    out: dict[str, Any] = {"objects": len(runs), "max_clicks": max_clicks}
    for t in thresholds:
        name = f"{round(t * 100):d}"
        nocs = [number_of_clicks(r.ious, t, max_clicks) for r in runs]
        out[f"NoC@{name}"] = float(np.mean(nocs))
        out[f"failures@{name}"] = int(sum(not any(v >= t for v in r.ious[:max_clicks]) for r in runs))
    curve = np.array([r.ious[:max_clicks] for r in runs], dtype=np.float64)
    out["mIoU@k"] = [round(float(v), 4) for v in curve.mean(axis=0)]
    all_seconds = [s for r in runs for s in r.seconds]
    out["seconds_per_click"] = float(np.mean(all_seconds))
    out["clicks_made"] = len(all_seconds)
    return out


def format_table(results: dict[str, dict[str, Any]], ks: Sequence[int] = (1, 3, 5, 10)) -> str:
    """A text table, one row per backend name in ``results`` (each a :func:`summarize` dict)."""
    head = ["backend", "objects", "NoC@85", "NoC@90", "fail@85", "fail@90",
            *(f"mIoU@{k}" for k in ks), "s/click"]
    rows = [head]
    for name, m in results.items():
        curve = m["mIoU@k"]
        rows.append([name, str(m["objects"]), f"{m['NoC@85']:.2f}", f"{m['NoC@90']:.2f}",
                     str(m["failures@85"]), str(m["failures@90"]),
                     *(f"{curve[k - 1]:.3f}" if k <= len(curve) else "-" for k in ks),
                     f"{m['seconds_per_click']:.3f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def plot_curves(results: dict[str, dict[str, Any]], path: str, title: str = "") -> None:
    """Write a mIoU-vs-clicks PNG with one line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for name, m in results.items():
        curve = m["mIoU@k"]
        ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=name)
    ax.set_xlabel("clicks")
    ax.set_ylabel("mIoU")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
