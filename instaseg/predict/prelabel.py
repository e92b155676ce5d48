"""Pre-labels: a model's predictions as editable annotations for the tools annotators use.

Formats (``write_prelabels``): ``labelme`` (one JSON per image beside nothing else: ``imagePath``
relative to the output folder), ``coco`` (one instances JSON, polygon segmentations), ``labelstudio``
(a tasks JSON with ``predictions`` of ``polygonlabels`` in percent coordinates) and ``cvat`` (CVAT's
"COCO 1.0" import: ``annotations/instances_default.json``). Corrected labelme and COCO files load back
with ``instaseg data convert`` / ``coco:FILE``. Polygons are the outer contours of each mask.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.errors import DataError
from instaseg.fileio import atomic_open

FORMATS = ("labelme", "coco", "labelstudio", "cvat")


@dataclass
class Prelabel:
    """One image's predictions: masks bool (K, H, W), class names (K,), scores (K,)."""

    path: Path
    height: int
    width: int
    masks: np.ndarray
    names: list[str]
    scores: list[float]


def mask_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[float]]:
    """Outer contours of a bool (H, W) mask as flat ``[x1, y1, x2, y2, ...]`` pixel-corner polygons."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= min_points]


def _rel(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()


def labelme_files(items: list[Prelabel], folder: Path) -> dict[Path, dict[str, Any]]:
    """``{json path: labelme dict}``, one per image, named after the image. A mask in several pieces
    (an occluded person) becomes one polygon a piece, all with the instance's ``group_id``: labelme's
    way of saying they are one instance, so they load back as one."""
    out = {}
    for it in items:
        shapes = []
        for k, (m, name, score) in enumerate(zip(it.masks, it.names, it.scores, strict=True)):
            polys = mask_polygons(m)
            gid = k if len(polys) > 1 else None
            shapes += [{"label": name, "points": np.reshape(poly, (-1, 2)).tolist(), "group_id": gid,
                        "shape_type": "polygon", "flags": {}, "description": f"score {score:.3f}"}
                       for poly in polys]
        out[folder / f"{it.path.stem}.json"] = {
            "version": "5.0.1", "flags": {}, "shapes": shapes, "imagePath": _rel(it.path, folder),
            "imageData": None, "imageHeight": it.height, "imageWidth": it.width}
    return out


def coco_dict(items: list[Prelabel], folder: Path, class_names: list[str]) -> dict[str, Any]:
    """A COCO instances dict (polygons, category ids 1..C in ``class_names[1:]`` order)."""
    cat_of = {n: i for i, n in enumerate(class_names) if i}
    images, anns = [], []
    for k, it in enumerate(items, start=1):
        images.append({"id": k, "file_name": _rel(it.path, folder), "height": it.height, "width": it.width})
        for m, name, score in zip(it.masks, it.names, it.scores, strict=True):
            polys = mask_polygons(m)
            if not polys:
                continue
            ys, xs = np.nonzero(m)
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": cat_of[name],
                         "segmentation": polys, "area": float(m.sum()), "iscrowd": 0,
                         "score": round(float(score), 4),
                         "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                  float(ys.max() - ys.min() + 1)]})
    cats = [{"id": i, "name": n, "supercategory": ""} for n, i in cat_of.items()]
    return {"images": images, "annotations": anns, "categories": cats}


def labelstudio_tasks(items: list[Prelabel], folder: Path, model_version: str) -> list[dict[str, Any]]:
    """Label Studio tasks with pre-annotations (``from_name="label"``, ``to_name="image"``)."""
    tasks = []
    for it in items:
        result = []
        for m, name, score in zip(it.masks, it.names, it.scores, strict=True):
            for poly in mask_polygons(m):
                pts = np.reshape(poly, (-1, 2)) / np.array([it.width, it.height]) * 100.0
                result.append({"id": f"r{len(result)}", "type": "polygonlabels", "from_name": "label",
                               "to_name": "image", "original_width": it.width, "original_height": it.height,
                               "image_rotation": 0, "score": round(float(score), 4),
                               "value": {"points": pts.round(3).tolist(), "polygonlabels": [name]}})
        score = float(np.mean(it.scores)) if it.scores else 0.0
        tasks.append({"data": {"image": _rel(it.path, folder)},
                      "predictions": [{"model_version": model_version, "score": round(score, 4),
                                       "result": result}]})
    return tasks


def write_prelabels(items: list[Prelabel], folder: Path, fmt: str, class_names: list[str], *,
                    model_version: str = "instaseg", force: bool = False) -> list[Path]:
    """Write ``items`` to ``folder`` in ``fmt``; refuses (DataError, nothing written) to replace an
    existing file unless ``force``. Returns the files written."""
    if fmt not in FORMATS:
        raise DataError(None, f"unknown pre-label format {fmt!r} (use one of {', '.join(FORMATS)})")
    files: dict[Path, Any]
    if fmt == "labelme":
        files = dict(labelme_files(items, folder))
    elif fmt == "coco":
        files = {folder / "prelabels_coco.json": coco_dict(items, folder, class_names)}
    elif fmt == "cvat":
        sub = folder / "annotations"
        files = {sub / "instances_default.json": coco_dict(items, sub, class_names)}
    else:
        files = {folder / "labelstudio_tasks.json": labelstudio_tasks(items, folder, model_version)}
    clash = [p for p in files if p.exists()]
    if clash and not force:
        raise DataError(clash[0], "already exists (pass --overwrite to replace it)")
    for p, data in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(p, "w") as fh:
            json.dump(data, fh)
    return list(files)
