"""``instaseg predict`` with a panoptic model: per input image a COCO panoptic PNG (+ one JSON for all),
an overlay with stuff and things coloured, and the semantic map.

Under ``--output DIR``:

- ``panoptic.json`` + ``panoptic/<stem>.png``: COCO panoptic format (segment ids ``R + 256 G + 256^2 B``,
  ``segments_info`` with ``category_id``, ``isthing``, ``area``, ``bbox`` and ``score`` for things),
  written by :func:`instaseg.data.coco_panoptic.write_coco_panoptic`, loadable by panopticapi's
  ``pq_compute`` as a prediction;
- ``semantic/<stem>.png``: the category id of every pixel (things and stuff; 0 = VOID), 8-bit when
  every id is below 256, else 16-bit;
- ``<stem>.jpg``: the overlay (:func:`instaseg.viz.panoptic.overlay_panoptic`), unless ``--no-overlays``.

``image_id`` follows :func:`instaseg.predict.files.image_ids`. Videos are skipped (panoptic prediction
takes still images).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from instaseg.data.coco_panoptic import write_coco_panoptic
from instaseg.data.io import read_image
from instaseg.errors import DataError
from instaseg.predict.files import (
    PredictSummary,
    _unique,
    image_ids,
    is_video,
    list_sources,
    output_file,
)
from instaseg.predict.predictor import Predictor
from instaseg.structures.panoptic import PanopticResult
from instaseg.viz.panoptic import overlay_panoptic

PANOPTIC_JSON = "panoptic.json"


def category_map(result: PanopticResult) -> np.ndarray:
    """int64 (H, W): each pixel's segment category id, 0 on VOID."""
    lut = np.zeros(int(result.id_map.max(initial=0)) + 1, dtype=np.int64)
    for seg in result.segments:
        lut[seg.id] = seg.category_id
    return lut[result.id_map]


def write_semantic_png(result: PanopticResult, path: Path) -> None:
    """The semantic map of ``result`` (category ids, 0 = VOID) as an 8- or 16-bit PNG."""
    cats = category_map(result)
    dtype = np.uint8 if cats.max(initial=0) < 256 else np.uint16
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cats.astype(dtype)):
        raise DataError(path, "cannot write the semantic map PNG")


def run_predict_panoptic(
    predictor: Predictor,
    source: str,
    output: str | Path,
    *,
    overwrite: bool = False,
    save_overlays: bool = True,
    score_thresh: float | None = None,
    log: Callable[[str], None] | None = None,
) -> PredictSummary:
    """Panoptic prediction on every image of ``source`` (see the module docstring for the files).
    ``score_thresh`` overrides the model's fusion ``instances_score_thresh``. Unreadable images and
    videos are reported through ``log`` and skipped."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_dir = Path(output)
    json_path = output_file(out_dir, PANOPTIC_JSON, overwrite=overwrite)
    categories = (predictor.meta.get("panoptic") or {}).get("categories") or []
    names = predictor.category_names()
    shown = categories or [{"id": c, "name": n} for c, n in names.items()]  # overlay colours and names
    sources = list_sources(source)
    summary = PredictSummary(results_path=json_path)
    results: list[tuple[dict[str, Any], PanopticResult]] = []
    used: set[Path] = set()
    ids = image_ids(sources)
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(sources):
        if is_video(path):
            summary.skipped += 1
            log(f"instaseg: skipped {path}: panoptic prediction takes still images, not videos")
            continue
        try:
            image = read_image(path)
        except DataError as exc:
            summary.skipped += 1
            log(f"instaseg: skipped {exc}")
            continue
        result = predictor.predict_panoptic(image, score_thresh=score_thresh)
        stem = _unique(out_dir / f"{path.stem}.jpg", used).stem  # distinct per input
        results.append(({"id": ids[index], "file_name": path.name, "panoptic_file_name": f"{stem}.png"},
                        result))
        write_semantic_png(result, out_dir / "semantic" / f"{stem}.png")
        summary.images += 1
        summary.instances += sum(1 for s in result.segments if s.isthing)
        if save_overlays:
            overlay = overlay_panoptic(image, result, shown)
            cv2.imwrite(str(out_dir / f"{stem}.jpg"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    if summary.images == 0:
        raise DataError(source, f"no image could be read ({summary.skipped} skipped)")
    write_coco_panoptic(results, categories, json_path, overwrite=True)
    return summary
