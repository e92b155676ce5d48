"""Shared builders for the evaluation tests: small COCO ground truth, detections made from it, and
pycocotools' own evaluation (``COCO.loadRes`` + ``COCOeval``) as the oracle."""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from typing import Any

import cv2
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instaseg.structures.masks import decode_rles, rle_encode, to_rle
from instaseg.structures.paste import paste_masks_to_rles


def gt_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """Decode a COCO GT annotation's segmentation (polygons, RLE or uncompressed RLE) to bool (H, W)."""
    return decode_rles([to_rle(ann["segmentation"], height, width)], height, width)[0]


def pycocotools_eval(gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str) -> COCOeval:
    """The reference: pycocotools' ``COCO.loadRes`` on a deep copy of ``results`` and ``COCOeval``
    (evaluated, accumulated, summarised) against a deep copy of ``gt``."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools' mask.decode under NumPy 2
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def det_from_mask(mask: np.ndarray, image_id: int, category_id: int, score: float) -> dict[str, Any]:
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    return {"image_id": image_id, "category_id": category_id, "segmentation": rle_encode(mask),
            "bbox": bbox, "score": score}


def perturbed_detections(gt: dict[str, Any], seed: int = 0, n_random: int = 3) -> list[dict[str, Any]]:
    """0-2 shifted/eroded copies of each GT object (20% with a random class) plus ``n_random`` random
    boxes per image, with random scores: a realistic mix of TPs, duplicates and FPs."""
    rng = np.random.default_rng(seed)
    images = {im["id"]: im for im in gt["images"]}
    cats = [c["id"] for c in gt["categories"]]
    dets = []
    for ann in gt["annotations"]:
        im = images[ann["image_id"]]
        mask = gt_mask(ann, im["height"], im["width"])
        for _ in range(int(rng.integers(0, 3))):
            dy, dx = rng.integers(-4, 5, size=2)
            m = np.roll(mask, (int(dy), int(dx)), axis=(0, 1))
            if rng.random() < 0.3:
                m &= rng.random(m.shape) > 0.2
            if not m.any():
                continue
            cat = ann["category_id"] if rng.random() < 0.8 else int(rng.choice(cats))
            dets.append(det_from_mask(m, ann["image_id"], cat, float(rng.random())))
    for im in gt["images"]:
        h, w = im["height"], im["width"]
        for _ in range(n_random):
            x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
            m = np.zeros((h, w), bool)
            m[y0 : y0 + int(rng.integers(5, 200)), x0 : x0 + int(rng.integers(5, 200))] = True
            dets.append(det_from_mask(m, im["id"], int(rng.choice(cats)), float(rng.random())))
    return dets


def tiny_gt(masks_per_image: list[list[tuple[np.ndarray, int]]], cat_ids: list[int]) -> dict[str, Any]:
    """COCO GT dict with images 1..n; ``masks_per_image[i]`` lists ``(bool mask, category_id)``."""
    images, anns = [], []
    for i, objs in enumerate(masks_per_image, start=1):
        h, w = objs[0][0].shape if objs else (32, 32)
        images.append({"id": i, "height": h, "width": w, "file_name": f"{i}.png"})
        for mask, cat in objs:
            ys, xs = np.nonzero(mask)
            anns.append({
                "id": len(anns) + 1, "image_id": i, "category_id": cat, "iscrowd": 0,
                "segmentation": rle_encode(mask), "area": float(mask.sum()),
                "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)],
            })
    cats = [{"id": c, "name": f"class{c}"} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": cats}


def box_mask(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def predictor_style_results(gt: dict[str, Any], seed: int = 0, n_random: int = 2) -> list[dict[str, Any]]:
    """Results as ``instaseg predict`` writes them, made from jittered ground truth: each non-crowd
    object's mask, cropped to a jittered box and resized to a 28 x 28 probability map (Mask R-CNN's
    low-resolution mask), is pasted back with :func:`paste_masks_to_rles` (the predictor's path);
    ``bbox`` XYWH rounded to 2 decimals and ``score`` to 5, plus ``file_name``. 20% get a random
    class; ``n_random`` false positives per image."""
    rng = np.random.default_rng(seed)
    images = {im["id"]: im for im in gt["images"]}
    cats = [c["id"] for c in gt["categories"]]
    by_image: dict[int, list[tuple[np.ndarray, np.ndarray, int]]] = {}
    for ann in gt["annotations"]:
        if ann.get("iscrowd"):
            continue
        im = images[ann["image_id"]]
        h, w = im["height"], im["width"]
        x, y, bw, bh = ann["bbox"]
        box = np.array([x, y, x + bw, y + bh]) + rng.normal(0.0, 0.08, 4) * np.array([bw, bh, bw, bh])
        box = np.clip(box, 0, [w, h, w, h])
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            continue
        x0, y0 = int(box[0]), int(box[1])
        x1, y1 = max(int(np.ceil(box[2])), x0 + 1), max(int(np.ceil(box[3])), y0 + 1)
        crop = gt_mask(ann, h, w)[y0:y1, x0:x1].astype(np.float32)
        low = cv2.resize(crop, (28, 28), interpolation=cv2.INTER_LINEAR)
        low = np.clip(low + rng.normal(0.0, 0.15, low.shape), 0, 1).astype(np.float32)
        cat = ann["category_id"] if rng.random() < 0.8 else int(rng.choice(cats))
        by_image.setdefault(ann["image_id"], []).append((low, box, cat))
    for im in gt["images"]:
        h, w = im["height"], im["width"]
        for _ in range(n_random):
            x0, y0 = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
            box = np.array([x0, y0, min(w, x0 + rng.uniform(8, 200)), min(h, y0 + rng.uniform(8, 200))])
            low = (rng.random((28, 28)) > 0.3).astype(np.float32)
            by_image.setdefault(im["id"], []).append((low, box, int(rng.choice(cats))))
    results = []
    for image_id, dets in by_image.items():
        im = images[image_id]
        lows = np.stack([d[0] for d in dets])
        boxes = np.stack([d[1] for d in dets]).astype(np.float32)
        rles = paste_masks_to_rles(lows, boxes, im["height"], im["width"])
        for (_, _, cat), box, rle in zip(dets, boxes.tolist(), rles, strict=True):
            x1, y1, x2, y2 = box
            results.append({
                "image_id": image_id, "category_id": cat, "segmentation": rle,
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(float(rng.random()), 5), "file_name": im["file_name"],
            })
    return results
