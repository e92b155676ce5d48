"""instaseg's COCO engine: its worker processes give exactly what one process gives (and what
pycocotools gives), COCOEvaluator and evaluate_results use it, and its edge cases follow COCOeval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from instaseg.evaluation import cocoengine
from instaseg.evaluation.coco import STAT_NAMES, COCOEvaluator, evaluate_results, run_coco_eval

from .helpers import (
    box_mask,
    det_from_mask,
    perturbed_detections,
    predictor_style_results,
    pycocotools_eval,
    tiny_gt,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def coco_tiny_val(shared_data):
    return json.loads((shared_data / "coco_tiny/annotations/instances_val2017.json").read_text())


@pytest.fixture(scope="module")
def result_sets(coco_tiny_val):
    dets = perturbed_detections(coco_tiny_val, seed=3)
    return {
        "with_bbox": dets,
        "without_bbox": [{k: v for k, v in r.items() if k != "bbox"} for r in dets],
        "predictor": predictor_style_results(coco_tiny_val, seed=4),
    }


def _assert_same(a, b):
    assert a.stats == b.stats
    assert np.array_equal(a.precision, b.precision)
    assert np.array_equal(a.recall, b.recall)
    assert a.cat_ids == b.cat_ids


@pytest.mark.data
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("case", ["with_bbox", "without_bbox", "predictor"])
def test_workers_give_what_one_process_and_pycocotools_give(coco_tiny_val, result_sets, case, iou_type):
    results = result_sets[case]
    serial = run_coco_eval(coco_tiny_val, results, iou_type, backend="instaseg", workers=1)
    parallel = run_coco_eval(coco_tiny_val, results, iou_type, backend="instaseg", workers=2)
    assert (serial.workers, parallel.workers) == (1, 2)
    _assert_same(serial, parallel)
    ref = pycocotools_eval(coco_tiny_val, results, iou_type)
    assert 0.05 < ref.stats[0] < 0.95
    # not merely close: the same values, bit for bit
    assert [parallel.stats[n] for n in STAT_NAMES] == [float(v) for v in ref.stats]
    assert np.array_equal(parallel.precision, ref.eval["precision"])
    assert np.array_equal(parallel.recall, ref.eval["recall"])


@pytest.mark.data
def test_coco_evaluator_uses_the_engine_with_workers(coco_tiny_val, monkeypatch):
    """COCOEvaluator -> evaluate_results -> the engine, in worker processes when asked (and by default
    for large result sets); the metrics equal the single-process ones."""
    outputs, targets = [], []
    rng = np.random.default_rng(0)
    for im in coco_tiny_val["images"][:20]:
        h, w = im["height"], im["width"]
        masks = np.zeros((6, h, w), dtype=bool)
        boxes = []
        for j in range(6):
            x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
            masks[j, y0:y1, x0:x1] = True
            boxes.append([x0, y0, x1, y1])
        outputs.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.as_tensor(rng.integers(1, 11, size=6)),
                "scores": torch.as_tensor(rng.random(6), dtype=torch.float32),
                "masks": torch.as_tensor(masks),
            }
        )
        targets.append({"image_id": im["id"]})
    evs = {}
    for workers in (1, 2):
        ev = COCOEvaluator(coco_tiny_val, workers=workers)
        ev.process(targets, outputs)
        metrics = ev.evaluate()
        assert {e.backend for e in ev.last_evals.values()} == {"instaseg"}
        assert {e.workers for e in ev.last_evals.values()} == {workers}
        evs[workers] = (metrics, ev.last_evals)
    assert evs[1][0] == evs[2][0]
    for kind in ("segm", "bbox"):
        _assert_same(evs[1][1][kind], evs[2][1][kind])
    # by default the number of workers follows the number of results
    assert COCOEvaluator(coco_tiny_val).workers is None
    monkeypatch.setattr(cocoengine, "PARALLEL_MIN_RESULTS", len(targets) * 6)
    ev = COCOEvaluator(coco_tiny_val)
    ev.process(targets, outputs)
    assert ev.evaluate() == evs[1][0]
    assert {e.workers for e in ev.last_evals.values()} == {min(2, len(os.sched_getaffinity(0)))}
    monkeypatch.setattr(cocoengine, "PARALLEL_MIN_RESULTS", len(targets) * 6 + 1)
    assert ev.evaluate() == evs[1][0]
    assert {e.workers for e in ev.last_evals.values()} == {1}
    assert cocoengine.auto_workers(10) == 1
    assert cocoengine.auto_workers(cocoengine.PARALLEL_MIN_RESULTS) == min(2, len(os.sched_getaffinity(0)))


def test_gt_id_zero_and_unknown_categories_follow_cocoeval():
    """COCOeval records a match as the ground truth's id, so a match to an annotation with id 0 reads as
    unmatched; detections of a category that is not in the ground truth are not evaluated."""
    a, b = box_mask(60, 80, 2, 2, 30, 30), box_mask(60, 80, 35, 20, 70, 55)
    gt = tiny_gt([[(a, 1), (b, 2)]], cat_ids=[1, 2])
    gt["annotations"][0]["id"] = 0
    results = [det_from_mask(a, 1, 1, 0.9), det_from_mask(b, 1, 2, 0.8), det_from_mask(b, 1, 5, 0.95)]
    ref = pycocotools_eval(gt, [r for r in results if r["category_id"] != 5], "segm")
    for workers in (1, 2):
        ours = run_coco_eval(gt, results, "segm", backend="instaseg", workers=workers)
        assert [ours.stats[n] for n in STAT_NAMES] == [float(v) for v in ref.stats]
        assert np.array_equal(ours.precision, ref.eval["precision"])
    assert ours.stats["AP"] == pytest.approx(0.5)  # class 1 scores 0 (its only match "has no id")


def test_a_failing_worker_raises_instead_of_hanging():
    a = box_mask(40, 50, 2, 2, 20, 20)
    gt = tiny_gt([[(a, 1)]], cat_ids=[1])
    bad = {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": {"size": [40, 50], "counts": 7}}
    with pytest.raises(RuntimeError, match="COCO evaluation worker failed"):
        run_coco_eval(gt, [bad], "segm", backend="instaseg", workers=2)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_coco_eval(gt, [bad], "segm", workers=0)


def test_workers_start_from_a_script_without_a_main_guard(tmp_path):
    """The workers are plain subprocesses: a caller's script is not re-imported (multiprocessing's
    spawn would run it again in every worker and fail)."""
    script = tmp_path / "evaluate_here.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        sys.path.insert(0, {str(ROOT / "tests" / "evaluation")!r})
        from helpers import box_mask, det_from_mask, tiny_gt
        from instaseg.evaluation.coco import evaluate_results
        a = box_mask(40, 50, 2, 2, 20, 20)
        gt = tiny_gt([[(a, 1)]], cat_ids=[1])
        m = evaluate_results(gt, [det_from_mask(a, 1, 1, 0.9)], workers=2)
        print("AP", round(m["segm"]["AP"], 9), round(m["bbox"]["AP"], 9))
    """)
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "AP 1.0 1.0"


def test_evaluate_results_passes_workers_through():
    a, b = box_mask(40, 50, 2, 2, 20, 20), box_mask(40, 50, 25, 10, 45, 35)
    gt = tiny_gt([[(a, 1), (b, 1)]], cat_ids=[1])
    results = [det_from_mask(a, 1, 1, 0.9), det_from_mask(b, 1, 1, 0.4)]
    metrics, evals = evaluate_results(gt, results, workers=2, return_evals=True)
    assert {e.workers for e in evals.values()} == {2}
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
