"""Our PQ equals panopticapi's ``pq_compute`` (the reference) to 1e-9 on the real COCO panoptic and
Cityscapes samples, with the ground truth as prediction and with perturbed predictions written by
:func:`write_coco_panoptic` (which ``pq_compute`` must load as they are)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from panopticapi.evaluation import pq_compute

from instaseg.data.cityscapes_panoptic import CityscapesPanopticDataset, cityscapes_panoptic_categories
from instaseg.data.coco_panoptic import read_coco_panoptic, write_coco_panoptic
from instaseg.evaluation.panoptic import evaluate_panoptic, pq_from_files
from instaseg.structures.panoptic import PanopticResult, PanopticSegment

DATA = os.environ.get("INSTASEG_DATA")
pytestmark = pytest.mark.skipif(not DATA, reason="INSTASEG_DATA (the shared real data) is not set")

Items = list[tuple[dict, PanopticResult]]


def _copy(res: PanopticResult) -> PanopticResult:
    return PanopticResult(res.id_map.copy(), [PanopticSegment(**vars(s)) for s in res.segments])


def _prune(res: PanopticResult) -> PanopticResult:
    """Drop listed segments that no longer have pixels (pq_compute refuses them in a prediction)."""
    present = set(np.unique(res.id_map).tolist())
    res.segments = [s for s in res.segments if s.id in present]
    for s in res.segments:
        s.area = None
    return res


def _new_id(res: PanopticResult) -> int:
    return int(max([s.id for s in res.segments] + [int(res.id_map.max())])) + 1


def shifted(res: PanopticResult, dy: int = 5, dx: int = 9) -> PanopticResult:
    out = _copy(res)
    ids = np.zeros_like(res.id_map)
    ids[dy:, dx:] = res.id_map[: res.id_map.shape[0] - dy, : res.id_map.shape[1] - dx]
    out.id_map = ids
    return _prune(out)


def merged(res: PanopticResult) -> PanopticResult:
    """Pairs of segments of one category become one; the two largest stuff segments merge too."""
    out = _copy(res)
    by_cat: dict[int, list[PanopticSegment]] = {}
    for s in out.segments:
        by_cat.setdefault(s.category_id, []).append(s)
    for segs in by_cat.values():
        for a, b in zip(segs[0::2], segs[1::2], strict=False):
            out.id_map[out.id_map == b.id] = a.id
    stuff = sorted((s for s in out.segments if not s.isthing), key=lambda s: -(out.id_map == s.id).sum())
    if len(stuff) >= 2:
        out.id_map[out.id_map == stuff[1].id] = stuff[0].id
    return _prune(out)


def split(res: PanopticResult) -> PanopticResult:
    """Every segment over 1000 px loses its right half to a new segment of the same category."""
    out = _copy(res)
    for s in list(out.segments):
        ys, xs = np.nonzero(out.id_map == s.id)
        if len(xs) > 1000:
            right = xs > np.median(xs)
            nid = _new_id(out)
            out.id_map[ys[right], xs[right]] = nid
            out.segments.append(PanopticSegment(nid, s.category_id, s.isthing))
    return _prune(out)


def dropped(res: PanopticResult) -> PanopticResult:
    out = _copy(res)
    for s in out.segments[1::3]:
        out.id_map[out.id_map == s.id] = 0
    return _prune(out)


def relabelled(categories: list[dict]) -> Callable[[PanopticResult], PanopticResult]:
    things = [c["id"] for c in categories if c["isthing"]]
    stuff = [c["id"] for c in categories if not c["isthing"]]

    def run(res: PanopticResult) -> PanopticResult:
        out = _copy(res)
        for k, s in enumerate(out.segments):
            if k % 4 == 1:  # another class of the same kind
                pool = things if s.isthing else stuff
                s.category_id = pool[(pool.index(s.category_id) + 1) % len(pool)]
            elif k % 4 == 3 and s.isthing:  # a thing called stuff
                s.category_id, s.isthing = stuff[k % len(stuff)], False
        return _prune(out)

    return run


def extra_on_void(categories: list[dict]) -> Callable[[PanopticResult], PanopticResult]:
    """New segments on VOID: one entirely on it (not a FP), one 55% on it (not a FP) and one 35% on it
    (a FP); each takes the rest of its pixels from the largest stuff segment."""
    thing = next(c["id"] for c in categories if c["isthing"])

    def run(res: PanopticResult) -> PanopticResult:
        out = _copy(res)
        vy, vx = np.nonzero(res.id_map == 0)
        big = max((s for s in out.segments if not s.isthing), key=lambda s: (out.id_map == s.id).sum())
        sy, sx = np.nonzero(out.id_map == big.id)
        thirds = np.array_split(np.arange(len(vy)), 3)
        taken = 0
        for part, void_share in zip(thirds, (1.0, 0.55, 0.35), strict=True):
            nid = _new_id(out)
            out.id_map[vy[part], vx[part]] = nid
            extra = int(round(len(part) * (1 - void_share) / void_share))
            out.id_map[sy[taken: taken + extra], sx[taken: taken + extra]] = nid
            taken += extra
            out.segments.append(PanopticSegment(nid, thing, True))
        return _prune(out)

    return run


def _reference(tmp: Path, gt_items: Items, pred_items: Items, categories: list[dict]) -> dict:
    gt_json = write_coco_panoptic(gt_items, categories, tmp / "gt.json", overwrite=True)
    pred_json = write_coco_panoptic(pred_items, categories, tmp / "pred.json", overwrite=True)
    return pq_compute(str(gt_json), str(pred_json), str(tmp / "gt"), str(tmp / "pred"))


def _assert_equal(ours: dict, ref: dict) -> None:
    for name in ("All", "Things", "Stuff"):
        assert ours[name]["n"] == ref[name]["n"], name
        for k in ("pq", "sq", "rq"):
            assert abs(ours[name][k] - ref[name][k]) <= 1e-9, (name, k, ours[name][k], ref[name][k])
    assert set(ours["per_class"]) == set(ref["per_class"])
    for cid, r in ref["per_class"].items():
        for k in ("pq", "sq", "rq"):
            assert abs(ours["per_class"][cid][k] - r[k]) <= 1e-9, (cid, k)


def _check(tmp: Path, gt_items: Items, pred_items: Items, categories: list[dict]) -> dict:
    """Our in-memory and our file-based PQ against pq_compute on the same (GT, prediction) files."""
    ref = _reference(tmp, gt_items, pred_items, categories)
    _, gt_read = read_coco_panoptic(tmp / "gt.json", tmp / "gt")
    _, pred_read = read_coco_panoptic(tmp / "pred.json", tmp / "pred")
    ours = evaluate_panoptic([(g, p) for (_, g), (_, p) in zip(gt_read, pred_read, strict=True)], categories)
    _assert_equal(ours, ref)
    _assert_equal(pq_from_files(tmp / "gt.json", tmp / "gt", tmp / "pred.json", tmp / "pred"), ref)
    return ours


def _coco() -> tuple[list[dict], Items]:
    src = Path(DATA) / "coco_panoptic_sample"
    return read_coco_panoptic(src / "panoptic_examples.json", src / "panoptic_examples")


def test_coco_sample_ground_truth_as_prediction_is_pq_1(tmp_path: Path) -> None:
    cats, items = _coco()
    ours = _check(tmp_path, items, [(i, _copy(r)) for i, r in items], cats)
    assert ours["All"]["pq"] == 1.0 and ours["All"]["n"] == 8  # categories present; crowds ignored
    assert ours["Things"]["n"] == 4 and ours["Stuff"]["n"] == 4


COCO_PERTURBATIONS = ["shifted", "merged", "split", "dropped", "relabelled", "extra_on_void", "all"]


def _perturb(name: str, cats: list[dict]) -> Callable[[PanopticResult], PanopticResult]:
    fns = {"shifted": shifted, "merged": merged, "split": split, "dropped": dropped,
           "relabelled": relabelled(cats), "extra_on_void": extra_on_void(cats)}
    if name == "all":
        return lambda r: dropped(relabelled(cats)(split(shifted(r, 2, 3))))
    return fns[name]


@pytest.mark.parametrize("name", COCO_PERTURBATIONS)
def test_coco_sample_perturbed_predictions_equal_pq_compute(tmp_path: Path, name: str) -> None:
    cats, items = _coco()
    pred = [(i, _perturb(name, cats)(r)) for i, r in items]
    ours = _check(tmp_path, items, pred, cats)
    assert 0.0 < ours["All"]["pq"] < 1.0  # the perturbation changed the score


def test_extra_segments_on_void_count_by_their_void_share(tmp_path: Path) -> None:
    cats, items = _coco()
    ours = _check(tmp_path, items, [(i, extra_on_void(cats)(r)) for i, r in items], cats)
    person = ours["per_class"][1]
    assert person["fp"] == 2  # one 35%-void segment per image; the 100% and 55% ones are ignored


def test_several_crowd_segments_of_one_category_keep_only_the_last(tmp_path: Path) -> None:
    """pq_compute remembers the last crowd segment per category: a prediction on an earlier crowd
    segment of its class is a false positive. Replicated, on the real crowd of image 439180 cut in two."""
    cats, items = _coco()
    info, gt = items[1]
    gt = _copy(gt)
    crowd = next(s for s in gt.segments if s.iscrowd and s.category_id == 1)
    ys, xs = np.nonzero(gt.id_map == crowd.id)
    right = xs > np.median(xs)
    nid = _new_id(gt)
    gt.id_map[ys[right], xs[right]] = nid
    gt.segments.append(PanopticSegment(nid, 1, True, iscrowd=True))
    gt = _prune(gt)
    pred = _copy(gt)  # predicts both crowd halves as person segments
    ours = _check(tmp_path, [(info, gt)], [(info, pred)], cats)
    assert ours["per_class"][1]["fp"] == 1  # the left half: not the remembered crowd region
    assert ours["per_class"][19]["fp"] == 0  # a single crowd segment hides its prediction


def _cityscapes() -> tuple[list[dict], Items]:
    ds = CityscapesPanopticDataset(Path(DATA) / "cityscapes_sample", "val")
    items = [({"id": i, "file_name": ds.image_path(i).name}, ds.load_panoptic(i)) for i in range(len(ds))]
    return cityscapes_panoptic_categories(), items


@pytest.mark.parametrize("name", ["identity", "shifted", "merged", "split", "dropped", "relabelled",
                                  "extra_on_void"])
def test_cityscapes_panoptic_equals_pq_compute(tmp_path: Path, name: str) -> None:
    cats, items = _cityscapes()
    fn = (lambda r: _prune(_copy(r))) if name == "identity" else _perturb(name, cats)
    ours = _check(tmp_path, items, [(i, fn(r)) for i, r in items], cats)
    if name == "identity":
        assert ours["All"]["pq"] == 1.0 and ours["Things"]["n"] == 2 and ours["Stuff"]["n"] == 8
    else:
        assert 0.0 < ours["All"]["pq"] < 1.0


def test_validator_entry_point_scores_a_split_dataset_against_its_gt(tmp_path: Path) -> None:
    """evaluate_dataset_panoptic (what a training validator calls) on a train split of the COCO sample:
    the dataset's own GT as prediction gives PQ 1; a shifted one equals pq_compute on the same files."""
    from instaseg.data.build import build_dataset
    from instaseg.evaluation.panoptic import evaluate_dataset_panoptic

    src = Path(DATA) / "coco_panoptic_sample"
    spec = f"coco_panoptic:{src}/panoptic_examples.json:{src}/panoptic_examples:{src}/input_images"
    ds = build_dataset(spec, split="train")
    assert len(ds) == 2
    perfect = evaluate_dataset_panoptic(ds, [(i, ds.load_panoptic(i)) for i in range(len(ds))])
    assert perfect["All"]["pq"] == 1.0
    preds = [(i, shifted(ds.load_panoptic(i))) for i in range(len(ds))]
    ours = evaluate_dataset_panoptic(ds, preds)
    gt_items = [(ds.image_info(i), ds.load_panoptic(i)) for i in range(len(ds))]
    ref = _reference(tmp_path, gt_items, [(ds.image_info(i), p) for i, p in preds], ds.panoptic_categories)
    _assert_equal(ours, ref)


