"""Pure metric functions beyond COCO AP: IoU of matched pairs, pixel accuracy, semantic maps, the
class confusion matrix and matched-IoU statistics over a whole results set (all on RLE)."""

from __future__ import annotations

from typing import Any

import numpy as np

from instaseg.evaluation.matching import greedy_match, group_by_image, iou_matrix


def paired_mask_iou(masks1: np.ndarray, masks2: np.ndarray) -> np.ndarray:
    """IoU of each pair ``(masks1[i], masks2[i])``: bool (N, H, W) and (N, H, W) -> float64 (N,).
    Two empty masks have IoU 0."""
    a = np.asarray(masks1, dtype=bool).reshape(len(masks1), -1)
    b = np.asarray(masks2, dtype=bool).reshape(len(masks2), -1)
    if a.shape != b.shape:
        raise ValueError(f"mask stacks differ in shape: {a.shape} vs {b.shape}")
    inter = (a & b).sum(1).astype(np.float64)
    union = (a | b).sum(1).astype(np.float64)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def pixel_accuracy(pred: np.ndarray, gt: np.ndarray, ignore_index: int | None = None) -> float:
    """Fraction of pixels whose class in ``pred`` equals ``gt`` (both int (H, W) class maps, e.g. from
    :func:`instaseg.structures.masks.semantic_map`); pixels where ``gt == ignore_index`` are left out.
    NaN if none remain."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"class maps differ in shape: {pred.shape} vs {gt.shape}")
    valid = np.ones(gt.shape, dtype=bool) if ignore_index is None else gt != ignore_index
    total = int(valid.sum())
    return float(((pred == gt) & valid).sum() / total) if total else float("nan")


def match_statistics(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    *,
    iou_type: str = "segm",
    iou_threshold: float = 0.5,
    score_thresh: float = 0.0,
) -> dict[str, np.ndarray]:
    """Class-aware greedy matching (COCO style, one threshold) over all images.

    Returns arrays over the M matched pairs: ``iou`` (M,), ``gt_area`` (M,), ``category_id`` (M,);
    and over the N non-crowd GT: ``best_iou`` (N,) = best same-class IoU with any detection (0 if
    none, the "mask quality" of each object), ``all_gt_area`` (N,), ``all_gt_category`` (N,).
    """
    dets = [r for r in results if r["score"] >= score_thresh]
    iou, area, cat, best, all_area, all_cat = [], [], [], [], [], []
    for g in group_by_image(gt, dets, iou_type):
        ious = iou_matrix(g.dt_geoms, g.gt_geoms, g.gt_crowd)
        dt_match, _ = greedy_match(ious, g.dt_cats, g.gt_cats, g.gt_crowd, iou_threshold)
        for d, m in enumerate(dt_match):
            if m >= 0:
                iou.append(ious[d, m])
                area.append(g.gt_area[m])
                cat.append(g.gt_cats[m])
        same = g.dt_cats[:, None] == g.gt_cats[None, :]
        best_iou = np.where(same, ious, 0.0).max(axis=0) if len(g.dt_cats) else np.zeros(len(g.gt_cats))
        keep = ~g.gt_crowd
        best.extend(best_iou[keep])
        all_area.extend(g.gt_area[keep])
        all_cat.extend(g.gt_cats[keep])
    return {
        "iou": np.asarray(iou, dtype=np.float64),
        "gt_area": np.asarray(area, dtype=np.float64),
        "category_id": np.asarray(cat, dtype=np.int64),
        "best_iou": np.asarray(best, dtype=np.float64),
        "all_gt_area": np.asarray(all_area, dtype=np.float64),
        "all_gt_category": np.asarray(all_cat, dtype=np.int64),
    }


def confusion_matrix(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    *,
    iou_type: str = "segm",
    iou_threshold: float = 0.5,
    score_thresh: float = 0.5,
) -> tuple[np.ndarray, list[int]]:
    """Class confusion of detections with ``score >= score_thresh`` matched to non-crowd GT by IoU
    alone (class-agnostic greedy matching at ``iou_threshold``).

    Returns ``(matrix, cat_ids)``: int64 (C+1, C+1) with rows = GT class, columns = predicted class,
    in ``cat_ids`` order (the GT categories sorted), and index C = background: row C counts
    unmatched detections (false positives), column C unmatched GT (missed objects).
    """
    cat_ids = sorted(int(c["id"]) for c in gt["categories"])
    index = {c: i for i, c in enumerate(cat_ids)}
    bg = len(cat_ids)
    matrix = np.zeros((bg + 1, bg + 1), dtype=np.int64)
    dets = [r for r in results if r["score"] >= score_thresh]
    for g in group_by_image(gt, dets, iou_type):
        ious = iou_matrix(g.dt_geoms, g.gt_geoms, g.gt_crowd)
        dt_match, gt_match = greedy_match(
            ious, g.dt_cats, g.gt_cats, g.gt_crowd, iou_threshold, class_aware=False
        )
        for d, m in enumerate(dt_match):
            col = index.get(int(g.dt_cats[d]), bg)
            if m >= 0:
                matrix[index[int(g.gt_cats[m])], col] += 1
            elif m == -1:
                matrix[bg, col] += 1
        for j, m in enumerate(gt_match):
            if m < 0 and not g.gt_crowd[j]:
                matrix[index[int(g.gt_cats[j])], bg] += 1
    return matrix, cat_ids
