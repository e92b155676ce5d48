"""COCO instance metrics (segm and bbox) on RLE, with an exact, fast backend.

:class:`COCOEvaluator` follows Detectron2's ``reset`` / ``process`` / ``evaluate`` pattern. ``process``
turns each batch of model outputs into COCO results at once (masks thresholded at 0.5 and run-length
encoded), so a whole dataset is held as compressed RLE, never as full-resolution float masks.

Metric values are on a 0-1 scale, in pycocotools' ``stats`` order (:data:`STAT_NAMES`). As in
pycocotools, a stat is ``-1.0`` when it is undefined because no ground truth falls in its category/area
range; with ground truth but no detections at all, it is ``0.0``.

Semantics are pycocotools' exactly: results are completed as ``COCO.loadRes`` completes them
(:func:`load_detections`; notably a detection's area, which puts it in the small/medium/large range, is
its ``bbox`` ``w * h`` whenever the results carry boxes, for "segm" too), the ground truth is used as
given (its ``area`` fields, ``iscrowd`` as the ignore flag), with COCO's default parameters.

Backends: ``"instaseg"`` (:mod:`instaseg.evaluation.cocoengine`: our own engine; IoU and matching per
chunk of images and accumulation per category in ``workers`` processes, pycocotools' C IoU routine and
its ``summarize``), ``"faster"`` (faster-coco-eval, C++ matching and accumulation, fed the detections of
:func:`load_detections`) and ``"pycocotools"`` (the reference's ``COCOeval``, fed the same). The engine's
``precision``, ``recall`` and stats are bit-identical to pycocotools' ``loadRes`` + ``COCOeval``; the
other two equal them to float rounding (~1e-16). tests/evaluation/test_coco.py and test_cocoengine.py
check this on real COCO ground truth, with and without result boxes. ``"auto"`` is the engine, with 2
worker processes from :data:`~instaseg.evaluation.cocoengine.PARALLEL_MIN_RESULTS` results on (see
:func:`~instaseg.evaluation.cocoengine.auto_workers`); benchmarks/bench_eval.py measures it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.errors import DataError
from instaseg.evaluation.cocoengine import auto_workers
from instaseg.evaluation.cocoengine import evaluate as engine_evaluate
from instaseg.structures.masks import encode_masks, rle_areas, rle_boxes, to_rle, xywh_to_polygon

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("segm", "bbox")
BACKENDS = ("auto", "instaseg", "faster", "pycocotools")


def load_coco_gt(gt: Any) -> dict[str, Any]:
    """A COCO ground-truth dict from an :class:`~instaseg.data.base.InstanceDataset`, a COCO dict
    (returned as is; nothing here mutates it) or a path to a COCO JSON file."""
    if isinstance(gt, dict):
        data = gt
    elif isinstance(gt, str | Path):
        from instaseg.data.io import read_json

        data = read_json(gt)
        if not isinstance(data, dict):
            raise DataError(gt, "a COCO ground-truth file must hold a JSON object")
    elif hasattr(gt, "load_record") and hasattr(gt, "category_ids"):
        from instaseg.data.coco import dataset_to_coco

        data = dataset_to_coco(gt)
    else:
        raise TypeError(f"ground truth must be an InstanceDataset, a COCO dict or a path, not {type(gt)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            source = None if isinstance(gt, dict) else str(gt)
            raise DataError(source, f"COCO ground truth has no {key!r} list")
    return data


def outputs_to_results(
    outputs: Sequence[dict[str, Any]],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    score_thresh: float = 0.0,
) -> list[dict[str, Any]]:
    """Convert model eval outputs to COCO results entries.

    ``outputs[i]``: ``boxes`` (K, 4) XYXY pixels, ``labels`` (K,) contiguous ids 1..C, ``scores`` (K,),
    optional ``masks`` (K, 1, H, W) probabilities (thresholded at 0.5) or (K, H, W) bool; tensors or
    arrays. ``category_ids[label]`` is the original COCO category id. Returns one dict per kept detection:
    ``{"image_id", "category_id", "bbox" [x, y, w, h], "score", "segmentation" (RLE, str counts)}``.
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs but {len(image_ids)} image ids")
    results: list[dict[str, Any]] = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        scores = _to_numpy(out["scores"]).astype(np.float64).reshape(-1)
        keep = np.nonzero(scores >= score_thresh)[0]
        if keep.size == 0:
            continue
        boxes = _to_numpy(out["boxes"]).astype(np.float64).reshape(-1, 4)[keep]
        labels = _to_numpy(out["labels"]).astype(np.int64).reshape(-1)[keep]
        rles: list[dict[str, Any]] | None = None
        if out.get("masks") is not None:
            masks = _binary_masks(out["masks"], keep)
            rles = [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in encode_masks(masks)]
        for j in range(keep.size):
            label = int(labels[j])
            if not 0 < label < len(category_ids):
                raise ValueError(f"label {label} is outside 1..{len(category_ids) - 1}")
            x1, y1, x2, y2 = boxes[j].tolist()
            entry = {
                "image_id": int(image_id),
                "category_id": int(category_ids[label]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(scores[keep[j]]),
            }
            if rles is not None:
                entry["segmentation"] = rles[j]
            results.append(entry)
    return results


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _binary_masks(masks: Any, keep: np.ndarray) -> np.ndarray:
    """(K, 1, H, W) probabilities or (K, H, W) bool -> uint8 (len(keep), H, W), thresholded at 0.5."""
    if hasattr(masks, "detach"):
        import torch

        sel = masks.detach()[torch.as_tensor(keep, dtype=torch.long, device=masks.device)]
        if sel.ndim == 4:
            sel = sel[:, 0]
        binary = sel > 0.5 if sel.dtype != torch.bool else sel
        return binary.to(torch.uint8).cpu().numpy()
    arr = np.asarray(masks)[keep]
    if arr.ndim == 4:
        arr = arr[:, 0]
    return (arr > 0.5 if arr.dtype != bool else arr).astype(np.uint8)


@dataclass
class CocoEval:
    """One finished COCO evaluation: the 12 ``stats`` and the accumulated arrays.

    ``precision`` is pycocotools' ``eval["precision"]``: (T iou thresholds, R=101 recall points,
    K categories, A=4 area ranges [all, small, medium, large], M=3 max-dets [1, 10, 100]), -1 where
    undefined; ``recall`` is (T, K, A, M); ``cat_ids`` orders the K axis. ``backend`` is the one that
    computed it ("instaseg", "faster" or "pycocotools") and ``workers`` the processes it used.
    """

    iou_type: str
    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    cat_ids: list[int]
    iou_thresholds: np.ndarray
    backend: str = ""
    workers: int = 1


def run_coco_eval(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    iou_type: str,
    *,
    backend: str = "auto",
    workers: int | None = None,
) -> CocoEval:
    """Evaluate ``results`` (COCO results entries) against COCO ground-truth dict ``gt`` for
    ``iou_type`` ("segm" or "bbox"), with pycocotools' semantics exactly. Neither argument is modified.

    The results are completed as pycocotools' ``COCO.loadRes`` completes them (see
    :func:`load_detections`): in particular a detection's ``area``, which decides its small/medium/large
    range, is its box's ``w * h`` when the results carry ``bbox`` (also for "segm"), and its mask's
    pixel count only when they do not. All backends evaluate the same completed detections.
    ``workers`` (backends "auto"/"instaseg" only): processes for IoU, matching and accumulation; by
    default :func:`~instaseg.evaluation.cocoengine.auto_workers` of the number of results.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("auto", "instaseg"):
        n_workers = auto_workers(len(results)) if workers is None else int(workers)
        if n_workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        res = engine_evaluate(gt, results, iou_type, workers=n_workers)
        return CocoEval(
            iou_type=iou_type,
            stats={name: float(v) for name, v in zip(STAT_NAMES, res.stats, strict=True)},
            precision=res.precision,
            recall=res.recall,
            cat_ids=[int(c) for c in sorted({int(c["id"]) for c in gt["categories"]})],
            iou_thresholds=np.asarray(res.params.iouThrs),
            backend="instaseg",
            workers=n_workers,
        )
    coco_cls, eval_cls = _backend_classes(backend)
    dets = load_detections(gt, results, with_masks=iou_type == "segm")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _make_coco(coco_cls, _fresh(gt))
        cats = [dict(c) for c in gt["categories"]]
        dt_data = {"images": list(gt["images"]), "categories": cats, "annotations": dets}
        coco_dt = _make_coco(coco_cls, dt_data)
        evaluator = eval_cls(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats, strict=True)}
    return CocoEval(
        iou_type=iou_type,
        stats=stats,
        precision=np.asarray(evaluator.eval["precision"]),
        recall=np.asarray(evaluator.eval["recall"]),
        cat_ids=[int(c) for c in evaluator.params.catIds],
        iou_thresholds=np.asarray(evaluator.params.iouThrs),
        backend=backend,
    )


def load_detections(
    gt: dict[str, Any], results: list[dict[str, Any]], *, with_masks: bool = True
) -> list[dict[str, Any]]:
    """New detection annotations, completed from ``results`` as pycocotools' ``COCO.loadRes`` does it
    (one pass, with areas and boxes computed in a few C calls instead of one call per result).

    Like ``loadRes``, the first result decides for all of them: when it has a (non-empty) ``bbox``,
    every detection's ``area`` is its box ``w * h`` and a result without ``segmentation`` gets the box's
    corner polygon as its mask; otherwise every ``area`` is the mask's pixel count and a result without
    ``bbox`` gets the mask's tight box. Each gets ``id`` 1.. (in order) and ``iscrowd`` 0; ``score``,
    ``image_id`` and ``category_id`` are kept as they are. Where ``loadRes`` would fail on a result
    (the first has a ``bbox`` and this one has none, or the first has none and this one has no
    ``segmentation``) the missing part is derived from the other one, as above.

    Returns dicts with ``image_id``, ``category_id``, ``score``, ``bbox`` [x, y, w, h], ``area``, ``id``,
    ``iscrowd`` and, with ``with_masks``, ``segmentation`` as a compressed RLE. Raises ValueError for a
    result with neither ``bbox`` nor ``segmentation`` or an image id that is not in ``gt``.
    """
    if not results:
        return []
    sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in gt["images"]}
    unknown = {r["image_id"] for r in results} - set(sizes)
    if unknown:
        raise ValueError(f"results refer to image ids not in the ground truth: {sorted(unknown)[:5]}")
    boxes = [_box_of(r) for r in results]
    by_box = boxes[0] is not None
    segs = [r.get("segmentation") for r in results]
    for i, (box, seg) in enumerate(zip(boxes, segs, strict=True)):
        if box is None and seg is None:
            raise ValueError(f"result {i} has neither 'bbox' nor 'segmentation'")
    # masks are needed for segm, for the areas when the first result has no box, and for missing boxes
    rles: list[Any] = [None] * len(results)
    for i, r in enumerate(results):
        if with_masks or not by_box or boxes[i] is None:
            geometry = segs[i] if segs[i] is not None else xywh_to_polygon(boxes[i])
            rles[i] = to_rle(geometry, *sizes[r["image_id"]])
    missing_box = [i for i, b in enumerate(boxes) if b is None]
    for i, b in zip(missing_box, rle_boxes([rles[i] for i in missing_box]).tolist(), strict=True):
        boxes[i] = b
    areas = [b[2] * b[3] for b in boxes] if by_box else rle_areas(rles).tolist()
    out = []
    for i, r in enumerate(results):
        det = {"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
               "bbox": boxes[i], "area": areas[i], "id": i + 1, "iscrowd": 0}
        if with_masks:
            det["segmentation"] = rles[i]
        out.append(det)
    return out


def _box_of(result: dict[str, Any]) -> list[float] | None:
    """A result's ``bbox`` as a list, or None when it has none (missing, None or ``[]``, which
    ``loadRes`` also treats as no box)."""
    box = result.get("bbox")
    if box is None or len(box) == 0:
        return None
    return list(box)


def _backend_classes(backend: str) -> tuple[type, type]:
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    from faster_coco_eval import COCO, COCOeval_faster

    return COCO, COCOeval_faster


def _fresh(data: dict[str, Any]) -> dict[str, Any]:
    """Copy deep enough that COCO tools (which replace annotation fields in place) leave ``data`` alone."""
    return {**data, "annotations": [dict(a) for a in data["annotations"]]}


def _make_coco(coco_cls: type, data: dict[str, Any]) -> Any:
    coco = coco_cls()
    coco.dataset = data
    coco.createIndex()
    return coco


def per_class_ap(ev: CocoEval) -> dict[int, dict[str, float]]:
    """Per-category ``{"AP", "AP50", "AP75"}`` (area "all", 100 dets) from ``ev.precision``, keyed by
    category id; -1.0 for a category without ground truth (pycocotools' convention)."""
    out: dict[int, dict[str, float]] = {}
    thrs = ev.iou_thresholds
    for k, cat in enumerate(ev.cat_ids):
        prec = ev.precision[:, :, k, 0, -1]
        row = {}
        sels = (("AP", slice(None)), ("AP50", _thr_index(thrs, 0.5)), ("AP75", _thr_index(thrs, 0.75)))
        for name, sel in sels:
            p = prec[sel]
            p = p[p > -1]
            row[name] = float(p.mean()) if p.size else -1.0
        out[cat] = row
    return out


def _thr_index(thrs: np.ndarray, value: float) -> int:
    return int(np.argmin(np.abs(thrs - value)))


def evaluate_results(
    gt: Any,
    results: list[dict[str, Any]],
    *,
    iou_types: Iterable[str] = IOU_TYPES,
    backend: str = "auto",
    return_evals: bool = False,
    workers: int | None = None,
) -> dict[str, Any] | tuple[dict[str, Any], dict[str, CocoEval]]:
    """COCO metrics of ``results`` against ``gt`` (dataset, COCO dict or path).

    Returns ``{"segm": {12 stats}, "bbox": {12 stats}, "per_class": {name: {"category_id",
    "segm": {AP, AP50, AP75}, "bbox": {...}}}}``; with ``return_evals`` also the :class:`CocoEval`
    objects by iou type (for PR curves and the dashboard). ``backend`` and ``workers``: see
    :func:`run_coco_eval`.
    """
    gt_dict = load_coco_gt(gt)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt_dict["categories"]}
    metrics: dict[str, Any] = {}
    evals: dict[str, CocoEval] = {}
    per_class: dict[str, dict[str, Any]] = {}
    for iou_type in iou_types:
        ev = run_coco_eval(gt_dict, results, iou_type, backend=backend, workers=workers)
        evals[iou_type] = ev
        metrics[iou_type] = ev.stats
        for cat, row in per_class_ap(ev).items():
            entry = per_class.setdefault(names.get(cat, str(cat)), {"category_id": cat})
            entry[iou_type] = row
    metrics["per_class"] = per_class
    return (metrics, evals) if return_evals else metrics


