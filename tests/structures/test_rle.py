"""structures/masks.py, the only RLE module: every function against pycocotools (the reference), bit for
bit, on random masks and real COCO annotations; and no other module imports pycocotools."""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask

import instaseg
from instaseg.structures.masks import (
    counts_to_rle,
    decode_rles,
    empty_rle,
    encode_masks,
    merge_rles,
    polygons_to_rle,
    polygons_to_rles,
    rle_areas,
    rle_boxes,
    rle_decode,
    rle_encode,
    rle_iou,
    to_rle,
    xywh_iou,
    xywh_to_polygon,
)


def _reference_decode(rles: list[dict]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools' decode under NumPy 2
        return coco_mask.decode(rles)


def _random_masks(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = rng.random((n, h, w)) > 0.6
    masks[0] = False  # an empty mask
    masks[1] = True  # a full one
    return masks


def test_encode_and_decode_equal_pycocotools_bit_for_bit():
    masks = _random_masks(6, 17, 23)
    rles = encode_masks(masks)
    assert rles == coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DeprecationWarning from decoding
        decoded = decode_rles(rles, 17, 23)
        one = rle_decode(rle_encode(masks[3]))
    ref = _reference_decode(rles).transpose(2, 0, 1)
    assert decoded.dtype == bool and decoded.shape == (6, 17, 23)
    assert np.array_equal(decoded, ref.astype(bool)) and np.array_equal(decoded, masks)
    assert all(m.T.flags.c_contiguous for m in decoded)  # column-major planes, as COCO lays them out
    assert np.array_equal(one, masks[3])
    assert decode_rles([], 5, 7).shape == (0, 5, 7) and encode_masks(np.zeros((0, 5, 7), bool)) == []


def test_str_bytes_and_uncompressed_counts_decode_alike():
    mask = _random_masks(3, 9, 11, seed=1)[2]
    rle = rle_encode(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [9, 11]
    as_bytes = {"size": [9, 11], "counts": rle["counts"].encode("ascii")}
    flat = mask.T.reshape(-1)  # column-major
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    counts = runs if not flat[0] else [0, *runs]
    for form in (rle, as_bytes, {"size": [9, 11], "counts": counts}):
        assert np.array_equal(rle_decode(form), mask)
    assert counts_to_rle(counts, 9, 11) == as_bytes
    assert to_rle({"size": [9, 11], "counts": counts}, 9, 11) == as_bytes
    assert to_rle(rle, 9, 11) is rle  # compressed RLE is used as it is


def test_areas_boxes_beyond_255_rles():
    masks = _random_masks(300, 12, 10, seed=2)
    masks[5] = False
    masks[5, 3:7, 2:4] = True
    rles = encode_masks(masks)
    with pytest.raises(OverflowError):
        coco_mask.area(rles)  # why rle_areas goes in chunks
    assert np.array_equal(rle_areas(rles), masks.reshape(300, -1).sum(1).astype(np.float64))
    boxes = rle_boxes(rles)
    assert boxes.dtype == np.float64 and np.array_equal(boxes, coco_mask.toBbox(rles))
    assert boxes[5].tolist() == [2.0, 3.0, 2.0, 4.0]
    assert rle_areas([]).shape == (0,) and rle_boxes([]).shape == (0, 4)


def test_polygons_merge_and_empty():
    polys = [[2, 2, 9, 2, 9, 9, 2, 9], [12.5, 3, 18, 3, 15, 10.2]]
    ref = coco_mask.frPyObjects(polys, 20, 24)
    assert polygons_to_rles(polys, 20, 24) == ref
    merged = polygons_to_rle(polys, 20, 24)
    assert merged == coco_mask.merge(ref) == to_rle(polys, 20, 24)
    assert merge_rles(ref) == merged
    inter = merge_rles(ref, intersect=True)
    assert rle_areas([inter])[0] == 0  # the two parts do not overlap
    assert not decode_rles([empty_rle(20, 24)], 20, 24).any()
    assert polygons_to_rle([], 20, 24) == empty_rle(20, 24)
    with pytest.raises(ValueError, match="at least one"):
        merge_rles([])


def test_box_polygon_is_what_load_res_rasterises():
    box = [3.5, 2.0, 6.0, 4.25]
    assert xywh_to_polygon(box) == [[3.5, 2.0, 3.5, 6.25, 9.5, 6.25, 9.5, 2.0]]
    # pycocotools' own box rasterisation (frBbox) gives the same mask
    assert to_rle(xywh_to_polygon(box), 12, 14) == coco_mask.frPyObjects(np.array([box]), 12, 14)[0]


def test_iou_with_crowd_equals_pycocotools():
    masks = _random_masks(7, 15, 16, seed=3)
    rles = encode_masks(masks)
    crowd = [0, 1, 0, 1, 0]
    got = rle_iou(rles[:4], rles[2:], crowd)
    assert got.shape == (4, 5)
    assert np.array_equal(got, np.asarray(coco_mask.iou(rles[:4], rles[2:], crowd)))
    a, b = masks[3], masks[4]
    assert got[3, 2] == pytest.approx((a & b).sum() / (a | b).sum())
    assert got[3, 1] == pytest.approx((a & masks[3]).sum() / a.sum())  # crowd: intersection / dt area
    str_rles = [rle_encode(m) for m in masks]
    assert np.array_equal(rle_iou(str_rles[:4], str_rles[2:], crowd), got)
    assert rle_iou([], rles, None).shape == (0, 7)
    with pytest.raises(ValueError, match="2 iscrowd flags for 7"):
        rle_iou(rles, rles, [0, 1])
    boxes = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 2, 2.0]])
    got = xywh_iou(boxes, boxes, [0, 1, 0])
    assert got[1, 0] == pytest.approx(50 / 150)
    assert got[0, 1] == pytest.approx(50 / 100)  # crowd column: intersection / detection area
    assert np.array_equal(got, np.asarray(coco_mask.iou(boxes, boxes, [0, 1, 0])))


