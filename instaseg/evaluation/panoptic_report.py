"""``instaseg evaluate --panoptic-gt JSON:PNG_DIR[:IMAGE_DIR] --panoptic-pred JSON:PNG_DIR`` as functions:
PQ of two COCO panoptic files (:func:`~instaseg.evaluation.panoptic.pq_from_files`), the metrics JSON
and the report folder (``metrics.json``, PQ dashboard, GT-beside-prediction overlays, ``report.html``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data.coco import guess_image_dir
from instaseg.data.coco_panoptic import CocoPanopticFile
from instaseg.data.io import read_image
from instaseg.errors import ConfigError, InstasegError
from instaseg.evaluation.panoptic import format_pq_table, pq_from_files
from instaseg.evaluation.report import _table, panoptic_section, write_json, write_page
from instaseg.structures.panoptic import PanopticResult
from instaseg.viz.dashboard import save_panoptic_dashboard
from instaseg.viz.draw import make_grid
from instaseg.viz.figures import save_image
from instaseg.viz.panoptic import colorize_panoptic, overlay_panoptic


def parse_panoptic_arg(text: str, option: str) -> tuple[Path, Path | None, Path | None]:
    """``JSON[:PNG_DIR[:IMAGE_DIR]]`` -> ``(json, png_dir or None, image_dir or None)``."""
    cut = text.lower().find(".json")
    if cut < 0 or (len(text) > cut + 5 and text[cut + 5] != ":"):
        raise ConfigError(f"{option} {text!r}: expected PANOPTIC.json[:PNG_DIR[:IMAGE_DIR]]")
    png_dir, _, image_dir = text[cut + 6:].partition(":")
    return Path(text[: cut + 5]), Path(png_dir) if png_dir else None, Path(image_dir) if image_dir else None


def panoptic_metrics(result: dict[str, Any], categories: list[dict[str, Any]]) -> dict[str, Any]:
    """An :func:`~instaseg.evaluation.panoptic.evaluate_panoptic` result ready for JSON: the same keys,
    per-class rows keyed by category id with its ``name`` and ``isthing`` added."""
    cats = {int(c["id"]): c for c in categories}
    per_class = {
        str(c): {"name": str(cats[int(c)].get("name", c)), "isthing": int(cats[int(c)]["isthing"]), **v}
        for c, v in result["per_class"].items()
    }
    return {**{g: dict(result[g]) for g in ("All", "Things", "Stuff")}, "per_class": per_class}


@dataclass
class PanopticEvaluation:
    """What :func:`evaluate_panoptic_files` computed, and where it came from (for the report)."""

    result: dict[str, Any]
    categories: list[dict[str, Any]]
    gt: CocoPanopticFile
    pred: CocoPanopticFile
    image_dir: Path | None
    notes: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, Any]:
        return {"panoptic": panoptic_metrics(self.result, self.categories)}

    def table(self) -> str:
        return format_pq_table(self.result, self.categories)


def evaluate_panoptic_files(gt_arg: str, pred_arg: str) -> PanopticEvaluation:
    """PQ of ``--panoptic-pred`` against ``--panoptic-gt`` (each ``JSON[:PNG_DIR]``; the GT may name
    its ``IMAGE_DIR`` third, else it is guessed, for the overlays only)."""
    gt_json, gt_png, image_dir = parse_panoptic_arg(gt_arg, "--panoptic-gt")
    pred_json, pred_png, _ = parse_panoptic_arg(pred_arg, "--panoptic-pred")
    result = pq_from_files(gt_json, gt_png, pred_json, pred_png)
    gt = CocoPanopticFile(gt_json, gt_png)
    pred = CocoPanopticFile(pred_json, pred_png, categories=gt.categories)
    notes = []
    if image_dir is None:
        image_dir = guess_image_dir(gt_json, [e[0]["file_name"] for e in gt.entries])
    if not image_dir.is_dir() or not gt.entries or not (image_dir / gt.entries[0][0]["file_name"]).is_file():
        notes.append("overlays without the images (name them: --panoptic-gt JSON:PNG_DIR:IMAGE_DIR)")
        image_dir = None
    return PanopticEvaluation(result, gt.categories, gt, pred, image_dir, notes)


def _picture(image: np.ndarray | None, res: PanopticResult, categories: list[dict[str, Any]]) -> np.ndarray:
    if image is None or image.shape[:2] != res.image_size:
        return colorize_panoptic(res, categories)
    return overlay_panoptic(image, res, categories)


def save_panoptic_samples(ev: PanopticEvaluation, out_dir: Path, num: int) -> dict[str, Path]:
    """``sample_NN.png``: GT overlay beside the prediction overlay for the first ``num`` GT images."""
    by_id = {info["id"]: k for k, (info, _, _) in enumerate(ev.pred.entries)}
    paths: dict[str, Path] = {}
    for i, (info, _, _) in enumerate(ev.gt.entries[:num]):
        image = None
        if ev.image_dir is not None:
            try:
                image = read_image(ev.image_dir / info["file_name"])
            except InstasegError:
                image = None
        gt = _picture(image, ev.gt.load(i), ev.categories)
        pred = _picture(image, ev.pred.load(by_id[info["id"]]), ev.categories)
        paths[f"sample_{i}_gt_vs_pred_image_{info['id']}"] = save_image(
            make_grid([gt, pred], cols=2, pad=4), out_dir / f"sample_{i:02d}.png"
        )
    return paths


def write_panoptic_report(
    out_dir: str | Path,
    ev: PanopticEvaluation,
    *,
    title: str = "instaseg panoptic evaluation",
    figures: bool = True,
    num_samples: int = 4,
) -> dict[str, Path]:
    """``metrics.json``, the PQ dashboard and sample overlays (with ``figures``) and ``report.html``
    in ``out_dir``; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"metrics": write_json(out / "metrics.json", ev.metrics)}
    images: dict[str, Path] = {}
    if figures:
        images.update(save_panoptic_dashboard(ev.result, ev.categories, out / "figures"))
        if num_samples > 0:
            images.update(save_panoptic_samples(ev, out / "figures", num_samples))
    written.update(images)
    files = [["ground truth", str(ev.gt.json_path), str(ev.gt.png_dir)],
             ["prediction", str(ev.pred.json_path), str(ev.pred.png_dir)]]
    parts = [f"<h1>{html.escape(title)}</h1>", *(f"<p>{html.escape(n)}</p>" for n in ev.notes),
             _table(["", "JSON", "PNG folder"], files), panoptic_section(ev.metrics["panoptic"])]
    written["html"] = write_page(out / "report.html", title, parts, images)
    return written
