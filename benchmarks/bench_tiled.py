"""Tiled vs whole-image inference at the same model: mask AP_S on images with many small objects, and
the memory of tiled inference on a 10k x 10k image.

    PYTHONPATH=. INSTASEG_DATA=../shared/data python benchmarks/bench_tiled.py [--checkpoint RUN]

AP part: the 40 Data Science Bowl nuclei images of ``$INSTASEG_DATA/nuclei`` (ground truth: one PNG per
nucleus), upscaled ``--upscale`` times (nearest for the masks) to stand for larger microscopy images.
With ``--checkpoint`` the model is a trained instaseg model; without one (no trained nuclei model on
this machine) it is a classical segmenter with a fixed input size (:class:`FixedSizeSegmenter`: the
image is resized so its longer side is ``--model-size``, as detectors resize their input, then a
fixed contrast threshold to the median grey + connected components). Tiled inference uses tiles of
``--model-size`` pixels, so each tile
is seen at native resolution. AP comes from ``instaseg.evaluation.coco.evaluate_results``.

Memory part: tiled inference on a synthetic 10000 x 10000 image with ~2000 bright disks; peak traced
Python/NumPy allocations (tracemalloc) and the process's peak RSS growth beside the image's own size,
against the ``K x H x W`` float32 that whole-image masks would need.

Writes benchmarks/results/tiled.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from instaseg.data.build import build_dataset
from instaseg.evaluation.coco import evaluate_results
from instaseg.predict.dataset import instances_to_results
from instaseg.predict.predictor import Predictor
from instaseg.structures.masks import rle_encode

RESULTS = Path(__file__).parent / "results"


class FixedSizeSegmenter:
    """A non-learned instance segmenter on the model contract's inference side (``forward_lowres``).

    Like a detector with a fixed input size, it first resizes the image so its longer side is ``size``
    (never up); then: grey level, pixels differing from the median grey by more than ``contrast`` grey
    levels are foreground (bright nuclei on dark and dark nuclei on bright both work), connected
    components of at least ``min_area`` pixels at that resolution. Boxes are mapped back to input
    pixels; masks are 28 x 28 box-relative crops;
    the score is the component's contrast to the threshold, in (0, 1].
    """

    def __init__(self, size: int = 256, min_area: int = 4, contrast: float = 30.0) -> None:
        self.size, self.min_area, self.contrast = size, min_area, contrast

    def forward_lowres(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return [self._one(img) for img in images]

    def _one(self, image: Tensor) -> dict[str, Tensor]:
        grey = (image.mean(0).numpy() * 255).astype(np.uint8)
        h, w = grey.shape
        scale = min(1.0, self.size / max(h, w))
        small = cv2.resize(grey, (max(round(w * scale), 1), max(round(h * scale), 1)),
                           interpolation=cv2.INTER_AREA) if scale < 1 else grey
        # background = the median grey level (nuclei cover a minority of the image); foreground is what
        # differs from it by more than a fixed contrast, either way (fluorescence or brightfield)
        background = float(np.median(small))
        diff = np.abs(small.astype(np.float32) - background)
        fg = (diff > self.contrast).astype(np.uint8)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
        boxes, scores, masks = [], [], []
        for k in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[k])
            if area < self.min_area:
                continue
            crop = comp[y : y + bh, x : x + bw] == k
            contrast = float(diff[y : y + bh, x : x + bw][crop].mean()) / 255.0
            boxes.append(np.array([x, y, x + bw, y + bh], np.float32) / scale)
            scores.append(min(1.0, 0.05 + 2.0 * contrast))
            masks.append(cv2.resize(crop.astype(np.float32), (28, 28), interpolation=cv2.INTER_LINEAR))
        k = len(boxes)
        return {
            "boxes": torch.from_numpy(np.stack(boxes) if k else np.zeros((0, 4), np.float32)),
            "labels": torch.ones(k, dtype=torch.int64),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "mask_lowres": torch.from_numpy(np.stack(masks) if k else np.zeros((0, 28, 28), np.float32)),
        }


def nuclei(root: Path, upscale: int, limit: int | None) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Upscaled nuclei images and their COCO ground truth (one category, id 1)."""
    ds = build_dataset(f"folder:{root}")
    images, gt_images, anns = [], [], []
    for i in range(len(ds) if limit is None else min(limit, len(ds))):
        rec = ds.load_record(i)
        h, w = rec.image.shape[:2]
        size = (w * upscale, h * upscale)
        images.append(cv2.resize(rec.image, size, interpolation=cv2.INTER_LINEAR))
        gt_images.append({"id": i, "file_name": rec.file_name, "height": h * upscale, "width": w * upscale})
        for m in rec.masks:
            big = cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
            ys, xs = np.nonzero(big)
            anns.append({
                "id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                "segmentation": rle_encode(big), "area": float(big.sum()),
                "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)],
            })
    return images, {"images": gt_images, "annotations": anns, "categories": [{"id": 1, "name": "nucleus"}]}