def test_ground_truth_json_area_is_used_like_pq_compute(tmp_path: Path) -> None:
    """pq_compute takes a GT segment's area from the JSON, not the PNG; so do we (read_coco_panoptic keeps
    it). A GT JSON with one area off changes that segment's IoU identically on both sides."""
    import json

    cats, items = _coco()
    preds = [(i, shifted(r, 1, 1)) for i, r in items]
    _reference(tmp_path, items, preds, cats)
    gt_json = tmp_path / "gt.json"
    data = json.loads(gt_json.read_text())
    seg = data["annotations"][0]["segments_info"][0]
    seg["area"] += 500
    gt_json.write_text(json.dumps(data))
    ref = pq_compute(str(gt_json), str(tmp_path / "pred.json"), str(tmp_path / "gt"), str(tmp_path / "pred"))
    ours = pq_from_files(gt_json, tmp_path / "gt", tmp_path / "pred.json", tmp_path / "pred")
    _assert_equal(ours, ref)
    untouched = _check(tmp_path, items, preds, cats)  # rewrites gt.json with the true areas
    assert ours["per_class"][seg["category_id"]]["sq"] < untouched["per_class"][seg["category_id"]]["sq"]


def test_cityscapes_crowd_regions_equal_pq_compute(tmp_path: Path) -> None:
    """Two persons become an unseparated group (bare label 24 = one crowd segment); predicting them as
    persons is then neither TP nor FP, as pq_compute says."""
    from instaseg.data.cityscapes_panoptic import instance_ids_to_panoptic

    cats, items = _cityscapes()
    info, gt = items[0]
    raw = gt.id_map.copy()
    raw[np.isin(raw, [24001, 24002])] = 24
    crowd_gt = instance_ids_to_panoptic(raw)
    assert any(s.iscrowd and s.id == 24 for s in crowd_gt.segments)
    ours = _check(tmp_path, [(info, crowd_gt)], [(info, _prune(_copy(gt)))], cats)
    person = ours["per_class"][24]
    assert (person["tp"], person["fp"], person["fn"]) == (2, 0, 0)


def test_unknown_predicted_category_is_refused() -> None:
    cats, items = _coco()
    _, gt = items[0]
    pred = _copy(gt)
    pred.segments[0].category_id = 4321
    with pytest.raises(ValueError, match=r"unknown category ids \[4321\]"):
        evaluate_panoptic([(gt, pred)], cats)
