"""The ``--output DIR`` report folder: ``metrics.json``, ``analysis.json``, the dashboard PNGs, sample
figures (ground truth beside predictions) and one self-contained ``report.html`` (PNGs embedded as
base64, no external files)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instaseg.evaluation.coco import STAT_NAMES
from instaseg.evaluation.errors import ERROR_NAMES, ERROR_TYPES
from instaseg.structures.boxes import masks_to_boxes, xywh_to_xyxy
from instaseg.structures.instances import Instances
from instaseg.structures.masks import rle_boxes, to_rle
from instaseg.viz.dashboard import read_training_history, save_dashboard
from instaseg.viz.figures import gt_vs_pred, sample_grid, save_figure, save_image, three_panel


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(data), indent=2))
    return path


def predictions_by_image(results: list[dict[str, Any]], score_thresh: float) -> dict[int, list]:
    out: dict[int, list] = {}
    for r in results:
        if r["score"] >= score_thresh and "segmentation" in r:
            out.setdefault(int(r["image_id"]), []).append(r)
    return out


def instances_from_results(entries: list[dict[str, Any]], shape: tuple[int, int]) -> Instances:
    """:class:`Instances` (labels = category ids, masks as RLEs) of one image's COCO results entries."""
    if not entries:
        return Instances.empty(shape)
    rles = [to_rle(e["segmentation"], *shape) for e in entries]
    return Instances(
        shape,
        boxes=xywh_to_xyxy(torch.as_tensor(rle_boxes(rles), dtype=torch.float32)),
        labels=torch.tensor([int(e["category_id"]) for e in entries]),
        scores=torch.tensor([float(e["score"]) for e in entries]),
        rles=rles,
    )


def instances_from_record(rec: Any, category_ids: list[int]) -> Instances:
    """Ground-truth :class:`Instances` (labels = category ids, scores 1) of a dataset Record."""
    shape = rec.image.shape[:2]
    masks = np.asarray(rec.masks, bool).reshape(-1, *shape)
    labels = torch.tensor([category_ids[int(lb)] for lb in rec.labels], dtype=torch.int64)
    return Instances.from_dense(shape, boxes=masks_to_boxes(torch.from_numpy(masks)), labels=labels,
                                scores=torch.ones(len(labels)), masks=masks)


def save_sample_figures(
    dataset: Any,
    results: list[dict[str, Any]] | None,
    class_names: dict[int, str],
    out_dir: Path,
    *,
    num: int = 6,
    score_thresh: float = 0.5,
) -> dict[str, Path]:
    """GT-vs-prediction figures (or GT three-panel figures without results) for the first ``num``
    images, and a grid of them; returns name -> path."""
    by_image = predictions_by_image(results, score_thresh) if results is not None else {}
    paths: dict[str, Path] = {}
    grid = []
    for i in range(min(num, len(dataset))):
        rec = dataset.load_record(i)
        gt = instances_from_record(rec, list(dataset.category_ids))
        caption = f"image {rec.image_id}"
        if results is None:
            fig = three_panel(rec.image, gt, class_names, title=caption, show_scores=False)
            grid.append((rec.image, gt, caption))
        else:
            pred = instances_from_results(by_image.get(int(rec.image_id), []), rec.image.shape[:2])
            fig = gt_vs_pred(
                rec.image,
                gt,
                pred,
                class_names,
                title=f"{caption} (predictions with score >= {score_thresh})",
            )
            grid.append((rec.image, pred, caption))
        paths[f"sample_{i}"] = save_figure(fig, out_dir / f"sample_{i:02d}.png")
    if grid:
        grid_image = sample_grid(grid, class_names, show_scores=results is not None)
        paths["sample_grid"] = save_image(grid_image, out_dir / "sample_grid.png")
    return paths


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "&ndash;" if v < 0 else f"{v:.3f}"
    return html.escape(str(v))


