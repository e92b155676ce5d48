"""instaseg's own COCO evaluation engine: pycocotools' statistics exactly, on both cores, in little memory.

Layout of the work (the backend ``"instaseg"`` of :func:`instaseg.evaluation.coco.run_coco_eval`):

1. here, in one pass over the results: NumPy columns (image, category, score, area, box) that refer to
   the results' own RLE strings (no second copy of the detections, no per-detection dicts), completed
   as ``COCO.loadRes`` completes them (see :func:`instaseg.evaluation.coco.load_detections`);
2. sorting and the cut to 100 detections per image and category, vectorised;
3. per chunk of images, in :mod:`instaseg.evaluation.cocoworker` (``workers`` spawned processes, or
   in this process): ground-truth RLEs, mask areas and boxes, IoU with pycocotools' own C routine,
   and ``evaluateImg``'s greedy matching for all area ranges and IoU thresholds at once;
4. here: ``accumulate`` vectorised per category, then pycocotools' own ``summarize`` on the arrays.

Every comparison and every floating-point operation is the reference's (same IoU routine, same
tie-breaking in the stable score sort, same ``tp / (fp + tp + eps)`` and recall-threshold lookup), so
``precision``, ``recall`` and the 12 stats are identical to pycocotools', not merely close;
tests/evaluation/test_coco.py and tests/evaluation/test_cocoengine.py check it.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.cocoeval import COCOeval, Params

from instaseg.evaluation.cocoworker import run_task
from instaseg.structures.masks import rle_boxes, to_rle, xywh_to_polygon

#: below this many results one process is faster than starting workers
PARALLEL_MIN_RESULTS = 20_000
#: detections per chunk of images sent to a worker
CHUNK_DETS = 20_000


def auto_workers(n_results: int) -> int:
    """Worker processes for ``n_results`` results: 1 below :data:`PARALLEL_MIN_RESULTS`, else up to
    2 (the usable CPUs of this process, at most 2: the matching is cheap enough that more processes
    would mostly add start-up and transfer time)."""
    if n_results < PARALLEL_MIN_RESULTS:
        return 1
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


@dataclass
class EngineResult:
    """``precision`` (T, R, K, A, M), ``recall`` (T, K, A, M) and the 12 ``stats`` as pycocotools'
    ``COCOeval`` has them after ``accumulate`` and ``summarize``; ``params`` is its ``Params``."""

    precision: np.ndarray
    recall: np.ndarray
    stats: np.ndarray
    params: Any
    workers: int


def evaluate(
    gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str, *, workers: int = 1
) -> EngineResult:
    """Evaluate COCO ``results`` against ground-truth dict ``gt`` (``iou_type`` "segm" or "bbox") with
    pycocotools' default parameters, matching and accumulating in ``workers`` processes (1: in this
    one; the answer does not depend on it). Neither
    argument is modified. Raises ValueError for a result without ``bbox`` and ``segmentation`` or with
    an image id that is not in ``gt``."""
    params = Params(iouType=iou_type)
    pool = WorkerPool(workers) if workers > 1 else None
    try:
        cols = build_columns(gt, results, iou_type, params)
        n_chunks = max(2 * workers, len(cols.d_img) // CHUNK_DETS)
        chunks = make_chunks(cols, iou_type, params, n_chunks=n_chunks)
        outs = pool.map(chunks) if pool is not None else [run_task(c) for c in chunks]
        n_a, n_t = len(params.areaRng), len(params.iouThrs)
        tp = np.concatenate([o[0] for o in outs]) if outs else np.zeros((0, n_a, n_t), dtype=bool)
        fp = np.concatenate([o[1] for o in outs]) if outs else np.zeros((0, n_a, n_t), dtype=bool)
        del outs
        tasks, _ = accumulation_tasks(cols, tp, fp, params, n_tasks=2 * workers)
        del tp, fp
        answers = pool.map(tasks) if pool is not None else [run_task(t) for t in tasks]
    finally:
        if pool is not None:
            pool.close()
    precision, recall = fill_arrays(answers, tasks, cols.n_cats, params)
    return EngineResult(precision, recall, summarize(iou_type, precision, recall), params, workers)


class WorkerPool:
    """``n`` worker processes, each ``python -m instaseg.evaluation.cocoworker`` reading pickled chunks
    on stdin and writing pickled answers on stdout. Plain subprocesses rather than ``multiprocessing``:
    nothing re-imports the caller's main script (a script without a ``__main__`` guard works), and a
    worker imports NumPy and pycocotools only, shares no pages with this process and starts while this
    process builds the columns. One thread per worker feeds it and waits on it (I/O, so the GIL is
    free)."""

    def __init__(self, n: int) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        }
        cmd = [sys.executable, "-m", "instaseg.evaluation.cocoworker"]
        self.procs = [
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env) for _ in range(n)
        ]

    def map(self, chunks: Iterable[dict[str, Any]]) -> list[Any]:
        """Answers of :func:`~instaseg.evaluation.cocoworker.run_task` for ``chunks``, in order."""
        todo = enumerate(chunks)
        lock = threading.Lock()
        answers: dict[int, Any] = {}
        errors: list[str] = []

        def drive(proc: subprocess.Popen) -> None:
            assert proc.stdin is not None and proc.stdout is not None
            while not errors:
                with lock:
                    item = next(todo, None)
                if item is None:
                    return
                try:
                    pickle.dump(item[1], proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    proc.stdin.flush()
                    ok, value = pickle.load(proc.stdout)
                except (OSError, EOFError, pickle.UnpicklingError) as exc:
                    ok, value = False, f"evaluation worker {proc.pid} died: {exc!r}"
                if not ok:
                    errors.append(value)
                    return
                answers[item[0]] = value

        threads = [threading.Thread(target=drive, args=(p,), daemon=True) for p in self.procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"COCO evaluation worker failed: {errors[0]}")
        return [answers[i] for i in range(len(answers))]

    def close(self) -> None:
        """End the workers (they exit at the end of their input)."""
        for p in self.procs:
            if p.stdin is not None:
                with contextlib.suppress(OSError):
                    p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()


@dataclass
class _Columns:
    """Detections (``d_*``, sorted by image, category, score descending, result order; cut to the
    largest max-dets) and ground truth (``g_*``, sorted by image and category, file order kept)."""

    d_img: np.ndarray
    d_cat: np.ndarray
    d_score: np.ndarray
    d_rank: np.ndarray
    d_area: np.ndarray
    d_box: np.ndarray | None
    d_size: np.ndarray
    d_counts: list[Any]
    g_img: np.ndarray
    g_cat: np.ndarray
    g_crowd: np.ndarray
    g_area: np.ndarray
    g_id_nonzero: np.ndarray
    g_size: np.ndarray
    g_geom: list[Any] | np.ndarray
    n_cats: int


def build_columns(gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str, params: Any) -> _Columns:
    """Step 1 of :func:`evaluate`: the detection and ground-truth columns (``params``: COCOeval's
    ``Params``)."""
    img_ids = sorted({int(im["id"]) for im in gt["images"]})
    img_index = {i: k for k, i in enumerate(img_ids)}
    sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in gt["images"]}
    cat_ids = sorted({int(c["id"]) for c in gt["categories"]})
    cat_index = {c: k for k, c in enumerate(cat_ids)}
    d = _det_columns(results, iou_type, img_index, sizes, cat_index, params.maxDets[-1])
    g = _gt_columns(gt, iou_type, img_index, sizes, cat_index)
    return _Columns(**d, **g, n_cats=len(cat_ids))


def _det_columns(
    results: list[dict[str, Any]],
    iou_type: str,
    img_index: dict[int, int],
    sizes: dict[int, tuple[int, int]],
    cat_index: dict[int, int],
    max_det: int,
) -> dict[str, Any]:
    n = len(results)
    segm = iou_type == "segm"
    img = np.empty(n, dtype=np.int64)
    cat = np.empty(n, dtype=np.int64)
    score = np.empty(n, dtype=np.float64)
    area = np.full(n, np.nan)
    box = np.full((n, 4), np.nan)
    size = np.zeros((n, 2), dtype=np.int64)
    counts: list[Any] = [None] * n
    by_box = n > 0 and _has_box(results[0])
    derived_boxes: list[int] = []
    unknown: set[Any] = set()
    for i, r in enumerate(results):
        image_id = r["image_id"]
        k = img_index.get(image_id)
        if k is None:
            unknown.add(image_id)
            continue
        img[i] = k
        cat[i] = cat_index.get(r["category_id"], -1)
        score[i] = r["score"]
        b = r.get("bbox")
        has_box = b is not None and len(b) != 0
        seg = r.get("segmentation")
        if not has_box and seg is None:
            raise ValueError(f"result {i} has neither 'bbox' nor 'segmentation'")
        if has_box:
            box[i] = b
            if by_box:
                area[i] = b[2] * b[3]
        if segm or not by_box or not has_box:
            if seg is None:  # loadRes' polygon of the box corners
                seg = to_rle(xywh_to_polygon(b), *sizes[image_id])
            elif isinstance(seg, list) or isinstance(seg.get("counts"), list):
                seg = to_rle(seg, *sizes[image_id])
            counts[i] = seg["counts"]
            size[i] = seg["size"]
            if by_box and not has_box:
                derived_boxes.append(i)
    if unknown:
        raise ValueError(f"results refer to image ids not in the ground truth: {sorted(unknown)[:5]}")
    if derived_boxes:  # a result without a box among boxed ones: its mask's box, and that box's area
        rles = [{"size": size[i].tolist(), "counts": counts[i]} for i in derived_boxes]
        mb = rle_boxes(rles)
        box[derived_boxes] = mb
        area[derived_boxes] = mb[:, 2] * mb[:, 3]
    keep = np.nonzero(cat >= 0)[0]  # COCOeval evaluates only the ground truth's categories
    order = keep[np.lexsort((keep, -score[keep], cat[keep], img[keep]))]
    rank = _rank_in_groups(img[order] * (len(cat_index) + 1) + cat[order])
    order, rank = order[rank < max_det], rank[rank < max_det]
    return {
        "d_img": img[order],
        "d_cat": cat[order],
        "d_score": score[order],
        "d_rank": rank,
        "d_area": area[order],
        "d_box": None if segm else box[order],
        "d_size": size[order],
        "d_counts": [counts[i] for i in order.tolist()],
    }


def _has_box(result: dict[str, Any]) -> bool:
    b = result.get("bbox")
    return b is not None and len(b) != 0


def _rank_in_groups(keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal consecutive ``keys``."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.nonzero(keys[1:] != keys[:-1])[0] + 1]
    lengths = np.diff(np.r_[starts, n])
    return np.arange(n) - np.repeat(starts, lengths)


def _gt_columns(
    gt: dict[str, Any],
    iou_type: str,
    img_index: dict[int, int],
    sizes: dict[int, tuple[int, int]],
    cat_index: dict[int, int],
) -> dict[str, Any]:
    rows = []
    for a in gt["annotations"]:
        k, c = img_index.get(a["image_id"]), cat_index.get(a["category_id"])
        if k is None or c is None:
            continue
        if "area" not in a:
            raise ValueError(f"ground-truth annotation {a.get('id')} has no 'area'")
        rows.append((k, c, a))
    order = sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1]))  # stable: file order kept
    rows = [rows[i] for i in order]
    anns = [r[2] for r in rows]
    geom: list[Any] | np.ndarray
    if iou_type == "segm":
        geom = [a["segmentation"] for a in anns]
    else:
        geom = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    return {
        "g_img": np.asarray([r[0] for r in rows], dtype=np.int64),
        "g_cat": np.asarray([r[1] for r in rows], dtype=np.int64),
        "g_crowd": np.asarray([1 if a.get("iscrowd", 0) else 0 for a in anns], dtype=np.int64),
        "g_area": np.asarray([a["area"] for a in anns], dtype=np.float64),
        "g_id_nonzero": np.asarray([a.get("id", 0) != 0 for a in anns], dtype=bool),
        "g_size": np.asarray([sizes[a["image_id"]] for a in anns], dtype=np.int64).reshape(-1, 2),
        "g_geom": geom,
    }


def make_chunks(cols: _Columns, iou_type: str, params: Any, *, n_chunks: int) -> Iterator[dict[str, Any]]:
    """Split the work into about ``n_chunks`` runs of whole images (the payloads of
    :func:`instaseg.evaluation.cocoworker.evaluate_chunk`)."""
    n_img = int(max(cols.d_img.max(initial=-1), cols.g_img.max(initial=-1))) + 1
    if n_img == 0:
        return
    edges = np.unique(np.linspace(0, n_img, max(1, n_chunks) + 1).round().astype(np.int64))
    d_edges = np.searchsorted(cols.d_img, edges)
    g_edges = np.searchsorted(cols.g_img, edges)
    for j in range(len(edges) - 1):
        ds, de, gs, ge = int(d_edges[j]), int(d_edges[j + 1]), int(g_edges[j]), int(g_edges[j + 1])
        if ds == de:
            continue  # no detections: nothing to match (the ground truth only counts in accumulate)
        yield {
            "iou_type": iou_type,
            "area_rng": params.areaRng,
            "iou_thrs": params.iouThrs,
            "d_img": cols.d_img[ds:de],
            "d_cat": cols.d_cat[ds:de],
            "d_area": cols.d_area[ds:de],
            "d_box": None if cols.d_box is None else cols.d_box[ds:de],
            "d_size": cols.d_size[ds:de],
            "d_counts": cols.d_counts[ds:de],
            "g_img": cols.g_img[gs:ge],
            "g_cat": cols.g_cat[gs:ge],
            "g_crowd": cols.g_crowd[gs:ge],
            "g_area": cols.g_area[gs:ge],
            "g_id_nonzero": cols.g_id_nonzero[gs:ge],
            "g_size": cols.g_size[gs:ge],
            "g_geom": cols.g_geom[gs:ge],
        }


def accumulation_tasks(
    cols: _Columns, tp: np.ndarray, fp: np.ndarray, params: Any, *, n_tasks: int
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Split ``COCOeval.accumulate`` by category into about ``n_tasks`` tasks of similar size (payloads
    of :func:`instaseg.evaluation.cocoworker.accumulate_categories`): ``tp``/``fp`` bool (n_dets, A, T)
    are in ``cols``' detection order; each task gets its categories' rows in COCOeval's score order.
    Also returns ``npig`` (K, A), the non-ignored ground truth per category and area range."""
    n_k, n_a = cols.n_cats, len(params.areaRng)
    area_rng = np.asarray(params.areaRng, dtype=np.float64)
    g_ignore = (
        (cols.g_crowd[:, None] != 0)
        | (cols.g_area[:, None] < area_rng[:, 0])
        | (cols.g_area[:, None] > area_rng[:, 1])
    )
    npig = np.zeros((n_k, n_a), dtype=np.int64)
    np.add.at(npig, cols.g_cat, (~g_ignore).astype(np.int64))
    # COCOeval's order: score descending; ties by image (sorted ids), then rank within the image
    order = np.lexsort((cols.d_rank, cols.d_img, -cols.d_score, cols.d_cat))
    bounds = np.searchsorted(cols.d_cat[order], np.arange(n_k + 1))
    cats = [k for k in range(n_k) if npig[k].any()]  # others stay -1
    sizes = np.diff(bounds)
    groups: list[list[int]] = [[] for _ in range(max(1, min(n_tasks, len(cats))))]
    load = np.zeros(len(groups))
    for k in sorted(cats, key=lambda k: -sizes[k]):  # largest first onto the lightest task
        j = int(np.argmin(load))
        groups[j].append(k)
        load[j] += sizes[k] + 1
    tasks = []
    for group in groups:
        if not group:
            continue
        idx = [order[bounds[k] : bounds[k + 1]] for k in group]
        tasks.append(
            {
                "kind": "accumulate",
                "cats": group,
                "tp": [tp[i] for i in idx],
                "fp": [fp[i] for i in idx],
                "rank": [cols.d_rank[i] for i in idx],
                "npig": npig[group],
                "rec_thrs": np.asarray(params.recThrs),
                "max_dets": list(params.maxDets),
            }
        )
    return tasks, npig


def fill_arrays(
    answers: list[Any], tasks: list[dict[str, Any]], n_k: int, params: Any
) -> tuple[np.ndarray, np.ndarray]:
    """precision (T, R, K, A, M) and recall (T, K, A, M) from the tasks' answers, -1 elsewhere."""
    n_t, n_r, n_a, n_m = len(params.iouThrs), len(params.recThrs), len(params.areaRng), len(params.maxDets)
    precision = -np.ones((n_t, n_r, n_k, n_a, n_m))
    recall = -np.ones((n_t, n_k, n_a, n_m))
    for task, (prec, rec) in zip(tasks, answers, strict=True):
        precision[:, :, task["cats"]] = prec
        recall[:, task["cats"]] = rec
    return precision, recall


def summarize(iou_type: str, precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """The 12 stats from the arrays, by pycocotools' own ``COCOeval.summarize`` (quietly)."""
    ev = COCOeval(iouType=iou_type)
    ev.eval = {"precision": precision, "recall": recall}
    with contextlib.redirect_stdout(io.StringIO()):
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64)
