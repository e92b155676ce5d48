"""The worker half of :mod:`instaseg.evaluation.cocoengine`: IoU and matching for a chunk of images,
accumulation for a group of categories.

This module runs as ``python -m instaseg.evaluation.cocoworker`` in the engine's worker subprocesses
(pickled tasks on stdin, answers on stdout, see :func:`serve`), so it imports only NumPy and
pycocotools' mask C routines (no torch: a worker starts in a fraction of a second and stays small).
It is the one place outside :mod:`instaseg.structures.masks` that calls pycocotools' mask functions,
for that reason; it uses exactly the routines COCOeval uses (``frPyObjects``/``merge`` as ``annToRLE``,
``area``, ``toBbox``, ``iou``), so every value is the reference's bit for bit.

Matching follows ``COCOeval.evaluateImg`` exactly, for every area range and IoU threshold at once:
detections in score order greedily take the best still-free ground truth (crowd regions stay free)
with IoU >= the threshold, preferring non-ignored ground truth; among equal IoUs the last one wins,
as in the reference's loop. A chunk's answer is, per detection, whether it counts as a true positive
and whether as a false positive, for each (area range, threshold); ignored detections are neither.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from pycocotools import mask as _mask


def run_task(task: dict[str, Any]) -> Any:
    """A matching chunk (:func:`evaluate_chunk`) or, with ``kind`` "accumulate", a group of categories
    (:func:`accumulate_categories`)."""
    if task.get("kind") == "accumulate":
        return accumulate_categories(task)
    return evaluate_chunk(task)


def evaluate_chunk(
    chunk: dict[str, Any], timings: dict[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Match one chunk of images (see :func:`instaseg.evaluation.cocoengine.make_chunks` for the keys).

    Detections come sorted by (image, category, score descending, result order) and already cut to
    the largest max-dets per image and category. Returns ``tp`` and ``fp``, bool (n_dets, A, T) for
    A area ranges and T IoU thresholds, in the chunk's detection order. With ``timings``, adds the
    seconds spent per stage to it (for benchmarks/bench_eval.py's profile).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _evaluate_chunk(chunk, {} if timings is None else timings)


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def _evaluate_chunk(c: dict[str, Any], timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    area_rng = np.asarray(c["area_rng"], dtype=np.float64)  # (A, 2)
    thrs = np.minimum(np.asarray(c["iou_thrs"], dtype=np.float64), 1 - 1e-10)  # (T,)
    segm = c["iou_type"] == "segm"
    d_img, d_cat = c["d_img"], c["d_cat"]
    n, n_a, n_t = len(d_img), len(area_rng), len(thrs)
    d_area = c["d_area"].copy()
    with _timed(timings, "detection RLE decode, areas, boxes"):
        d_geom = _det_geometry(c, d_area, segm)
    g_img, g_cat = c["g_img"], c["g_cat"]
    with _timed(timings, "ground-truth polygons to RLE"):
        g_geom = _gt_geometry(c, segm)
    g_crowd = c["g_crowd"]
    g_area = c["g_area"]
    out_of_range = (d_area[:, None] < area_rng[:, 0]) | (d_area[:, None] > area_rng[:, 1])  # (n, A)
    g_ignore = (
        (g_crowd[:, None] != 0) | (g_area[:, None] < area_rng[:, 0]) | (g_area[:, None] > area_rng[:, 1])
    )
    # default: unmatched; tp nowhere, fp wherever the detection is inside the area range
    tp = np.zeros((n, n_a, n_t), dtype=bool)
    fp = np.repeat(~out_of_range[:, :, None], n_t, axis=2)
    by_g: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    with _timed(timings, "IoU (pycocotools maskUtils.iou)"):
        for (ds, de), (gs, ge) in _pairs(d_img, d_cat, g_img, g_cat):
            crowd = [int(v) for v in g_crowd[gs:ge]]
            ious = np.asarray(_mask.iou(d_geom[ds:de], g_geom[gs:ge], crowd), dtype=np.float64)
            by_g.setdefault(ge - gs, []).append(
                (np.arange(ds, de), np.arange(gs, ge), ious.reshape(de - ds, ge - gs))
            )
    with _timed(timings, "matching (evaluateImg)"):
        for g, items in by_g.items():
            _match_group(items, g, thrs, g_ignore, g_crowd, c["g_id_nonzero"], out_of_range, tp, fp)
    return tp, fp


def _det_geometry(c: dict[str, Any], d_area: np.ndarray, segm: bool) -> list[Any]:
    """Detection masks (RLE dicts) or boxes for IoU; fills in areas that come from masks."""
    counts, sizes = c["d_counts"], c["d_size"]
    need = [i for i, v in enumerate(counts) if v is not None]
    rles = [None] * len(counts)
    for i in need:
        rles[i] = {"size": [int(sizes[i, 0]), int(sizes[i, 1])], "counts": counts[i]}
    missing_area = np.nonzero(np.isnan(d_area))[0]
    if missing_area.size:
        d_area[missing_area] = _areas([rles[i] for i in missing_area])
    if segm:
        return rles
    boxes = c["d_box"].copy()
    missing_box = np.nonzero(np.isnan(boxes[:, 0]))[0]
    if missing_box.size:
        boxes[missing_box] = np.asarray(_mask.toBbox([rles[i] for i in missing_box])).reshape(-1, 4)
    return boxes


def _areas(rles: list[Any]) -> np.ndarray:
    """``mask.area`` in slices of 255 (pycocotools' ``area`` overflows a uint8 on longer lists under
    NumPy 2)."""
    return np.concatenate(
        [np.asarray(_mask.area(rles[i : i + 255]), dtype=np.float64) for i in range(0, len(rles), 255)]
    )


def _gt_geometry(c: dict[str, Any], segm: bool) -> Any:
    if not segm:
        return c["g_geom"]
    out = []
    for seg, (h, w) in zip(c["g_geom"], c["g_size"].tolist(), strict=True):
        if isinstance(seg, list):  # polygons, as COCO.annToRLE
            out.append(_mask.merge(_mask.frPyObjects(seg, h, w)))
        elif isinstance(seg["counts"], list):
            out.append(_mask.frPyObjects(seg, h, w))
        else:
            out.append(seg)
    return out


def _pairs(d_img: np.ndarray, d_cat: np.ndarray, g_img: np.ndarray, g_cat: np.ndarray) -> list[Any]:
    """(det slice, gt slice) per (image, category) with both: both arrays are sorted by that key."""
    d_key = d_img.astype(np.int64) * (1 << 31) + d_cat
    g_key = g_img.astype(np.int64) * (1 << 31) + g_cat
    dk, ds = np.unique(d_key, return_index=True)
    gk, gs = np.unique(g_key, return_index=True)
    de = np.append(ds[1:], len(d_key))
    ge = np.append(gs[1:], len(g_key))
    common, di, gi = np.intersect1d(dk, gk, assume_unique=True, return_indices=True)
    return [((int(ds[a]), int(de[a])), (int(gs[b]), int(ge[b]))) for a, b in zip(di, gi, strict=True)]


def _match_group(
    items: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    g: int,
    thrs: np.ndarray,
    g_ignore: np.ndarray,
    g_crowd: np.ndarray,
    g_id_nonzero: np.ndarray,
    out_of_range: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
) -> None:
    """Greedy matching for all (image, category) pairs with ``g`` ground truths at once: step j handles
    the j-th detection of every pair that has one (pairs sorted by detection count, longest first)."""
    items = sorted(items, key=lambda it: -len(it[0]))
    p, dmax = len(items), len(items[0][0])
    n_a, n_t = g_ignore.shape[1], len(thrs)
    ious = np.full((p, dmax, g), -1.0)
    det_idx = np.zeros((p, dmax), dtype=np.int64)
    n_dets = np.empty(p, dtype=np.int64)
    gidx = np.empty((p, g), dtype=np.int64)
    for k, (didx, gi, iou) in enumerate(items):
        ious[k, : len(didx)] = iou
        det_idx[k, : len(didx)] = didx
        n_dets[k] = len(didx)
        gidx[k] = gi
    ign = g_ignore[gidx].transpose(0, 2, 1)[:, :, None, :]  # (p, A, 1, g)
    crowd = (g_crowd[gidx] != 0)[:, None, None, :]  # (p, 1, 1, g)
    id_nz = g_id_nonzero[gidx]  # (p, g)
    taken = np.zeros((p, n_a, n_t, g), dtype=bool)
    rev = np.arange(g - 1, -1, -1)
    thr = thrs[None, None, :, None]
    for j in range(dmax):
        q = int(np.count_nonzero(n_dets > j))
        row = ious[:q, j][:, None, None, :]  # (q, 1, 1, g)
        ok = (~taken[:q] | crowd[:q]) & (row >= thr)  # (q, A, T, g)
        best = np.empty((q, n_a, n_t), dtype=np.int64)
        found = np.zeros((q, n_a, n_t), dtype=bool)
        for group in (~ign[:q], ign[:q]):  # non-ignored ground truth first, then ignored
            cand = ok & group & ~found[..., None]
            val = np.where(cand, row, -1.0)[..., rev]
            last = g - 1 - np.argmax(val, axis=-1)  # the last index of the largest IoU
            has = cand.any(axis=-1)
            best = np.where(has, last, best)
            found |= has
        pi, ai, ti = np.nonzero(found)
        taken[pi, ai, ti, best[pi, ai, ti]] = True
        safe = np.where(found, best, 0)
        m_ign = np.take_along_axis(np.broadcast_to(ign[:q], (q, n_a, n_t, g)), safe[..., None], -1)[..., 0]
        m_nz = np.take_along_axis(id_nz[:q], safe.reshape(q, -1), -1).reshape(q, n_a, n_t)
        matched = found & m_nz  # COCOeval records the gt id: an id of 0 reads as "unmatched"
        d = det_idx[:q, j]
        dt_ig = (found & m_ign) | (~matched & out_of_range[d][:, :, None])
        tp[d] = matched & ~dt_ig
        fp[d] = ~matched & ~dt_ig


def accumulate_categories(task: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``COCOeval.accumulate`` for a few categories. ``task``: per category ``tp``/``fp`` bool
    (nd, A, T) and ``rank`` (nd,) (the detection's place in its image, by score) in COCOeval's score
    order, ``npig`` (k, A) non-ignored ground truth, ``rec_thrs`` (R,), ``max_dets`` (M,). Returns
    precision (T, R, k, A, M) and recall (T, k, A, M), -1 where ``npig`` is 0."""
    rec_thrs, max_dets, npig = task["rec_thrs"], task["max_dets"], task["npig"]
    n_k, n_a = npig.shape
    n_t = task["tp"][0].shape[2] if task["tp"] else 0
    precision = -np.ones((n_t, len(rec_thrs), n_k, n_a, len(max_dets)))
    recall = -np.ones((n_t, n_k, n_a, len(max_dets)))
    for j, (tp, fp, rank) in enumerate(zip(task["tp"], task["fp"], task["rank"], strict=True)):
        areas = np.nonzero(npig[j] > 0)[0]
        # (A', T, nd): the running sums go along the last, contiguous axis
        tp_t = np.ascontiguousarray(tp[:, areas].transpose(1, 2, 0))
        fp_t = np.ascontiguousarray(fp[:, areas].transpose(1, 2, 0))
        for mi, max_det in enumerate(max_dets):
            sel = rank < max_det
            everything = bool(sel.all())
            prec, rec = _pr_curves(
                tp_t if everything else tp_t[:, :, sel],
                fp_t if everything else fp_t[:, :, sel],
                npig[j, areas],
                rec_thrs,
            )
            precision[:, :, j, areas, mi] = prec.transpose(2, 1, 0)
            recall[:, j, areas, mi] = rec.T
    return precision, recall


