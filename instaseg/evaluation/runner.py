"""The ``instaseg evaluate`` pipeline: predictions from a checkpoint or a results file, then every
metric (COCO segm/bbox, per class, PQ, TIDE-style errors, confusion, matched IoU statistics)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instaseg.errors import CheckpointError
from instaseg.evaluation.coco import STAT_NAMES, CocoEval, evaluate_results


class FirstImages:
    """The first ``n`` images of an InstanceDataset, keeping its class metadata and record access."""

    def __init__(self, base: Any, n: int) -> None:
        self.base, self.n = base, min(n, len(base))
        self.class_names, self.category_ids = base.class_names, base.category_ids

    def __len__(self) -> int:
        return self.n

    def _check(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return i

    def __getitem__(self, i: int) -> Any:
        return self.base[self._check(i)]

    def load_record(self, i: int) -> Any:
        return self.base.load_record(self._check(i))

    def image_info(self, i: int) -> dict[str, Any]:
        return self.base.image_info(self._check(i))


@dataclass
class EvalReport:
    """Everything ``instaseg evaluate`` computed; ``metrics`` is what metrics.json holds."""

    metrics: dict[str, Any]
    gt: dict[str, Any]
    results: list[dict[str, Any]]
    evals: dict[str, CocoEval] = field(default_factory=dict)
    errors: dict[str, Any] | None = None
    confusion: tuple[np.ndarray, list[int]] | None = None
    matches: dict[str, np.ndarray] | None = None
    class_names: dict[int, str] = field(default_factory=dict)


def predict_dataset(
    model: Any,
    dataset: Any,
    *,
    label_to_category: list[int],
    gt: dict[str, Any],
    batch_size: int = 2,
    device: str = "cpu",
    score_threshold: float = 0.0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run ``model`` (eval mode) over ``dataset`` batch by batch; each batch's outputs become COCO
    results (RLE) at once, so only one batch of full-size masks is alive at a time."""
    import torch
    from torch.utils.data import DataLoader

    from instaseg.data.base import collate
    from instaseg.evaluation.coco import COCOEvaluator

    evaluator = COCOEvaluator(gt, category_ids=label_to_category, score_threshold=score_threshold)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=0)
    model.eval()
    it: Any = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="predict", unit="batch", file=sys.stderr, leave=False)
    with torch.inference_mode():
        for images, targets in it:
            outputs = model([im.to(device) for im in images])
            evaluator.process(targets, outputs)
    return evaluator.results


def map_labels(meta: dict[str, Any], dataset: Any, where: str) -> list[int]:
    """``result[label]`` = the dataset's category id for the checkpoint's class ``label``: by id when
    the class names agree, else by class name (labels with no same-named category map to -1 and
    their detections are dropped). Raises CheckpointError when no class name is shared."""
    names = list(meta.get("class_names") or [])
    ds_names, ds_ids = list(dataset.class_names), list(dataset.category_ids)
    if not names:
        raise CheckpointError(f"{where}: checkpoint has no class_names; cannot map its labels")
    if names == ds_names:
        return ds_ids
    by_name = dict(zip(ds_names[1:], ds_ids[1:], strict=True))
    mapping = [0] + [by_name.get(n, -1) for n in names[1:]]
    if all(m < 0 for m in mapping[1:]):
        raise CheckpointError(
            f"{where}: the checkpoint's classes ({', '.join(names[1:6])}...) share no name with the "
            f"dataset's ({', '.join(ds_names[1:6])}...)"
        )
    return mapping


def full_report(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    *,
    analysis: bool = True,
    pq_score_threshold: float = 0.5,
) -> EvalReport:
    """Compute metrics.json's ``{"segm", "bbox", "per_class", "pq"}`` and, with ``analysis``, the
    error analysis, confusion matrix and matched-IoU statistics the dashboard draws.

    Results without any segmentation give segm stats of -1 (undefined) and an empty PQ.
    """
    from instaseg.evaluation.errors import tide_errors
    from instaseg.evaluation.metrics import confusion_matrix, match_statistics
    from instaseg.evaluation.panoptic import coco_panoptic_quality

    has_segm = any("segmentation" in r for r in results) or not results
    iou_types = ("segm", "bbox") if has_segm else ("bbox",)
    metrics, evals = evaluate_results(gt, results, iou_types=iou_types, return_evals=True)
    if not has_segm:
        metrics["segm"] = {name: -1.0 for name in STAT_NAMES}
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}
    pq: dict[str, Any] = {"PQ": -1.0, "SQ": -1.0, "RQ": -1.0, "n": 0, "per_class": {}}
    if has_segm:
        raw = coco_panoptic_quality(gt, results, score_threshold=pq_score_threshold)
        pq = {**raw, "per_class": {names.get(c, str(c)): v for c, v in raw["per_class"].items()}}
        pq["score_threshold"] = pq_score_threshold
    ordered = {k: metrics[k] for k in ("segm", "bbox", "per_class")}
    report = EvalReport(metrics={**ordered, "pq": pq}, gt=gt, results=results, evals=evals, class_names=names)
    if analysis:
        kind = "segm" if has_segm else "bbox"
        report.errors = {"iou_type": kind, **tide_errors(gt, results, iou_type=kind)}
        report.confusion = confusion_matrix(gt, results, iou_type=kind)
        report.matches = match_statistics(gt, results, iou_type=kind)
    return report


def format_table(metrics: dict[str, Any], *, max_classes: int = 30) -> str:
    """The terminal summary: the 12 COCO stats for segm and bbox, PQ, and per-class AP."""
    head = "        " + "".join(f"{n:>7}" for n in STAT_NAMES)
    lines = [head]
    for kind in ("segm", "bbox"):
        if kind in metrics:
            lines.append(f"{kind:<8}" + "".join(_cell(metrics[kind][n]) for n in STAT_NAMES))
    pq = metrics.get("pq") or {}
    if pq.get("n"):
        line = f"PQ {pq['PQ']:.3f}  SQ {pq['SQ']:.3f}  RQ {pq['RQ']:.3f}  over {pq['n']} classes"
        if pq.get("pixel_accuracy", -1) >= 0:
            line += f"; pixel accuracy {pq['pixel_accuracy']:.3f}"
        lines.append(line)
    per_class = metrics.get("per_class") or {}
    rows = [(n, v) for n, v in per_class.items() if v.get("segm", v.get("bbox", {})).get("AP", -1) >= 0]
    if rows:
        lines.append("")
        width = max(len(n) for n, _ in rows[:max_classes])
        lines.append(f"{'class':<{width}}  mask AP   box AP")
        for name, v in rows[:max_classes]:
            seg = v.get("segm", {}).get("AP", -1.0)
            box = v.get("bbox", {}).get("AP", -1.0)
            lines.append(f"{name:<{width}} {_cell(seg, 8)} {_cell(box, 8)}")
        if len(rows) > max_classes:
            lines.append(f"... and {len(rows) - max_classes} more classes (see metrics.json)")
    lines.append("(0-1 scale; -1 = no ground truth in that range)")
    return "\n".join(lines)


def _cell(v: float, width: int = 7) -> str:
    return f"{v:>{width}.3f}" if v >= 0 else f"{'-':>{width}}"
