"""TIDE-style error analysis (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection
Errors", ECCV 2020): how much AP50 each kind of error costs.

Every false positive at the foreground threshold ``pos`` (0.5) gets one type, tested in this order
(IoU with GT of the same class is "cls IoU", with other classes "other IoU"):

- ``loc``: bg <= max cls IoU <= pos: right class, poorly localised;
- ``cls``: max other IoU >= pos: well localised, wrong class;
- ``dupe``: cls IoU >= pos with a GT already taken by a higher-scoring detection;
- ``bkg``: IoU <= bg (0.1) with every GT: detected background;
- ``both``: everything else (wrong class and poorly localised);
- ``miss``: GT that no detection matched and no cls/loc error points at.

The cost of a type is dAP = AP50(with that type fixed) - AP50, clipped at 0 as TIDE does: cls/loc
errors become true positives on their GT (only the best-scoring one per GT, and only if the GT was not
matched; others are removed), dupe/bkg/both detections are removed, and missed GT are taken out of the
GT count. AP50 is COCO's 101-point interpolated AP averaged over the classes with detections or GT.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from instaseg.evaluation.matching import greedy_match, group_by_image, iou_matrix

ERROR_TYPES = ("cls", "loc", "both", "dupe", "bkg", "miss")
ERROR_NAMES = {
    "cls": "Classification", "loc": "Localisation", "both": "Both cls+loc",
    "dupe": "Duplicate", "bkg": "Background", "miss": "Missed",
}


def average_precision(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> float:
    """COCO 101-point interpolated AP of one class: detections' ``scores`` (K,) and ``is_tp`` (K,)
    bool, ``num_gt`` positives. 0 when ``num_gt`` is 0."""
    if num_gt <= 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    tp = np.asarray(is_tp, dtype=bool)[order]
    if tp.size == 0:
        return 0.0
    tps = np.cumsum(tp)
    precision = tps / np.arange(1, tp.size + 1)
    recall = tps / num_gt
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # make it monotone (COCO's envelope)
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    sampled = np.where(idx < tp.size, precision[np.minimum(idx, tp.size - 1)], 0.0)
    return float(sampled.mean())


class _Det:
    __slots__ = ("cat", "score", "status", "error", "target", "fix_cat", "fixed_tp")

    def __init__(self, cat: int, score: float) -> None:
        self.cat, self.score = cat, score
        self.status = "fp"  # "tp" | "fp" | "ignored"
        self.error: str | None = None
        self.target: tuple[int, int] | None = None  # (image index, gt index) for cls/loc
        self.fix_cat = cat  # the class after fixing (a cls fix takes the GT's class)
        self.fixed_tp = False  # whether fixing its cls/loc error makes it a TP (else it is removed)


def tide_errors(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    *,
    iou_type: str = "segm",
    pos_threshold: float = 0.5,
    bg_threshold: float = 0.1,
    max_dets: int = 100,
) -> dict[str, Any]:
    """Error analysis of COCO ``results`` against COCO ``gt``.

    Returns ``{"AP50": base AP (0-1), "dAP": {type: AP gained by fixing it}, "counts": {type: n}}``
    with the types of :data:`ERROR_TYPES`.
    """
    dets: list[_Det] = []
    num_gt: dict[int, int] = defaultdict(int)
    missed: dict[int, int] = defaultdict(int)
    best_for_gt: dict[tuple[int, int], _Det] = {}
    for img_idx, g in enumerate(group_by_image(gt, results, iou_type, max_dets)):
        regular = ~g.gt_crowd
        for c in g.gt_cats[regular]:
            num_gt[int(c)] += 1
        ious = iou_matrix(g.dt_geoms, g.gt_geoms, g.gt_crowd)
        dt_match, gt_match = greedy_match(ious, g.dt_cats, g.gt_cats, g.gt_crowd, pos_threshold)
        plain = np.where(regular[None, :], ious, 0.0)  # crowd regions play no part in errors
        same = g.dt_cats[:, None] == g.gt_cats[None, :]
        cls_iou, other_iou = np.where(same, plain, 0.0), np.where(~same, plain, 0.0)
        used_cls_iou = np.where((gt_match >= 0)[None, :], cls_iou, 0.0)
        usable = np.zeros(len(g.gt_cats), dtype=bool)
        for d in range(len(g.dt_cats)):
            det = _Det(int(g.dt_cats[d]), float(g.dt_scores[d]))
            dets.append(det)
            if dt_match[d] >= 0:
                det.status = "tp"
                continue
            if dt_match[d] == -2:
                det.status = "ignored"
                continue
            if not regular.any():
                det.error = "bkg"
            elif bg_threshold <= cls_iou[d].max() <= pos_threshold:
                det.error, target = "loc", int(cls_iou[d].argmax())
                det.target = (img_idx, target)
            elif other_iou[d].max() >= pos_threshold:
                det.error, target = "cls", int(other_iou[d].argmax())
                det.target = (img_idx, target)
            elif used_cls_iou[d].max() >= pos_threshold:
                det.error = "dupe"
            elif plain[d].max() <= bg_threshold:
                det.error = "bkg"
            else:
                det.error = "both"
            if det.target is not None:
                gi = det.target[1]
                det.fix_cat = int(g.gt_cats[gi])
                if gt_match[gi] < 0:  # only an unmatched GT can be recovered by the fix
                    usable[gi] = True
                    det.fixed_tp = True
                    best = best_for_gt.get(det.target)
                    if best is None or det.score > best.score:
                        best_for_gt[det.target] = det
        for j in np.nonzero(regular & (gt_match < 0) & ~usable)[0]:
            missed[int(g.gt_cats[j])] += 1
    for det in dets:  # only the best-scoring fix per GT becomes a TP
        if det.fixed_tp and best_for_gt.get(det.target) is not det:
            det.fixed_tp = False

    base = _map(dets, num_gt, fix=None, missed=missed)
    dap = {t: max(_map(dets, num_gt, fix=t, missed=missed) - base, 0.0) for t in ERROR_TYPES}
    counts = {t: sum(1 for d in dets if d.error == t) for t in ERROR_TYPES[:-1]}
    counts["miss"] = int(sum(missed.values()))
    return {"AP50": base, "dAP": dap, "counts": counts, "names": dict(ERROR_NAMES)}


def _map(dets: list[_Det], num_gt: dict[int, int], *, fix: str | None, missed: dict[int, int]) -> float:
    """Mean AP50 over classes with detections or GT after fixing the errors of type ``fix``."""
    scores: dict[int, list[float]] = defaultdict(list)
    tps: dict[int, list[bool]] = defaultdict(list)
    for d in dets:
        if d.status == "ignored":
            continue
        cat, tp = d.cat, d.status == "tp"
        if fix is not None and d.error == fix:
            if not d.fixed_tp:
                continue  # removed
            tp, cat = True, d.fix_cat
        scores[cat].append(d.score)
        tps[cat].append(tp)
    gts = dict(num_gt)
    if fix == "miss":
        gts = {c: n - missed.get(c, 0) for c, n in gts.items()}
    classes = {c for c, n in gts.items() if n > 0} | set(scores)
    if not classes:
        return 0.0
    aps = [average_precision(np.array(scores[c]), np.array(tps[c]), gts.get(c, 0)) for c in classes]
    return float(np.mean(aps))
