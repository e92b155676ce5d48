"""Shared builders for the evaluation tests: small COCO ground truth and detections made from it."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from instaseg.structures.masks import rle_encode


def gt_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """Decode a COCO GT annotation's segmentation (polygons, RLE or uncompressed RLE) to bool (H, W)."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = seg
    return mask_utils.decode(rle).astype(bool)


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
