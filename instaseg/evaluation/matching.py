"""Per-image grouping of COCO ground truth and results, and greedy detection-to-GT matching on RLE.

Shared by the matched-IoU metrics, the confusion matrix and the TIDE-style error analysis. Geometry is
kept as COCO RLE (segm) or XYWH boxes (bbox), so IoU is computed without decoding masks. Detections are
completed exactly as for the COCO metrics (:func:`instaseg.evaluation.coco.load_detections`): a
mask-only result gets its mask's box, a box-only result its box's polygon as mask.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from instaseg.evaluation.coco import load_detections
from instaseg.structures.masks import rle_areas, rle_iou, to_rle, xywh_iou


@dataclass
class ImageGroup:
    """One image's GT and detections. ``gt_geoms`` / ``dt_geoms``: compressed RLE dicts for segm, or
    (N, 4) XYWH arrays for bbox; ``gt_cats`` (N,), ``gt_crowd`` (N,) bool, ``gt_area`` (N,);
    ``dt_cats`` (K,), ``dt_scores`` (K,) sorted descending, ``dt_area`` (K,)."""

    image_id: int
    height: int
    width: int
    gt_geoms: Any
    gt_cats: np.ndarray
    gt_crowd: np.ndarray
    gt_area: np.ndarray
    dt_geoms: Any
    dt_cats: np.ndarray
    dt_scores: np.ndarray
    dt_area: np.ndarray


def group_by_image(
    gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str = "segm", max_dets: int = 100
) -> Iterator[ImageGroup]:
    """Yield an :class:`ImageGroup` per GT image (images without results get empty detections); at
    most ``max_dets`` highest-scoring detections per image are kept, as COCO does. Results on images
    that are not in ``gt`` are left out."""
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    gts: dict[int, list] = defaultdict(list)
    for ann in gt["annotations"]:
        gts[int(ann["image_id"])].append(ann)
    known = {int(im["id"]) for im in gt["images"]}
    results = [r for r in results if int(r["image_id"]) in known]
    dts: dict[int, list] = defaultdict(list)
    for det in load_detections(gt, results, with_masks=iou_type == "segm"):
        dts[int(det["image_id"])].append(det)
    for im in gt["images"]:
        image_id, h, w = int(im["id"]), int(im["height"]), int(im["width"])
        anns = gts.get(image_id, [])
        dets = sorted(dts.get(image_id, []), key=lambda d: -d["score"])[:max_dets]
        if iou_type == "segm":
            gt_geoms = [to_rle(a["segmentation"], h, w) for a in anns]
            dt_geoms = [d["segmentation"] for d in dets]
            gt_area, dt_area = rle_areas(gt_geoms), rle_areas(dt_geoms)
        else:
            gt_geoms = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            dt_geoms = np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
            gt_area, dt_area = gt_geoms[:, 2] * gt_geoms[:, 3], dt_geoms[:, 2] * dt_geoms[:, 3]
        yield ImageGroup(
            image_id=image_id, height=h, width=w,
            gt_geoms=gt_geoms,
            gt_cats=np.array([int(a["category_id"]) for a in anns], dtype=np.int64),
            gt_crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
            gt_area=gt_area,
            dt_geoms=dt_geoms,
            dt_cats=np.array([int(d["category_id"]) for d in dets], dtype=np.int64),
            dt_scores=np.array([float(d["score"]) for d in dets], dtype=np.float64),
            dt_area=dt_area,
        )


def iou_matrix(dt_geoms: Any, gt_geoms: Any, gt_crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU (K detections, N GT) as float64; for crowd GT (``gt_crowd``) the value is
    intersection / detection area, as COCO defines it for crowd regions."""
    if isinstance(dt_geoms, np.ndarray) or isinstance(gt_geoms, np.ndarray):
        return xywh_iou(dt_geoms, gt_geoms, gt_crowd)
    return rle_iou(dt_geoms, gt_geoms, gt_crowd)


def greedy_match(
    ious: np.ndarray, dt_cats: np.ndarray, gt_cats: np.ndarray, gt_crowd: np.ndarray, thr: float = 0.5,
    *, class_aware: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Match detections (rows of ``ious``, in descending score order) to GT like COCOeval at one
    threshold: each takes the unmatched non-crowd GT of its class with the highest IoU >= ``thr``;
    otherwise a crowd GT of its class with IoU >= ``thr`` makes it ignored.

    Returns ``dt_match`` (K,) = matched GT index, -1 unmatched, -2 ignored (on crowd), and
    ``gt_match`` (N,) = matching detection index or -1. With ``class_aware=False`` classes are ignored.
    """
    k, n = ious.shape
    dt_match = np.full(k, -1, dtype=np.int64)
    gt_match = np.full(n, -1, dtype=np.int64)
    for d in range(k):
        ok = (gt_cats == dt_cats[d]) if class_aware else np.ones(n, dtype=bool)
        cand = np.where(ok & ~gt_crowd & (gt_match < 0), ious[d], -1.0)
        if n and cand.max() >= thr:
            g = int(cand.argmax())
            dt_match[d], gt_match[g] = g, d
            continue
        crowd = np.where(ok & gt_crowd, ious[d], -1.0)
        if n and crowd.max() >= thr:
            dt_match[d] = -2
    return dt_match, gt_match
