"""Panoptic quality (PQ = SQ x RQ) as the COCO panoptic definition (Kirillov et al., panopticapi) has it.

Per image, GT and predictions are non-overlapping segment-id maps plus segment lists. A GT and a
predicted segment match when they share the category and IoU > 0.5, where IoU leaves out the
predicted segment's pixels on VOID; so each segment is matched at most once. Unmatched GT are false
negatives (crowd GT never count); an unmatched prediction is a false positive unless more than half of
its area lies on VOID or on crowd regions of its own category. Then per category
``PQ = sum IoU(TP) / (TP + FP/2 + FN/2)``, ``SQ = sum IoU(TP) / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``;
the overall values average the categories that have any TP, FP or FN.

One deliberate generalisation: several crowd segments of one category in an image all count (COCO
panoptic merges them into one, where the two agree).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instaseg.evaluation.matching import group_by_image
from instaseg.structures.masks import decode_rles


@dataclass
class Segment:
    """One segment of an id map: ``id`` (value in the map), ``category_id``, ``iscrowd`` (GT only)."""

    id: int
    category_id: int
    iscrowd: bool = False


@dataclass
class _ClassStat:
    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


def _pair_counts(a: np.ndarray, b: np.ndarray) -> dict[tuple[int, int], int]:
    """Pixel counts of each (a value, b value) pair of two equally shaped int maps."""
    ua, ia = np.unique(a.ravel(), return_inverse=True)
    ub, ib = np.unique(b.ravel(), return_inverse=True)
    counts = np.bincount(ia * len(ub) + ib, minlength=len(ua) * len(ub))
    nz = np.nonzero(counts)[0]
    return {(int(ua[k // len(ub)]), int(ub[k % len(ub)])): int(counts[k]) for k in nz}


@dataclass
class PanopticQuality:
    """Accumulates per-category TP/FP/FN and IoU sums over images (:meth:`update`), then
    :meth:`compute`. ``void_id`` marks VOID pixels in GT id maps (panopticapi uses 0); GT pixels with an
    id that is neither VOID nor a listed segment are plain unlabeled background."""

    void_id: int = 0
    stats: dict[int, _ClassStat] = field(default_factory=lambda: defaultdict(_ClassStat))

    def update(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[Segment],
        pred_ids: np.ndarray,
        pred_segments: Sequence[Segment],
    ) -> None:
        """Add one image: ``gt_ids`` and ``pred_ids`` are int (H, W) segment-id maps."""
        gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f"id maps differ in shape: {gt_ids.shape} vs {pred_ids.shape}")
        gts = {s.id: s for s in gt_segments}
        preds = {s.id: s for s in pred_segments}
        if self.void_id in gts or self.void_id in preds:
            raise ValueError(f"segment id {self.void_id} is reserved for VOID")
        pairs = _pair_counts(gt_ids, pred_ids)
        gt_area: dict[int, int] = defaultdict(int)
        pred_area: dict[int, int] = defaultdict(int)
        for (g, p), n in pairs.items():
            gt_area[g] += n
            pred_area[p] += n
        gt_matched, pred_matched = set(), set()
        for (g, p), inter in pairs.items():
            if g not in gts or p not in preds or gts[g].iscrowd:
                continue
            if gts[g].category_id != preds[p].category_id:
                continue
            union = pred_area[p] + gt_area[g] - inter - pairs.get((self.void_id, p), 0)
            iou = inter / union
            if iou > 0.5:  # > 0.5 makes the match unique: no segment can match twice
                st = self.stats[gts[g].category_id]
                st.tp += 1
                st.iou += iou
                gt_matched.add(g)
                pred_matched.add(p)
        crowd_by_cat: dict[int, list[int]] = defaultdict(list)
        for g, seg in gts.items():
            if seg.iscrowd:
                crowd_by_cat[seg.category_id].append(g)
            elif g not in gt_matched:
                self.stats[seg.category_id].fn += 1
        for p, seg in preds.items():
            if p in pred_matched or pred_area.get(p, 0) == 0:
                continue
            ignored = pairs.get((self.void_id, p), 0)
            ignored += sum(pairs.get((g, p), 0) for g in crowd_by_cat.get(seg.category_id, ()))
            if ignored / pred_area[p] > 0.5:
                continue
            self.stats[seg.category_id].fp += 1

    def compute(self, category_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """``{"PQ", "SQ", "RQ", "n", "per_class": {category_id: {"PQ", "SQ", "RQ", "TP", "FP", "FN"}}}``
        (0-1 scale). ``category_ids`` restricts the categories (default: all seen); ``n`` is the
        number averaged (those with any TP, FP or FN). With none, PQ/SQ/RQ are 0."""
        cats = sorted(self.stats) if category_ids is None else list(category_ids)
        per_class: dict[int, dict[str, float]] = {}
        for c in cats:
            st = self.stats.get(c, _ClassStat())
            if st.tp + st.fp + st.fn == 0:
                continue
            denom = st.tp + 0.5 * st.fp + 0.5 * st.fn
            per_class[c] = {
                "PQ": st.iou / denom,
                "SQ": st.iou / st.tp if st.tp else 0.0,
                "RQ": st.tp / denom,
                "TP": st.tp, "FP": st.fp, "FN": st.fn,
            }
        n = len(per_class)
        mean = {k: (sum(v[k] for v in per_class.values()) / n if n else 0.0) for k in ("PQ", "SQ", "RQ")}
        return {**mean, "n": n, "per_class": per_class}


def instances_to_segments(
    masks: np.ndarray,
    category_ids: Sequence[int],
    *,
    scores: Sequence[float] | None = None,
    iscrowd: Sequence[bool] | None = None,
    overlap_threshold: float = 0.5,
) -> tuple[np.ndarray, list[Segment]]:
    """Turn possibly overlapping instance masks bool (N, H, W) into a non-overlapping id map int64
    (H, W) (0 = no segment) and its segments, ids 1..N by input index.

    Predictions (``scores`` given) are painted best score first, each only on still-free pixels, and
    dropped when less than ``overlap_threshold`` of the mask stays visible (Detectron2's panoptic
    fusion). GT (no ``scores``) is painted largest first so smaller objects on top stay visible.
    """
    masks = np.asarray(masks, dtype=bool)
    n = len(masks)
    ids = np.zeros(masks.shape[1:], dtype=np.int64)
    if n == 0:
        return ids, []
    if scores is not None:
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        segments: list[Segment] = []
        for i in order:
            area = int(masks[i].sum())
            free = masks[i] & (ids == 0)
            if area == 0 or free.sum() < overlap_threshold * area:
                continue
            ids[free] = i + 1
            segments.append(Segment(int(i + 1), int(category_ids[i])))
        return ids, segments
    order = np.argsort(-masks.reshape(n, -1).sum(1), kind="stable")
    for i in order:  # largest first, so a smaller object overwrites it
        ids[masks[i]] = i + 1
    crowd = [False] * n if iscrowd is None else [bool(c) for c in iscrowd]
    present = set(np.unique(ids).tolist())
    segs = [Segment(i + 1, int(category_ids[i]), crowd[i]) for i in range(n) if i + 1 in present]
    return ids, segs


def coco_panoptic_quality(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    *,
    score_thresh: float = 0.5,
    overlap_threshold: float = 0.5,
) -> dict[str, Any]:
    """PQ of COCO instance results against COCO instance GT (things only, no VOID: unlabeled pixels are
    background, crowd GT are crowd regions). Detections below ``score_thresh`` are dropped, the
    rest fused into non-overlapping segments by :func:`instances_to_segments`. Works image by image,
    so memory holds one image's masks at a time. Returns :meth:`PanopticQuality.compute`'s dict plus
    ``pixel_accuracy``: the fraction of pixels (over all images, crowd pixels left out) whose class
    in the fused prediction map equals the GT class map (0 = background on both sides)."""
    pq = PanopticQuality(void_id=-1)
    correct = total = 0
    dets = [r for r in results if r["score"] >= score_thresh and "segmentation" in r]
    for g in group_by_image(gt, dets, "segm", max_dets=len(dets) or 1):
        gt_masks = decode_rles(g.gt_geoms, g.height, g.width)
        gt_ids, gt_segs = instances_to_segments(gt_masks, g.gt_cats, iscrowd=g.gt_crowd)
        dt_masks = decode_rles(g.dt_geoms, g.height, g.width)
        pred_ids, pred_segs = instances_to_segments(
            dt_masks, g.dt_cats, scores=g.dt_scores, overlap_threshold=overlap_threshold
        )
        pq.update(gt_ids, gt_segs, pred_ids, pred_segs)
        gt_sem, crowd = _class_map(gt_ids, gt_segs)
        pred_sem, _ = _class_map(pred_ids, pred_segs)
        correct += int(((gt_sem == pred_sem) & ~crowd).sum())
        total += int((~crowd).sum())
    out = pq.compute(sorted(int(c["id"]) for c in gt["categories"]))
    out["pixel_accuracy"] = correct / total if total else -1.0
    return out


def _class_map(ids: np.ndarray, segments: Sequence[Segment]) -> tuple[np.ndarray, np.ndarray]:
    """Category map (H, W) of a segment-id map (0 where no segment) and the mask of crowd pixels."""
    lut = np.zeros(int(ids.max()) + 1 if ids.size else 1, dtype=np.int64)
    crowd_lut = np.zeros_like(lut, dtype=bool)
    for seg in segments:
        lut[seg.id] = seg.category_id
        crowd_lut[seg.id] = seg.iscrowd
    return lut[ids], crowd_lut[ids]