def test_decode_refuses_malformed_counts_and_mixed_sizes():
    good = rle_encode(np.eye(4, 5, dtype=bool))
    with pytest.raises(ValueError):
        decode_rles([{"size": [4, 5], "counts": "52"}], 4, 5)  # 7 of 20 pixels
    with pytest.raises(ValueError, match=r"size \[4, 5\] among masks of size \[5, 4\]"):
        decode_rles([good], 5, 4)


@pytest.mark.data
def test_coco_tiny_segmentations_equal_pycocotools(shared_data: Path):
    """Every polygon, RLE and crowd annotation of coco_tiny: our RLE, area, box and mask are COCO's."""
    for split in ("val", "train"):
        gt = json.loads((shared_data / f"coco_tiny/annotations/instances_{split}2017.json").read_text())
        sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
        for ann in gt["annotations"]:
            h, w = sizes[ann["image_id"]]
            seg = ann["segmentation"]
            if isinstance(seg, list):
                ref = coco_mask.merge(coco_mask.frPyObjects(seg, h, w))
            else:
                ref = coco_mask.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
            rle = to_rle(seg, h, w)
            assert rle == ref
            assert rle_areas([rle])[0] == coco_mask.area(ref)
            assert np.array_equal(rle_boxes([rle])[0], coco_mask.toBbox(ref))
            assert np.array_equal(decode_rles([rle], h, w)[0], _reference_decode(ref).astype(bool))


def test_only_the_rle_module_and_the_eval_backend_import_pycocotools():
    root = Path(instaseg.__file__).parent
    # the RLE module, and the COCO evaluation backend (its worker processes import no torch, so they call
    # pycocotools' C routines directly instead of through instaseg.structures)
    backend = ("coco.py", "cocoengine.py", "cocoworker.py")
    allowed = {root / "structures" / "masks.py", *(root / "evaluation" / name for name in backend)}
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "pycocotools" for n in names) and path not in allowed:
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