def ap_both_ways(pred: Predictor, images: list[np.ndarray], gt: dict[str, Any], tile: int,
                 overlap: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("whole", "tiled"):
        results: list[dict[str, Any]] = []
        start, cpu = time.perf_counter(), time.process_time()
        for i, image in enumerate(images):
            if mode == "whole":
                inst = pred.predict(image)
            else:
                inst = pred.predict_tiled(image, tile=tile, overlap=overlap)
            results += instances_to_results(inst, i, [0, 1], pred.mask_thresh)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        segm = evaluate_results(gt, results, iou_types=("segm",))["segm"]
        out[mode] = {"AP": segm["AP"], "AP50": segm["AP50"], "AP_S": segm["APs"], "AP_M": segm["APm"],
                     "AR100": segm["AR100"], "detections": len(results), "wall_s": wall, "cpu_s": cpu}
        print(f"{mode:6s} AP {segm['AP']:.3f} AP_S {segm['APs']:.3f} AP_M {segm['APm']:.3f} "
              f"({len(results)} detections, {wall:.1f} s wall, {cpu:.1f} s CPU)", flush=True)
    return out


def memory_check(pred: Predictor, side: int, tile: int) -> dict[str, Any]:
    """Peak memory of tiled inference on a ``side x side`` image with many small bright disks."""
    rng = np.random.default_rng(0)
    image = np.full((side, side, 3), 20, np.uint8)
    n = side * side // 50_000
    for cx, cy, r in zip(rng.integers(20, side - 20, n), rng.integers(20, side - 20, n),
                         rng.integers(5, 15, n), strict=True):
        cv2.circle(image, (int(cx), int(cy)), int(r), (230, 230, 230), -1)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    start = time.perf_counter()
    inst = pred.predict_tiled(image, tile=tile, overlap=0.2, batch=4)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    k = len(inst)
    out = {
        "image": f"{side}x{side}", "image_bytes": image.nbytes, "instances": k, "disks_drawn": int(n),
        "tracemalloc_peak_bytes": peak, "peak_rss_growth_bytes": max(rss1 - rss0, 0), "seconds": seconds,
        "dense_float_masks_bytes": k * side * side * 4,
    }
    print(f"memory {side}x{side}: {k} instances in {seconds:.1f} s; traced peak {peak / 2**20:.0f} MiB, "
          f"peak RSS growth {out['peak_rss_growth_bytes'] / 2**20:.0f} MiB "
          f"(image {image.nbytes / 2**20:.0f} MiB; "
          f"dense float masks would be {out['dense_float_masks_bytes'] / 2**30:.0f} GiB)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="a trained instaseg run/checkpoint (default: FixedSizeSegmenter)")
    ap.add_argument("--model-size", type=int, default=256, help="FixedSizeSegmenter's input side")
    ap.add_argument("--contrast", type=float, default=30.0, help="FixedSizeSegmenter's grey-level contrast")
    ap.add_argument("--tile", type=int, default=None, help="tile side (default: --model-size)")
    ap.add_argument("--overlap", type=float, default=0.2)
    ap.add_argument("--upscale", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None, help="only the first N nuclei images")
    ap.add_argument("--memory-side", type=int, default=10_000, help="0 skips the memory check")
    ap.add_argument("--out", default=str(RESULTS / "tiled.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(os.environ.get("INSTASEG_DATA", "../shared/data")) / "nuclei"
    if not root.is_dir():
        print(f"bench_tiled: {root} not found (set INSTASEG_DATA)", file=sys.stderr)
        return 2
    if args.checkpoint:
        pred = Predictor.load(checkpoint=args.checkpoint, score_thresh=0.05, max_detections=300)
        model_name = f"checkpoint {args.checkpoint}"
    else:
        segmenter = FixedSizeSegmenter(args.model_size, contrast=args.contrast)
        pred = Predictor(segmenter, ["background", "nucleus"], score_thresh=0.0,
                         max_detections=300)
        model_name = (f"FixedSizeSegmenter(size={args.model_size}, contrast={args.contrast}) "
                      "(contrast threshold + connected components, not learned)")
    tile = args.tile or args.model_size
    load = os.getloadavg()
    # memory first, so the process's peak RSS is not an earlier part's
    memory = memory_check(pred, args.memory_side, 640) if args.memory_side else None
    images, gt = nuclei(root, args.upscale, args.limit)
    print(f"{len(images)} nuclei images x{args.upscale}, {len(gt['annotations'])} nuclei; "
          f"model: {model_name}; "
          f"tile {tile} overlap {args.overlap}; load average {load[0]:.1f}", flush=True)
    report: dict[str, Any] = {
        "date": "2026-12-05", "machine": "CPU-2c, loaded by parallel jobs", "loadavg_start": load,
        "model": model_name, "images": len(images), "upscale": args.upscale, "tile": tile,
        "overlap": args.overlap, "nuclei": len(gt["annotations"]),
    }
    if memory is not None:
        report["memory"] = memory
    report["ap"] = ap_both_ways(pred, images, gt, tile, args.overlap)
    report["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
