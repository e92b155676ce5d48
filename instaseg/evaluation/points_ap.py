"""ScanNet-style instance AP for point clouds: point-IoU matching, AP over overlaps 0.50:0.95, AP50,
AP25, per class, with the benchmark's rules.

Inputs are per scene: ground truth and prediction as :class:`~instaseg.structures.points.PointInstances`
over the same N points, and an optional bool (N,) ``void`` mask (unlabelled points). Rules, as in the
ScanNet benchmark script:

- a ground-truth instance with fewer than ``min_points`` points is *ignored*: a prediction may match
  it without counting as a true or false positive;
- classes in ``ignore_classes`` are not scored at all;
- predictions are matched in descending score order to the unmatched ground truth of the same class
  with the highest point IoU, when that IoU is > the overlap threshold (true positive); an unmatched
  prediction is a false positive unless more than the threshold of its points lie on void points or
  ignored instances;
- AP is the area under the precision/recall curve sampled at every distinct score, with ScanNet's
  step widths (precision 1 at recall 0 closes the curve); a class without ground truth has no AP (nan)
  and is left out of the means.

``class_agnostic=True`` scores every instance as one class ("object"): the comparison for methods
that find objects without naming them (e.g. the DBSCAN baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instaseg.structures.points import PointInstances

OVERLAPS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist())


@dataclass
class SceneMatch:
    """Per-scene overlap data: ``iou`` (G, P), ``gt_sizes`` (G,), ``pred_ignored_frac`` (P,) (fraction of
    each prediction's points on void points or small ground truth)."""

    gt_labels: np.ndarray
    gt_sizes: np.ndarray
    pred_labels: np.ndarray
    pred_scores: np.ndarray
    iou: np.ndarray
    pred_ignored_frac: np.ndarray


def match_scene(
    gt: PointInstances, pred: PointInstances, void: np.ndarray | None = None, min_points: int = 0
) -> SceneMatch:
    """IoU of every ground-truth/prediction pair of one scene (computed from the point ids: O(N + G*P))."""
    if gt.num_points != pred.num_points:
        raise ValueError(f"ground truth has {gt.num_points} points, prediction {pred.num_points}")
    g, p = len(gt), len(pred)
    gi, pi = gt.instance_ids + 1, pred.instance_ids + 1  # 0 = none
    inter = np.bincount(gi * (p + 1) + pi, minlength=(g + 1) * (p + 1)).reshape(g + 1, p + 1)
    gsize, psize = inter[1:, :].sum(1), inter[:, 1:].sum(0)
    i = inter[1:, 1:].astype(np.float64)
    union = gsize[:, None] + psize[None, :] - i
    iou = np.where(union > 0, i / np.maximum(union, 1), 0.0)
    small = gsize < min_points
    ignored = inter[1:, 1:][small].sum(0).astype(np.float64)
    if void is not None:
        v = np.asarray(void, bool) & (gt.instance_ids < 0)
        ignored += np.bincount(pi[v], minlength=p + 1)[1:]
    frac = np.where(psize > 0, ignored / np.maximum(psize, 1), 0.0)
    return SceneMatch(gt.labels.copy(), gsize, pred.labels.copy(), pred.scores.copy(), iou, frac)


def average_precision(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """ScanNet's AP from bool ``tp`` (M,) and ``scores`` (M,) of the counted predictions and the number
    of ground-truth instances (nan when ``num_gt == 0``)."""
    if num_gt == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp, scores = tp[order].astype(np.float64), scores[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]  # last index of each score
    precision = ctp[last] / (ctp[last] + cfp[last])
    recall = ctp[last] / num_gt
    precision = np.r_[precision[::-1], 1.0]  # ascending score order, then the (recall 0, precision 1) end
    recall = np.r_[recall[::-1], 0.0]
    conv = np.r_[recall[0], recall, 0.0]
    widths = np.convolve(conv, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, widths))


def _class_ap(matches: list[SceneMatch], cls: int | None, overlap: float, min_points: int) -> float:
    tps, scores, num_gt = [], [], 0
    for m in matches:
        gsel = np.ones(len(m.gt_labels), bool) if cls is None else m.gt_labels == cls
        psel = np.ones(len(m.pred_labels), bool) if cls is None else m.pred_labels == cls
        gidx, pidx = np.flatnonzero(gsel), np.flatnonzero(psel)
        valid_gt = m.gt_sizes[gidx] >= min_points
        num_gt += int(valid_gt.sum())
        taken = np.zeros(len(gidx), bool)
        for j in pidx[np.argsort(-m.pred_scores[pidx], kind="stable")]:
            ious = m.iou[gidx, j] if len(gidx) else np.zeros(0)
            cand = np.flatnonzero((ious > overlap) & ~taken)
            if len(cand):
                best = cand[np.argmax(ious[cand])]
                taken[best] = True
                if not valid_gt[best]:
                    continue  # matched an ignored (small) instance: neither TP nor FP
                tps.append(True)
            elif m.pred_ignored_frac[j] > overlap:
                continue
            else:
                tps.append(False)
            scores.append(m.pred_scores[j])
    return average_precision(np.asarray(tps, bool), np.asarray(scores, np.float64), num_gt)


def evaluate_point_instances(
    scenes: list[tuple[PointInstances, PointInstances, np.ndarray | None]],
    class_names: list[str],
    *,
    min_points: int = 30,
    ignore_classes: tuple[int, ...] = (),
    class_agnostic: bool = False,
) -> dict[str, object]:
    """AP (mean over :data:`OVERLAPS`), AP50 and AP25 over ``scenes`` of ``(gt, pred, void or None)``.

    Returns ``{"AP", "AP50", "AP25", "per_class": {name: {"AP", "AP50", "AP25", "num_gt"}},
    "num_scenes", "min_points", "class_agnostic"}`` on a 0-1 scale; means skip classes without ground
    truth (nan).
    """
    matches = [match_scene(g, p, v, min_points) for g, p, v in scenes]
    if class_agnostic:
        classes: list[tuple[str, int | None]] = [("object", None)]
    else:
        present = sorted(
            {int(c) for m in matches for c in m.gt_labels} | {int(c) for m in matches for c in m.pred_labels}
        )
        classes = [
            (class_names[c] if 0 <= c < len(class_names) else str(c), c)
            for c in present
            if c not in ignore_classes
        ]
    per_class: dict[str, dict[str, float]] = {}
    for name, cls in classes:
        aps = [_class_ap(matches, cls, t, min_points) for t in OVERLAPS]
        num_gt = sum(
            int(
                ((m.gt_labels == cls) if cls is not None else np.ones(len(m.gt_labels), bool))[
                    m.gt_sizes >= min_points
                ].sum()
            )
            for m in matches
        )
        per_class[name] = {
            "AP": float(np.mean(aps)),
            "AP50": aps[0],
            "AP25": _class_ap(matches, cls, 0.25, min_points),
            "num_gt": num_gt,
        }

    def mean(key: str) -> float:
        vals = [v[key] for v in per_class.values() if not np.isnan(v[key])]
        return float(np.mean(vals)) if vals else float("nan")

    return {
        "AP": mean("AP"),
        "AP50": mean("AP50"),
        "AP25": mean("AP25"),
        "per_class": per_class,
        "num_scenes": len(scenes),
        "min_points": min_points,
        "class_agnostic": class_agnostic,
    }


def format_points_table(metrics: dict[str, object]) -> str:
    """A text table of :func:`evaluate_point_instances` results (percent)."""
    lines = [f"{'class':<12} {'AP':>6} {'AP50':>6} {'AP25':>6} {'#gt':>5}"]
    per_class = metrics["per_class"]
    assert isinstance(per_class, dict)
    for name, v in per_class.items():
        lines.append(
            f"{name:<12} {100 * v['AP']:6.1f} {100 * v['AP50']:6.1f} {100 * v['AP25']:6.1f} {v['num_gt']:5d}"
        )
    lines.append(
        f"{'mean':<12} {100 * metrics['AP']:6.1f} {100 * metrics['AP50']:6.1f} {100 * metrics['AP25']:6.1f}"
    )  # type: ignore[operator]
    return "\n".join(lines)
