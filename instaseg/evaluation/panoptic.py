"""Panoptic quality (PQ = SQ x RQ) exactly as panopticapi's ``pq_compute`` computes it.

Per image, GT and predictions are non-overlapping segment-id maps (0 = VOID) plus segment lists. A GT
and a predicted segment match when they share the category, the GT is not crowd and IoU > 0.5, where
the union leaves out the predicted segment's pixels on VOID (so each segment matches at most once). The
GT area in the union is the segment's ``area`` when it has one (``pq_compute`` takes it from the GT
JSON), else its pixel count. Unmatched non-crowd GT are false negatives. An unmatched prediction is a
false positive unless more than half of its area lies on VOID plus the crowd region of its own category.
Per category ``PQ = sum IoU(TP) / (TP + FP/2 + FN/2)``, ``SQ = sum IoU(TP) / TP``,
``RQ = TP / (TP + FP/2 + FN/2)``; All/Things/Stuff average the categories with any TP, FP or FN.

Replicated to the letter, including one quirk: when an image has several crowd segments of one
category, ``pq_compute`` remembers only the *last* one listed in ``segments_info`` as that category's
crowd region, so a prediction on an earlier crowd segment of its class still counts as a false
positive. (COCO panoptic GT has at most one crowd segment per category and image, where this does not
matter; :func:`instances_to_segments` merges crowd GT per category for the same reason.)
Deliberate differences, only where ``pq_compute`` would crash: with no category counted the averages
are 0 (``pq_compute`` divides by zero), and a listed predicted segment with no pixels is ignored by
:meth:`PanopticQuality.update` (``pq_compute`` raises; :func:`pq_from_files` does too).

:func:`evaluate_panoptic` takes ``(gt, pred)`` :class:`~instaseg.structures.panoptic.PanopticResult`
pairs, :func:`pq_from_files` two COCO panoptic JSON + PNG folders; both return ``pq_compute``'s dict.
:func:`coco_panoptic_quality` is the things-only PQ of COCO *instance* results under the same rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data.coco_panoptic import CocoPanopticFile
from instaseg.errors import DataError
from instaseg.evaluation.matching import group_by_image
from instaseg.structures.masks import decode_rles
from instaseg.structures.panoptic import PanopticResult


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
    """Pixel counts of each (a value, b value) pair of two equally shaped int maps, in (a, b) order.

    One sort of a combined key, as pq_compute does; values are shifted so -1 (``void_id=-1``) works."""
    lo = min(int(a.min(initial=0)), int(b.min(initial=0)))
    aa, bb = a.ravel().astype(np.int64) - lo, b.ravel().astype(np.int64) - lo
    span = int(bb.max(initial=0)) + 1
    keys, counts = np.unique(aa * span + bb, return_counts=True)
    ka, kb = np.divmod(keys, span)
    return {(int(x) + lo, int(y) + lo): int(n) for x, y, n in zip(ka, kb, counts, strict=True)}


@dataclass
class PanopticQuality:
    """Accumulates per-category TP/FP/FN and IoU sums over images (:meth:`update`), then
    :meth:`summarize` (``pq_compute``'s dict) or :meth:`compute` (the compact things-only form).
    ``void_id`` marks VOID pixels in GT id maps (panopticapi uses 0; -1 = no VOID, for instance GT
    where unlabeled pixels are background). A GT pixel whose id is neither VOID nor listed is plain
    unlabeled area, as in ``pq_compute``."""

    void_id: int = 0
    stats: dict[int, _ClassStat] = field(default_factory=lambda: defaultdict(_ClassStat))

    def update(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[Any],
        pred_ids: np.ndarray,
        pred_segments: Sequence[Any],
        *,
        pairs: dict[tuple[int, int], int] | None = None,
    ) -> None:
        """Add one image: ``gt_ids`` and ``pred_ids`` are int (H, W) segment-id maps; segments are
        :class:`Segment` or :class:`~instaseg.structures.panoptic.PanopticSegment` (``id``,
        ``category_id``, ``iscrowd``, optional ``area``). ValueError when the maps differ in shape or the
        prediction map holds an id its segments do not list. ``pairs``: :func:`_pair_counts` of the two
        maps when the caller has it already."""
        gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f"id maps differ in shape: {gt_ids.shape} vs {pred_ids.shape}")
        gts = {int(s.id): s for s in gt_segments}
        if self.void_id in gts or self.void_id in {int(s.id) for s in pred_segments}:
            raise ValueError(f"segment id {self.void_id} is reserved for VOID")
        if pairs is None:
            pairs = _pair_counts(gt_ids, pred_ids)  # in (gt, pred) order, as pq_compute's np.unique
        pred_area: dict[int, int] = defaultdict(int)
        gt_count: dict[int, int] = defaultdict(int)
        for (g, p), n in pairs.items():
            pred_area[p] += n
            gt_count[g] += n
        listed = {int(s.id) for s in pred_segments}
        unlisted = sorted(p for p in pred_area if p != 0 and p not in listed)
        if unlisted:
            raise ValueError(f"predicted ids {unlisted[:5]} are in the id map but not in the segments")
        preds = {int(s.id): s for s in pred_segments if pred_area.get(int(s.id), 0) > 0}
        gt_area = {g: (int(s.area) if getattr(s, "area", None) is not None else gt_count.get(g, 0))
                   for g, s in gts.items()}
        gt_matched, pred_matched = set(), set()
        for (g, p), inter in pairs.items():
            if g not in gts or p not in preds or gts[g].iscrowd:
                continue
            if gts[g].category_id != preds[p].category_id:
                continue
            union = pred_area[p] + gt_area[g] - inter - pairs.get((self.void_id, p), 0)
            iou = inter / union
            if iou > 0.5:  # > 0.5 makes the match unique: no segment can match twice
                st = self.stats[int(gts[g].category_id)]
                st.tp += 1
                st.iou += iou
                gt_matched.add(g)
                pred_matched.add(p)
        crowd_of: dict[int, int] = {}  # category -> its LAST crowd segment, as pq_compute keeps it
        for g, seg in gts.items():
            if g in gt_matched:
                continue
            if seg.iscrowd:
                crowd_of[int(seg.category_id)] = g
                continue
            self.stats[int(seg.category_id)].fn += 1
        for p, seg in preds.items():
            if p in pred_matched:
                continue
            ignored = pairs.get((self.void_id, p), 0)
            if int(seg.category_id) in crowd_of:
                ignored += pairs.get((crowd_of[int(seg.category_id)], p), 0)
            if ignored / pred_area[p] > 0.5:
                continue
            self.stats[int(seg.category_id)].fp += 1

    def summarize(self, categories: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """``pq_compute``'s result: ``{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}, "per_class":
        {category_id: {"pq", "sq", "rq", "tp", "fp", "fn"}}}`` (0-1 scale) over ``categories`` (COCO
        dicts with ``id`` and ``isthing``); ``per_class`` lists every category, 0 where it has no TP,
        FP or FN; ``n`` counts the averaged categories. Categories not in ``categories`` are left out."""
        out: dict[str, Any] = {}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            sums, n, per_class = [0.0, 0.0, 0.0], 0, {}
            for cat in categories:
                if isthing is not None and (int(cat["isthing"]) == 1) != isthing:
                    continue
                st = self.stats.get(int(cat["id"]), _ClassStat())
                row = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": st.tp, "fp": st.fp, "fn": st.fn}
                if st.tp + st.fp + st.fn:
                    denom = st.tp + 0.5 * st.fp + 0.5 * st.fn
                    row.update(pq=st.iou / denom, sq=st.iou / st.tp if st.tp else 0.0, rq=st.tp / denom)
                    n += 1
                    sums = [sums[0] + row["pq"], sums[1] + row["sq"], sums[2] + row["rq"]]
                per_class[int(cat["id"])] = row
            out[name] = {k: (v / n if n else 0.0) for k, v in zip(("pq", "sq", "rq"), sums, strict=True)}
            out[name]["n"] = n
            if isthing is None:
                out["per_class"] = per_class
        return out

    def compute(self, category_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """``{"PQ", "SQ", "RQ", "n", "per_class": {category_id: {"PQ", "SQ", "RQ", "TP", "FP", "FN"}}}``
        (0-1 scale). ``category_ids`` restricts the categories (default: all seen); ``n`` is the
        number averaged (those with any TP, FP or FN). With none, PQ/SQ/RQ are 0."""
        cats = sorted(self.stats) if category_ids is None else list(category_ids)
        full = self.summarize([{"id": c, "isthing": 1} for c in cats])
        per_class = {
            c: {"PQ": v["pq"], "SQ": v["sq"], "RQ": v["rq"], "TP": v["tp"], "FP": v["fp"], "FN": v["fn"]}
            for c, v in full["per_class"].items() if v["tp"] + v["fp"] + v["fn"]
        }
        a = full["All"]
        return {"PQ": a["pq"], "SQ": a["sq"], "RQ": a["rq"], "n": a["n"], "per_class": per_class}


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
    fusion). GT (no ``scores``) is painted largest first so smaller objects on top stay visible; its
    crowd masks of one category become one segment.
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
    crowd = [False] * n if iscrowd is None else [bool(c) for c in iscrowd]
    # Crowd GT of one category become one segment (the first one's id), as in COCO panoptic, so
    # pq_compute's one-crowd-region-per-category rule covers all of them.
    first_crowd: dict[int, int] = {}
    paint = [first_crowd.setdefault(int(category_ids[i]), i) if crowd[i] else i for i in range(n)]
    order = np.argsort(-masks.reshape(n, -1).sum(1), kind="stable")
    for i in order:  # largest first, so a smaller object overwrites it
        ids[masks[i]] = paint[i] + 1
    present = set(np.unique(ids).tolist())
    keep = [i for i in range(n) if i + 1 in present and paint[i] == i]
    segs = [Segment(i + 1, int(category_ids[i]), crowd[i]) for i in keep]
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


def evaluate_panoptic(
    pairs: Iterable[tuple[PanopticResult, PanopticResult]], categories: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """PQ/SQ/RQ of ``(gt, pred)`` pairs, one per image, as ``pq_compute`` on the same data would give
    them: ``{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category_id: {"pq", "sq",
    "rq", "tp", "fp", "fn"}}}``. ``categories``: the GT's COCO panoptic categories (``id``,
    ``isthing``). ValueError for a predicted segment of an unknown category (as ``pq_compute``)."""
    ev = PanopticEvaluator(categories)
    for gt, pred in pairs:
        ev.add(gt, pred)
    return ev.result()


class PanopticEvaluator:
    """Streaming :func:`evaluate_panoptic`: :meth:`add` one ``(gt, pred)`` image at a time (a training
    validator holds one image's maps at a time), then :meth:`result`."""

    def __init__(self, categories: Sequence[dict[str, Any]]) -> None:
        self.categories = [dict(c) for c in categories]
        self.known = {int(c["id"]) for c in self.categories}
        self.pq = PanopticQuality(void_id=0)
        self.images = 0

    def add(self, gt: PanopticResult, pred: PanopticResult) -> None:
        unknown = sorted({int(s.category_id) for s in pred.segments} - self.known)
        if unknown:
            raise ValueError(f"image {self.images}: predicted segments have unknown category ids {unknown}")
        self.pq.update(gt.id_map, gt.segments, pred.id_map, pred.segments)
        self.images += 1

    def result(self) -> dict[str, Any]:
        return self.pq.summarize(self.categories)


def pq_from_files(
    gt_json: str | Path,
    gt_png_dir: str | Path | None,
    pred_json: str | Path,
    pred_png_dir: str | Path | None,
) -> dict[str, Any]:
    """:func:`evaluate_panoptic` of two COCO panoptic JSON + PNG folders (folders default to the JSON
    path without ``.json``), one image in memory at a time; every GT image needs a prediction (matched by
    ``image_id``). Problems ``pq_compute`` stops at (a prediction missing, ids in a PNG not listed,
    listed segments absent from the PNG, unknown categories, a PNG of another size) raise a one-line
    DataError naming the file."""
    gt = CocoPanopticFile(gt_json, gt_png_dir)
    pred = CocoPanopticFile(pred_json, pred_png_dir, categories=gt.categories)
    by_id = {info["id"]: k for k, (info, _, _) in enumerate(pred.entries)}
    pq = PanopticQuality(void_id=0)
    for i, (info, _, _) in enumerate(gt.entries):
        k = by_id.get(info["id"])
        if k is None:
            raise DataError(pred.json_path, f"no prediction for the image with id {info['id']}")
        g, p = gt.load(i, check=False), pred.load(k, check=False)
        png = pred.png_path(k)
        if p.image_size != g.image_size:
            raise DataError(png, f"PNG is {p.image_size[1]}x{p.image_size[0]}, the ground truth "
                                 f"{g.image_size[1]}x{g.image_size[0]}")
        pairs = _pair_counts(g.id_map, p.id_map)  # one sort per image, also for the checks below
        _check_ids(gt, i, {a for a, _ in pairs}, g, absent_ok=True)
        _check_ids(pred, k, {b for _, b in pairs}, p, absent_ok=False)
        pq.update(g.id_map, g.segments, p.id_map, p.segments, pairs=pairs)
    return pq.summarize(gt.categories)


def _check_ids(
    f: CocoPanopticFile, k: int, present: set[int], res: PanopticResult, *, absent_ok: bool
) -> None:
    """DataError naming the PNG for ids it holds that segments_info does not list, and (predictions,
    as pq_compute) for listed segments it lacks."""
    listed = {s.id for s in res.segments}
    unlisted = sorted(present - listed - {0})
    if unlisted:
        raise DataError(f.png_path(k), f"ids {unlisted[:5]} in the PNG are not in segments_info of image "
                                       f"{f.entries[k][0]['id']} in {f.json_path.name}")
    absent = sorted(listed - present)
    if absent and not absent_ok:
        raise DataError(f.png_path(k), f"segments {absent[:5]} in segments_info are absent from the PNG")


def evaluate_dataset_panoptic(
    dataset: Any, predictions: Iterable[tuple[int, PanopticResult]]
) -> dict[str, Any]:
    """:func:`evaluate_panoptic` of ``(dataset index, predicted PanopticResult)`` pairs against a panoptic
    dataset's GT (``dataset.load_panoptic(index)``, at the image's own size, and its
    ``panoptic_categories``): the entry point for a training validator."""
    pairs = ((dataset.load_panoptic(i), p) for i, p in predictions)
    return evaluate_panoptic(pairs, dataset.panoptic_categories)


def format_pq_table(
    result: dict[str, Any], categories: Sequence[dict[str, Any]], *, max_classes: int = 40
) -> str:
    """The terminal table of an :func:`evaluate_panoptic` result: All/Things/Stuff (as ``pq_compute``
    prints them, 0-100) and per class (those with any TP, FP or FN) with TP/FP/FN."""
    lines = [f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'N':>5s}", "-" * 38]
    for name in ("All", "Things", "Stuff"):
        r = result[name]
        pq, sq, rq = (100 * r[k] for k in ("pq", "sq", "rq"))
        lines.append(f"{name:10s}| {pq:5.1f}  {sq:5.1f}  {rq:5.1f} {r['n']:5d}")
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    kinds = {int(c["id"]): "thing" if int(c["isthing"]) else "stuff" for c in categories}
    rows = [(int(c), v) for c, v in result["per_class"].items() if v["tp"] + v["fp"] + v["fn"]]
    if rows:
        width = max(12, *(len(names.get(c, str(c))) for c, _ in rows[:max_classes]))
        lines += ["", f"{'class':<{width}}  kind     PQ     SQ     RQ   TP   FP   FN"]
        for c, v in rows[:max_classes]:
            lines.append(f"{names.get(c, str(c)):<{width}}  {kinds.get(c, '?'):5s} {100 * v['pq']:5.1f}  "
                         f"{100 * v['sq']:5.1f}  {100 * v['rq']:5.1f} {v['tp']:4d} {v['fp']:4d} {v['fn']:4d}")
        if len(rows) > max_classes:
            lines.append(f"... and {len(rows) - max_classes} more classes (see the metrics JSON)")
    return "\n".join(lines)
