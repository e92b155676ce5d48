"""The performance dashboard: one plotting function per panel, each drawing on a given Matplotlib
axis, so every panel can be saved alone or composed into ``dashboard.png``.

Panels: mAP breakdown, per-class AP, IoU distribution, precision-recall curves per class (from the
COCOeval precision array), mask quality against object size, training curves (a run directory's
``history.jsonl`` and TensorBoard scalars), confusion matrix, error-analysis bars.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.viz.figures import new_figure, save_figure

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def plot_map_breakdown(ax: Any, metrics: dict[str, Any]) -> None:
    """Grouped bars of the 12 COCO stats for segm and bbox (undefined stats left out)."""
    x = np.arange(len(STATS))
    kinds = [k for k in ("segm", "bbox") if k in metrics]
    width = 0.8 / max(len(kinds), 1)
    for j, kind in enumerate(kinds):
        vals = np.array([metrics[kind][s] for s in STATS], dtype=float)
        vals = np.where(vals < 0, np.nan, vals)
        ax.bar(x + (j - (len(kinds) - 1) / 2) * width, vals, width, label="mask" if kind == "segm" else "box")
    ax.set_xticks(x, STATS, rotation=45, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title("COCO metrics")
    ax.legend(fontsize=7)


def plot_per_class_ap(ax: Any, per_class: dict[str, Any], *, kind: str = "segm", top: int = 25) -> None:
    """Horizontal bars of per-class AP, best first (classes without GT left out)."""
    rows = [(n, v[kind]["AP"]) for n, v in per_class.items() if kind in v and v[kind]["AP"] >= 0]
    rows.sort(key=lambda r: -r[1])
    if len(rows) > top:
        rows = rows[: top // 2] + rows[-(top - top // 2) :]
    names = [r[0] for r in rows][::-1]
    ax.barh(np.arange(len(names)), [r[1] for r in rows][::-1], color="tab:blue")
    ax.set_yticks(np.arange(len(names)), names, fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_title(
        f"per-class {'mask' if kind == 'segm' else 'box'} AP"
        + (" (best and worst)" if len(per_class) > top else "")
    )
    _empty_note(ax, not rows)


def plot_iou_distribution(ax: Any, ious: np.ndarray) -> None:
    """Histogram of the IoU of matched (TP at 0.5) detection/GT pairs."""
    ax.hist(ious, bins=np.linspace(0.5, 1.0, 26), color="tab:green", edgecolor="white")
    if len(ious):
        ax.axvline(float(np.mean(ious)), color="k", ls="--", lw=1, label=f"mean {np.mean(ious):.3f}")
        ax.legend(fontsize=7)
    ax.set_xlabel("IoU of matched pairs")
    ax.set_title("IoU distribution")
    _empty_note(ax, not len(ious))


def plot_pr_curves(
    ax: Any, ev: Any, class_names: dict[int, str], *, gt_counts: dict[int, int] | None = None,
    max_classes: int = 8,
) -> None:
    """Precision-recall curves at IoU 0.5 (area all, 100 dets) of the ``max_classes`` classes with the
    most GT (``gt_counts``; else the highest AP), plus the mean over classes at IoU 0.5 and 0.75.
    ``ev`` is a :class:`~instaseg.evaluation.coco.CocoEval`."""
    recall = np.linspace(0, 1, ev.precision.shape[1])
    t50 = int(np.argmin(np.abs(ev.iou_thresholds - 0.5)))
    t75 = int(np.argmin(np.abs(ev.iou_thresholds - 0.75)))
    prec = ev.precision[:, :, :, 0, -1]  # (T, R, K)
    valid = [k for k in range(prec.shape[2]) if (prec[t50, :, k] > -1).any()]
    if gt_counts:
        valid.sort(key=lambda k: -gt_counts.get(ev.cat_ids[k], 0))
    else:
        valid.sort(key=lambda k: -prec[t50, :, k].mean())
    for k in valid[:max_classes]:
        ax.plot(
            recall,
            np.clip(prec[t50, :, k], 0, 1),
            lw=1,
            label=class_names.get(ev.cat_ids[k], str(ev.cat_ids[k])),
        )
    for t, style, name in ((t50, "-", "mean @0.50"), (t75, "--", "mean @0.75")):
        p = prec[t][:, valid] if valid else np.zeros((len(recall), 0))
        if p.size:
            ax.plot(recall, p.mean(axis=1), "k" + style, lw=2, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"precision-recall ({ev.iou_type})")
    ax.legend(fontsize=6, loc="lower left")
    _empty_note(ax, not valid)


def plot_quality_vs_size(ax: Any, best_iou: np.ndarray, areas: np.ndarray) -> None:
    """Each GT object's best same-class IoU against its size (sqrt area, log scale), with the mean per
    size bin and COCO's small/medium/large limits (32^2, 96^2)."""
    size = np.sqrt(np.maximum(areas, 1))
    ax.scatter(size, best_iou, s=4, alpha=0.35, color="tab:purple")
    if len(size):
        bins = np.geomspace(max(size.min(), 1), size.max() + 1, 10)
        idx = np.digitize(size, bins)
        centers, means = [], []
        for b in np.unique(idx):
            sel = idx == b
            centers.append(float(np.exp(np.log(size[sel]).mean())))
            means.append(float(best_iou[sel].mean()))
        ax.plot(centers, means, "k-o", ms=3, lw=1.5, label="mean")
        ax.legend(fontsize=7)
    ax.set_xscale("log")
    for lim in (32, 96):
        ax.axvline(lim, color="grey", ls=":", lw=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("object size (sqrt of mask area, px)")
    ax.set_ylabel("best IoU")
    ax.set_title("mask quality vs object size")
    _empty_note(ax, not len(size))


def plot_confusion(
    ax: Any, matrix: np.ndarray, cat_ids: list[int], class_names: dict[int, str], *, top: int = 15
) -> None:
    """Row-normalised confusion (rows GT, columns predicted, last = background) of the ``top`` classes
    with the most GT plus background."""
    totals = matrix[:-1].sum(1)
    keep = sorted(np.argsort(-totals)[: min(top, len(totals))].tolist())
    idx = keep + [len(cat_ids)]
    sub = matrix[np.ix_(idx, idx)].astype(float)
    norm = sub / np.maximum(sub.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    labels = [class_names.get(cat_ids[i], str(cat_ids[i])) for i in keep] + ["background"]
    ax.set_xticks(range(len(idx)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(idx)), labels, fontsize=6)
    if len(idx) <= 16:
        for r in range(len(idx)):
            for c in range(len(idx)):
                if sub[r, c]:
                    ax.text(
                        c,
                        r,
                        int(sub[r, c]),
                        ha="center",
                        va="center",
                        fontsize=5,
                        color="white" if norm[r, c] > 0.5 else "black",
                    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion (score >= 0.5, IoU >= 0.5)")


def plot_errors(ax: Any, errors: dict[str, Any]) -> None:
    """Bars of AP50 lost to each TIDE error type (``errors["dAP"]``, in its order), with the error counts
    and the types' long names (``errors["names"]``), as :func:`instaseg.evaluation.errors` returns them."""
    types = list(errors["dAP"])
    names = errors.get("names", {})
    vals = [100 * errors["dAP"][t] for t in types]
    y = np.arange(len(types))
    ax.barh(y, vals, color=["#e6194b", "#f58231", "#911eb4", "#4363d8", "#3cb44b", "#808080"][: len(types)])
    ax.set_yticks(y, [f"{names.get(t, t)} ({errors['counts'].get(t, 0)})" for t in types], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.0, 1.1 * max(vals)))
    ax.set_xlabel("dAP50 (points) if fixed")
    ax.set_title(f"error analysis: AP50 {100 * errors['AP50']:.1f}")


def read_training_history(run_dir: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Curves from a run directory: ``history.jsonl`` rows (``val/segm_AP``, ``val/bbox_AP`` by
    iteration, else epoch) and TensorBoard scalars under ``tensorboard/`` (tags as written, by step).
    Missing files give no curves; unreadable lines are skipped, and so is a ``"final"`` row (the
    final score with test-time flips: not a point of the plain validations' curve)."""
    run_dir = Path(run_dir)
    curves: dict[str, list[tuple[float, float]]] = {}
    hist = run_dir / "history.jsonl"
    if hist.is_file():
        for line in hist.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict) or row.get("final"):
                continue
            x = row.get("iteration", row.get("epoch"))
            for kind in ("segm", "bbox"):
                if isinstance(row.get(kind), dict) and "AP" in row[kind] and x is not None:
                    curves.setdefault(f"val/{kind}_AP", []).append((float(x), float(row[kind]["AP"])))
    tb = run_dir / "tensorboard"
    if tb.is_dir() and any(tb.rglob("events.out.tfevents.*")):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tag.startswith("train/"):
                curves[tag] = [(float(e.step), float(e.value)) for e in acc.Scalars(tag)]
    return curves


def plot_training_curves(ax: Any, curves: dict[str, list[tuple[float, float]]]) -> None:
    """Training losses (left axis) and validation AP (right axis), both by iteration."""
    losses = {k: v for k, v in curves.items() if k.startswith("train/") and "loss" in k}
    for tag, pts in sorted(losses.items()):
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, lw=1, marker="." if len(xs) < 30 else None, label=tag.split("/", 1)[1])
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    val = {k: v for k, v in curves.items() if k.startswith("val/")}
    if val:
        ax2 = ax.twinx() if losses else ax
        for tag, pts in sorted(val.items()):
            xs, ys = zip(*pts, strict=True)
            ax2.plot(xs, ys, "o--", ms=3, label=tag)
        ax2.set_ylabel("val AP")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=6, loc="center right")
    if losses:
        ax.legend(fontsize=6, loc="upper right")
    ax.set_title("training curves")
    _empty_note(ax, not curves)


def _empty_note(ax: Any, empty: bool) -> None:
    if empty:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")


def dashboard_panels(report: Any, curves: dict | None = None) -> dict[str, Callable[[Any], None]]:
    """Panel name -> drawing function(ax) for an :class:`~instaseg.evaluation.summary.EvalReport`."""
    m = report.metrics
    names = report.class_names
    panels: dict[str, Callable[[Any], None]] = {"map_breakdown": lambda ax: plot_map_breakdown(ax, m)}
    kind = "segm" if m["segm"]["AP"] >= 0 or "segm" in report.evals else "bbox"
    panels["per_class_ap"] = lambda ax: plot_per_class_ap(ax, m["per_class"], kind=kind)
    if report.matches is not None:
        mt = report.matches
        panels["iou_distribution"] = lambda ax: plot_iou_distribution(ax, mt["iou"])
        panels["quality_vs_size"] = lambda ax: plot_quality_vs_size(ax, mt["best_iou"], mt["all_gt_area"])
    ev = report.evals.get("segm") or report.evals.get("bbox")
    if ev is not None:
        counts: dict[int, int] = {}
        for a in report.gt["annotations"]:
            if not a.get("iscrowd", 0):
                counts[int(a["category_id"])] = counts.get(int(a["category_id"]), 0) + 1
        panels["pr_curves"] = lambda ax: plot_pr_curves(ax, ev, names, gt_counts=counts)
    if report.confusion is not None:
        matrix, cats = report.confusion
        panels["confusion_matrix"] = lambda ax: plot_confusion(ax, matrix, cats, names)
    if report.errors is not None:
        panels["error_analysis"] = lambda ax: plot_errors(ax, report.errors)
    if m.get("panoptic"):  # a panoptic model's metrics (panoptic_metrics(): rows carry name and kind)
        pan = m["panoptic"]
        panels["pq_summary"] = lambda ax: plot_pq_summary(ax, pan)
        panels["pq_per_class"] = lambda ax: plot_pq_per_class(ax, pan, [])
    if curves:
        panels["training_curves"] = lambda ax: plot_training_curves(ax, curves)
    return panels


def save_dashboard(report: Any, out_dir: str | Path, curves: dict | None = None) -> dict[str, Path]:
    """Save every panel as ``<name>.png`` and all of them together as ``dashboard.png`` in
    ``out_dir``; returns name -> path."""
    out_dir = Path(out_dir)
    panels = dashboard_panels(report, curves)
    paths: dict[str, Path] = {}
    for name, draw in panels.items():
        fig = new_figure(6.4, 4.8 if name not in ("confusion_matrix", "per_class_ap") else 6.4)
        draw(fig.add_subplot(1, 1, 1))
        paths[name] = save_figure(fig, out_dir / f"{name}.png")
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig = new_figure(6.0 * cols, 5.0 * rows)
    for i, draw in enumerate(panels.values()):
        draw(fig.add_subplot(rows, cols, i + 1))
    paths["dashboard"] = save_figure(fig, out_dir / "dashboard.png")
    return paths


# Panoptic panels: they take an evaluate_panoptic() result (pq_compute's keys) and the COCO categories.


def plot_pq_summary(ax: Any, result: dict[str, Any]) -> None:
    """Grouped bars of PQ, SQ, RQ for All, Things and Stuff (each with its class count)."""
    groups = ("All", "Things", "Stuff")
    x = np.arange(len(groups))
    for j, key in enumerate(("pq", "sq", "rq")):
        ax.bar(x + (j - 1) * 0.27, [result[g][key] for g in groups], 0.27, label=key.upper())
    ax.set_xticks(x, [f"{g} (n={result[g]['n']})" for g in groups], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("panoptic quality")
    ax.legend(fontsize=7)


def plot_pq_per_class(
    ax: Any, result: dict[str, Any], categories: list[dict[str, Any]], *, top: int = 30
) -> None:
    """Horizontal bars of per-class PQ (things blue, stuff orange), best first; classes with no TP, FP
    or FN left out; the best and worst ``top`` when there are more."""
    cats = {int(c["id"]): c for c in categories}
    for c, v in result["per_class"].items():  # rows of panoptic_metrics() carry their name and kind
        if "name" in v:
            cats.setdefault(int(c), {"id": int(c), "name": v["name"], "isthing": v.get("isthing", 1)})
    rows = [(int(c), v["pq"]) for c, v in result["per_class"].items() if v["tp"] + v["fp"] + v["fn"]]
    rows.sort(key=lambda r: -r[1])
    many = len(rows) > top
    if many:
        rows = rows[: top // 2] + rows[-(top - top // 2):]
    rows = rows[::-1]
    colors = ["tab:blue" if int(cats.get(c, {}).get("isthing", 1)) else "tab:orange" for c, _ in rows]
    ax.barh(np.arange(len(rows)), [v for _, v in rows], color=colors)
    ax.set_yticks(np.arange(len(rows)), [str(cats.get(c, {}).get("name", c)) for c, _ in rows], fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_title("per-class PQ (blue things, orange stuff)" + (" (best and worst)" if many else ""))
    _empty_note(ax, not rows)


def save_panoptic_dashboard(
    result: dict[str, Any], categories: list[dict[str, Any]], out_dir: str | Path
) -> dict[str, Path]:
    """``pq_summary.png``, ``pq_per_class.png`` and both side by side as ``panoptic_dashboard.png``."""
    out_dir = Path(out_dir)
    panels: dict[str, Callable[[Any], None]] = {
        "pq_summary": lambda ax: plot_pq_summary(ax, result),
        "pq_per_class": lambda ax: plot_pq_per_class(ax, result, categories),
    }
    paths: dict[str, Path] = {}
    for name, draw in panels.items():
        fig = new_figure(6.4, 6.4 if name == "pq_per_class" else 4.8)
        draw(fig.add_subplot(1, 1, 1))
        paths[name] = save_figure(fig, out_dir / f"{name}.png")
    fig = new_figure(12.8, 6.4)
    for i, draw in enumerate(panels.values()):
        draw(fig.add_subplot(1, 2, i + 1))
    paths["panoptic_dashboard"] = save_figure(fig, out_dir / "panoptic_dashboard.png")
    return paths