def _pr_curves(
    tps: np.ndarray, fps: np.ndarray, npig: np.ndarray, rec_thrs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One (category, max-dets) cell for A' area ranges: ``tps``/``fps`` bool (A', T, nd) in score order
    and ``npig`` (A',) -> precision (A', R, T) and recall (A', T), with pycocotools' arithmetic: the
    running counts are integers (summed in int32, exact in float64), then ``tp / npig`` and
    ``tp / (fp + tp + eps)``; the precision is made non-increasing from the right and read at the first
    index whose recall reaches each recall threshold (0 past the end)."""
    n_a, n_t, nd = tps.shape
    if nd == 0:
        return np.zeros((n_a, len(rec_thrs), n_t)), np.zeros((n_a, n_t))
    tp_sum = np.cumsum(tps, axis=2, dtype=np.int32).astype(np.float64)
    fp_sum = np.cumsum(fps, axis=2, dtype=np.int32).astype(np.float64)
    rc = tp_sum / npig[:, None, None]
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
    prec = np.zeros((n_a, len(rec_thrs), n_t))
    for a in range(n_a):
        for t in range(n_t):
            inds = np.searchsorted(rc[a, t], rec_thrs, side="left")
            valid = inds < nd
            prec[a, valid, t] = pr[a, t, inds[valid]]
    return prec, rc[:, :, -1]


def serve(stdin: Any, stdout: Any) -> None:
    """Worker loop: a pickled chunk in, ``(True, answer)`` or ``(False, traceback text)`` out, until the
    end of ``stdin`` (binary streams)."""
    while True:
        try:
            chunk = pickle.load(stdin)
        except EOFError:
            return
        try:
            answer: tuple[bool, Any] = (True, run_task(chunk))
        except Exception:  # reported to the parent, which raises it
            answer = (False, traceback.format_exc())
        pickle.dump(answer, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