def write_html(
    path: Path,
    title: str,
    metrics: dict[str, Any],
    images: dict[str, Path],
    errors: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> Path:
    """One self-contained HTML page: metric tables and every image embedded as base64 PNG."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for note in notes or []:
        parts.append(f"<p>{html.escape(note)}</p>")
    rows = [[kind] + [metrics[kind][s] for s in STAT_NAMES] for kind in ("segm", "bbox") if kind in metrics]
    parts.append("<h2>COCO metrics (0-1)</h2>" + _table(["", *STAT_NAMES], rows))
    pq = metrics.get("pq") or {}
    if pq.get("n"):
        parts.append(
            "<h2>Panoptic quality</h2>"
            + f"<p>Detections with score &ge; {pq.get('score_thresh', 0.5)} fused into one map; "
            + f"semantic pixel accuracy {pq.get('pixel_accuracy', -1.0):.3f}.</p>"
            + _table(
                ["", "PQ", "SQ", "RQ", "TP", "FP", "FN"],
                [["all", pq["PQ"], pq["SQ"], pq["RQ"], "", "", ""]]
                + [
                    [n, v["PQ"], v["SQ"], v["RQ"], v["TP"], v["FP"], v["FN"]]
                    for n, v in pq["per_class"].items()
                ],
            )
        )
    if errors:

        parts.append(
            f"<h2>Error analysis ({errors.get('iou_type', '')}, AP50 {errors['AP50']:.3f})</h2>"
            + _table(
                ["error", "dAP50", "count"],
                [[ERROR_NAMES[t], errors["dAP"][t], errors["counts"][t]] for t in ERROR_TYPES],
            )
        )
    per_class = metrics.get("per_class") or {}
    rows = [
        [
            n,
            v.get("category_id", ""),
            v.get("segm", {}).get("AP", -1.0),
            v.get("segm", {}).get("AP50", -1.0),
            v.get("bbox", {}).get("AP", -1.0),
            v.get("bbox", {}).get("AP50", -1.0),
        ]
        for n, v in per_class.items()
    ]
    parts.append(
        "<h2>Per class</h2>" + _table(["class", "id", "mask AP", "mask AP50", "box AP", "box AP50"], rows)
    )
    if metrics.get("panoptic"):
        parts.append(panoptic_section(metrics["panoptic"]))
    return write_page(path, title, parts, images)


def panoptic_section(pan: dict[str, Any]) -> str:
    """HTML tables of a panoptic metrics dict (:func:`~instaseg.evaluation.panoptic_report.panoptic_metrics`):
    PQ/SQ/RQ for All/Things/Stuff, then per class (those with any TP, FP or FN) with TP/FP/FN."""
    rows = [[g, pan[g]["pq"], pan[g]["sq"], pan[g]["rq"], pan[g]["n"]] for g in ("All", "Things", "Stuff")]
    per = [
        [v.get("name", c), "thing" if v.get("isthing") else "stuff", v["pq"], v["sq"], v["rq"],
         v["tp"], v["fp"], v["fn"]]
        for c, v in pan.get("per_class", {}).items() if v["tp"] + v["fp"] + v["fn"]
    ]
    return (
        "<h2>Panoptic quality (0-1, panopticapi's rules)</h2>"
        + _table(["", "PQ", "SQ", "RQ", "classes"], rows)
        + "<h3>Per class</h3>"
        + _table(["class", "kind", "PQ", "SQ", "RQ", "TP", "FP", "FN"], per)
    )


def write_page(path: Path, title: str, parts: list[str], images: dict[str, Path]) -> Path:
    """Write one self-contained HTML page: the ``parts`` (HTML), then every image embedded as base64."""
    parts = list(parts)
    for name, p in images.items():
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(name.replace('_', ' '))}</figcaption></figure>"
        )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "img{max-width:100%}figure{margin:1em 0}"
    )
    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path


def write_report(
    out_dir: str | Path,
    report: Any,
    *,
    dataset: Any = None,
    run_dir: str | Path | None = None,
    title: str = "instaseg evaluation",
    num_samples: int = 6,
    notes: list[str] | None = None,
    figures: bool = True,
) -> dict[str, Path]:
    """Write the whole report folder for an :class:`~instaseg.evaluation.summary.EvalReport`; returns
    name -> path of what was written. Without ``figures`` only the JSON files and a picture-less HTML
    page are written."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"metrics": write_json(out / "metrics.json", report.metrics)}
    analysis: dict[str, Any] = {"errors": report.errors}
    if report.confusion is not None:
        matrix, cats = report.confusion
        analysis["confusion"] = {
            "category_ids": cats,
            "matrix": matrix,
            "note": "rows = GT, columns = predicted, last = background",
        }
    if report.matches is not None:
        ious = report.matches["iou"]
        analysis["matched_iou"] = {"count": len(ious), "mean": float(ious.mean()) if len(ious) else None}
    written["analysis"] = write_json(out / "analysis.json", analysis)
    images: dict[str, Path] = {}
    if figures:
        curves = read_training_history(run_dir) if run_dir is not None else None
        images = save_dashboard(report, out / "figures", curves)
        if dataset is not None and num_samples > 0:
            images.update(
                save_sample_figures(
                    dataset, report.results, report.class_names, out / "figures", num=num_samples
                )
            )
    written.update(images)
    written["html"] = write_html(out / "report.html", title, report.metrics, images, report.errors, notes)
    return written
