"""COCO metrics: exact equality with pycocotools on real data, the evaluator's process/evaluate cycle,
results conversion and the empty-results convention."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from instaseg.errors import DataError
from instaseg.evaluation.coco import (
    STAT_NAMES,
    COCOEvaluator,
    evaluate_results,
    load_coco_gt,
    load_detections,
    outputs_to_results,
    run_coco_eval,
)
from instaseg.structures.masks import rle_decode

from .helpers import (
    box_mask,
    det_from_mask,
    perturbed_detections,
    predictor_style_results,
    pycocotools_eval,
    tiny_gt,
)


@pytest.fixture(scope="module")
def coco_tiny_val(shared_data):
    return json.loads((shared_data / "coco_tiny/annotations/instances_val2017.json").read_text())


@pytest.fixture(scope="module")
def coco_tiny_dets(coco_tiny_val):
    return perturbed_detections(coco_tiny_val, seed=1)


def _without(results, key):
    return [{k: v for k, v in r.items() if k != key} for r in results]


@pytest.fixture(scope="module")
def result_sets(coco_tiny_val, coco_tiny_dets):
    """(a) Detectron2-style results with bbox, (b) the same without bbox, (c) what the predictor writes."""
    return {
        "with_bbox": coco_tiny_dets,
        "without_bbox": _without(coco_tiny_dets, "bbox"),
        "predictor": predictor_style_results(coco_tiny_val, seed=2),
    }


@pytest.mark.data
@pytest.mark.parametrize("backend", ["instaseg", "faster", "pycocotools"])
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("case", ["with_bbox", "without_bbox", "predictor"])
def test_equals_pycocotools_on_coco_tiny(coco_tiny_val, result_sets, case, iou_type, backend):
    results = result_sets[case]
    ref = pycocotools_eval(coco_tiny_val, results, iou_type)
    ours = run_coco_eval(coco_tiny_val, results, iou_type, backend=backend)
    assert list(ours.stats) == list(STAT_NAMES)
    assert 0.05 < ref.stats[0] < 0.95  # a mixed case, not a trivial 0 or 1
    for name, expected in zip(STAT_NAMES, ref.stats, strict=True):
        assert ours.stats[name] == pytest.approx(float(expected), abs=1e-9), name
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], atol=1e-9, rtol=0)


@pytest.mark.data
def test_box_areas_decide_size_ranges_when_results_carry_boxes(coco_tiny_val, result_sets):
    """The same masks, with and without ``bbox``: only the small/medium/large stats move (detection
    areas are box areas in one case, mask areas in the other), as in pycocotools."""
    with_box = run_coco_eval(coco_tiny_val, result_sets["with_bbox"], "segm").stats
    without = run_coco_eval(coco_tiny_val, result_sets["without_bbox"], "segm").stats
    for name in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
        assert with_box[name] == pytest.approx(without[name], abs=1e-12), name
    assert any(abs(with_box[n] - without[n]) > 1e-3 for n in ("APs", "APm", "APl"))


def test_load_detections_follows_load_res():
    a, b = box_mask(40, 50, 2, 2, 20, 20), box_mask(40, 50, 25, 10, 45, 35)
    gt = tiny_gt([[(a, 1), (b, 1)]], cat_ids=[1])
    da, db = det_from_mask(a, 1, 1, 0.9), det_from_mask(b, 1, 1, 0.8)
    da["bbox"] = [1.0, 1.0, 10.0, 5.0]  # deliberately not the mask's box
    # the first result has a box: every area is w * h; a box-only result gets its corner polygon
    box_only = {"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [0, 0, 4, 3]}
    dets = load_detections(gt, [da, db, box_only])
    assert [d["area"] for d in dets] == [50.0, db["bbox"][2] * db["bbox"][3], 12]
    assert [d["id"] for d in dets] == [1, 2, 3] and all(d["iscrowd"] == 0 for d in dets)
    assert dets[0]["bbox"] == [1.0, 1.0, 10.0, 5.0]
    assert rle_decode(dets[2]["segmentation"]).sum() == 12  # the 4 x 3 box's polygon
    # the first result has no box: every area is the mask's pixel count, boxes come from masks
    dets = load_detections(gt, [{k: v for k, v in da.items() if k != "bbox"}, da])
    assert [d["area"] for d in dets] == [float(a.sum())] * 2
    assert dets[0]["bbox"] == [2.0, 2.0, 18.0, 18.0] and dets[1]["bbox"] == [1.0, 1.0, 10.0, 5.0]
    assert "segmentation" not in load_detections(gt, [da], with_masks=False)[0]
    with pytest.raises(ValueError, match="result 1 has neither"):
        load_detections(gt, [da, {"image_id": 1, "category_id": 1, "score": 0.1}])
    with pytest.raises(ValueError, match="image ids not in the ground truth"):
        load_detections(gt, [{**da, "image_id": 9}])


def _perfect_outputs(masks, labels, score=0.9):
    m = torch.as_tensor(np.stack(masks))
    boxes = []
    for mk in masks:
        ys, xs = np.nonzero(mk)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor(labels),
        "scores": torch.full((len(masks),), score),
        "masks": m[:, None].float() * 0.8,  # probabilities above the 0.5 threshold
    }


def test_evaluator_maps_labels_to_original_category_ids():
    a, b = box_mask(40, 50, 2, 2, 20, 20), box_mask(40, 50, 25, 10, 45, 35)
    gt = tiny_gt([[(a, 3), (b, 7)], [(b, 7)]], cat_ids=[3, 7])
    ev = COCOEvaluator(gt)
    assert ev.category_ids == [0, 3, 7]
    ev.process([{"image_id": 1}], [_perfect_outputs([a, b], [1, 2])])
    ev.process([{"image_id": 2}], [_perfect_outputs([b], [2])])
    assert {r["category_id"] for r in ev.results} == {3, 7}
    metrics = ev.evaluate()
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["per_class"]["class7"]["segm"]["AP"] == pytest.approx(1.0)
    # swapped labels: every detection has the wrong class
    ev.reset()
    ev.process([{"image_id": 1}], [_perfect_outputs([a, b], [2, 1])])
    assert ev.evaluate()["segm"]["AP"] == pytest.approx(0.0)


def test_evaluator_rescales_outputs_to_gt_size():
    a = box_mask(40, 60, 10, 10, 30, 30)
    gt = tiny_gt([[(a, 1)]], cat_ids=[1])
    small = box_mask(20, 30, 5, 5, 15, 15)  # the same object predicted on a half-size input
    ev = COCOEvaluator(gt)
    ev.process([{"image_id": 1}], [_perfect_outputs([small], [1])])
    res = ev.results[0]
    assert res["segmentation"]["size"] == [40, 60]
    assert res["bbox"] == pytest.approx([10, 10, 20, 20])
    assert ev.evaluate()["segm"]["AP"] == pytest.approx(1.0)


def test_outputs_to_results_fields_and_threshold():
    a = box_mask(16, 16, 1, 2, 9, 12)
    out = _perfect_outputs([a, a], [1, 1])
    out["scores"] = torch.tensor([0.9, 0.2])
    out["masks"] = torch.as_tensor(np.stack([a, a]))  # (K, H, W) bool form
    res = outputs_to_results([out], [5], [0, 42], score_thresh=0.5)
    assert len(res) == 1
    r = res[0]
    assert r["image_id"] == 5 and r["category_id"] == 42 and r["score"] == pytest.approx(0.9)
    assert r["bbox"] == pytest.approx([1, 2, 8, 10])
    assert isinstance(r["segmentation"]["counts"], str)
    assert (rle_decode(r["segmentation"]) == a).all()
    json.dumps(res)
    with pytest.raises(ValueError, match="label 3"):
        outputs_to_results([{**out, "labels": torch.tensor([3, 1])}], [5], [0, 42])


@pytest.mark.parametrize("backend", ["instaseg", "faster", "pycocotools"])
def test_empty_results_give_zero_where_gt_exists(backend):
    a = box_mask(40, 50, 2, 2, 20, 20)  # 324 px: "small" only
    gt = tiny_gt([[(a, 1)]], cat_ids=[1, 2])
    metrics = evaluate_results(gt, [], backend=backend)
    for iou_type in ("segm", "bbox"):
        stats = metrics[iou_type]
        assert list(stats) == list(STAT_NAMES)
        assert stats["AP"] == 0.0 and stats["APs"] == 0.0 and stats["AR100"] == 0.0
        assert stats["APm"] == -1.0 and stats["APl"] == -1.0  # no GT in those area ranges
    assert metrics["per_class"]["class1"]["segm"]["AP"] == 0.0
    assert metrics["per_class"]["class2"]["segm"]["AP"] == -1.0  # no GT of this class


def test_load_coco_gt_errors(tmp_path):
    bad = tmp_path / "gt.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="gt.json: malformed JSON"):
        load_coco_gt(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="gt.json: COCO ground truth has no 'annotations'"):
        load_coco_gt(bad)
    with pytest.raises(DataError, match="missing.json: file not found"):
        load_coco_gt(tmp_path / "missing.json")


def test_evaluator_accepts_an_instance_dataset():
    from instaseg.data.build import build_dataset

    dataset = build_dataset("shapes:3:64")
    ev = COCOEvaluator(dataset)
    for i in range(len(dataset)):
        _, target = dataset[i]
        out = {"boxes": target["boxes"], "labels": target["labels"],
               "scores": torch.full((len(target["labels"]),), 0.9), "masks": target["masks"][:, None].float()}
        ev.process([target], [out])
    assert ev.category_ids == list(dataset.category_ids)
    metrics = ev.evaluate()
    assert metrics["segm"]["AP"] == pytest.approx(1.0) and metrics["bbox"]["AP"] == pytest.approx(1.0)


@pytest.mark.data
@pytest.mark.parametrize("case", ["with_bbox", "without_bbox", "predictor"])
def test_cli_predictions_on_coco_tiny_match_pycocotools(
    coco_tiny_val, result_sets, shared_data, tmp_path, case
):
    from instaseg.cli import main

    res = tmp_path / "results.json"
    res.write_text(json.dumps(result_sets[case]))
    ann = shared_data / "coco_tiny/annotations/instances_val2017.json"
    code = main(["evaluate", "--predictions", str(res), "--data", str(ann), "--output", str(tmp_path / "o"),
                 "--no-analysis", "--no-figures"])
    assert code == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    for iou_type in ("segm", "bbox"):
        ref = pycocotools_eval(coco_tiny_val, result_sets[case], iou_type).stats
        for name, expected in zip(STAT_NAMES, ref, strict=True):
            assert metrics[iou_type][name] == pytest.approx(float(expected), abs=1e-9), (iou_type, name)


@pytest.mark.parametrize("backend", ["instaseg", "faster", "pycocotools"])
def test_mask_only_results_get_boxes_for_bbox_eval(backend):
    a, b = box_mask(40, 50, 2, 2, 20, 20), box_mask(40, 50, 25, 10, 45, 35)
    gt = tiny_gt([[(a, 1), (b, 1)]], cat_ids=[1])
    mask_only = [{k: v for k, v in det_from_mask(m, 1, 1, s).items() if k != "bbox"}
                 for m, s in ((a, 0.9), (b, 0.8))]
    box_only = [{k: v for k, v in det_from_mask(b, 1, 1, 0.7).items() if k != "segmentation"}]
    ev = run_coco_eval(gt, mask_only + box_only, "bbox", backend=backend)
    assert ev.stats["AP"] == pytest.approx(1.0)  # the duplicate box ranks last
    assert run_coco_eval(gt, mask_only + box_only, "segm", backend=backend).stats["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("backend", ["instaseg", "instaseg-2-workers", "faster", "pycocotools"])
@pytest.mark.parametrize("with_bbox", [True, False])
def test_ignore_flags_crowd_ties_and_max_dets_equal_pycocotools(backend, with_bbox):
    """GT ``ignore`` flags (COCO replaces them by ``iscrowd``), a crowd region, tied scores, more than
    100 detections on one image (maxDets), a category without GT and objects in every size range."""
    rng = np.random.default_rng(5)
    h, w = 240, 320
    objs = [(box_mask(h, w, 10, 10, 20, 22), 1), (box_mask(h, w, 40, 30, 100, 90), 1),
            (box_mask(h, w, 120, 20, 300, 200), 2), (box_mask(h, w, 5, 150, 60, 230), 2),
            (box_mask(h, w, 200, 210, 215, 225), 1)]
    gt = tiny_gt([objs, objs[:2]], cat_ids=[1, 2, 3])
    gt["annotations"][1]["ignore"] = 1  # not crowd: COCO still counts it
    gt["annotations"][3]["iscrowd"] = 1
    gt["annotations"][3]["ignore"] = 0  # crowd: COCO ignores it anyway
    results = []
    for image_id, n in ((1, 160), (2, 30)):
        for _ in range(n):
            mask, cat = objs[int(rng.integers(len(objs)))]
            m = np.roll(mask, tuple(int(v) for v in rng.integers(-6, 7, size=2)), axis=(0, 1))
            if rng.random() < 0.3:
                m = m & (rng.random(m.shape) > 0.3)
            score = float(rng.choice([0.3, 0.5, 0.9]))  # many ties
            det = det_from_mask(m, image_id, int(rng.choice([cat, cat, 3])), score)
            if not with_bbox:
                del det["bbox"]
            results.append(det)
    for iou_type in ("segm", "bbox"):
        ref = pycocotools_eval(gt, results, iou_type)
        assert 0.05 < ref.stats[0] < 0.95
        if backend == "instaseg-2-workers":
            ours = run_coco_eval(gt, results, iou_type, backend="instaseg", workers=2)
            assert ours.workers == 2
        else:
            ours = run_coco_eval(gt, results, iou_type, backend=backend)
        for name, expected in zip(STAT_NAMES, ref.stats, strict=True):
            assert ours.stats[name] == pytest.approx(float(expected), abs=1e-9), (iou_type, name)
        np.testing.assert_allclose(ours.precision, ref.eval["precision"], atol=1e-9, rtol=0)