class COCOEvaluator:
    """Accumulate model outputs over a dataset and compute COCO segm/bbox metrics.

    ``gt``: an InstanceDataset (converted with :func:`instaseg.data.coco.dataset_to_coco`), a COCO
    ground-truth dict or a path. ``category_ids[label]`` maps contiguous labels to COCO category ids;
    by default the dataset's, or the sorted GT category ids for a dict (label 1 = smallest id).

    Outputs whose masks are not at the GT image size (a resizing eval transform) are rescaled to it
    before encoding: boxes by the size ratio, mask probabilities bilinearly.

    ``backend`` and ``workers`` are passed to :func:`run_coco_eval` (by default the engine of
    :mod:`instaseg.evaluation.cocoengine`, in 2 worker processes for large result sets).
    """

    def __init__(
        self,
        gt: Any,
        *,
        category_ids: Sequence[int] | None = None,
        iou_types: Iterable[str] = IOU_TYPES,
        score_thresh: float = 0.0,
        backend: str = "auto",
        workers: int | None = None,
    ) -> None:
        self.gt = load_coco_gt(gt)
        if category_ids is None:
            category_ids = getattr(gt, "category_ids", None)
        if category_ids is None:
            category_ids = [0] + sorted(int(c["id"]) for c in self.gt["categories"])
        self.category_ids = [int(c) for c in category_ids]
        self.iou_types = tuple(iou_types)
        self.score_thresh = score_thresh
        self.backend = backend
        self.workers = workers
        self._sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in self.gt["images"]}
        self._results: list[dict[str, Any]] = []
        self.last_evals: dict[str, CocoEval] = {}

    def reset(self) -> None:
        """Forget the outputs processed so far."""
        self._results = []

    @property
    def results(self) -> list[dict[str, Any]]:
        """The COCO results accumulated so far (JSON-ready)."""
        return self._results

    def process(self, targets: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
        """Add one batch: ``targets[i]["image_id"]`` identifies ``outputs[i]``."""
        image_ids = [int(t["image_id"]) for t in targets]
        fitted = [self._fit_to_image(o, i) for o, i in zip(outputs, image_ids, strict=True)]
        self._results.extend(
            outputs_to_results(fitted, image_ids, self.category_ids, score_thresh=self.score_thresh)
        )

    def _fit_to_image(self, out: dict[str, Any], image_id: int) -> dict[str, Any]:
        size = self._sizes.get(image_id)
        masks = out.get("masks")
        if size is None or masks is None or tuple(masks.shape[-2:]) == size:
            return out
        import torch
        import torch.nn.functional as F

        h, w = masks.shape[-2:]
        m = torch.as_tensor(masks)
        m = m.float() if m.ndim == 4 else m[:, None].float()
        if m.shape[0]:
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        else:
            m = m.new_zeros((0, 1, *size))
        scale = torch.tensor([size[1] / w, size[0] / h, size[1] / w, size[0] / h])
        boxes = torch.as_tensor(out["boxes"]).float().cpu() * scale
        return {**out, "masks": m, "boxes": boxes}

    def evaluate(self) -> dict[str, Any]:
        """Metrics of everything processed since the last :meth:`reset` (see :func:`evaluate_results`)."""
        metrics, evals = evaluate_results(
            self.gt, self._results, iou_types=self.iou_types, backend=self.backend, return_evals=True,
            workers=self.workers,
        )
        self.last_evals = evals
        return metrics
