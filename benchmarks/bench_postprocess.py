"""Mask post-processing cost vs. model forward, 100 detections on a 1333x800 image.

For each model (randomly initialised, ``score_thresh=0`` so it returns exactly 100 detections):

- forward: :func:`instaseg.ops.lowres.lowres_inference` (backbone + RPN + heads, no full-size paste);
- ours: low-res masks -> COCO RLEs with :func:`instaseg.structures.paste.paste_masks_to_rles` (crops only);
- torchvision: ``paste_masks_in_image`` (K x H x W floats) + threshold + pycocotools encode, the path
  that ``model(images)`` + encoding takes.

Peak memory of each post-processing path is measured as the growth of the process's peak RSS (VmHWM,
reset through /proc/self/clear_refs before each run; freed heap pages are reused, so small
allocations show as 0), and for ours also as the tracemalloc peak of NumPy/Python allocations, for
K = 25, 50, 100 detections, to show that ours stays flat while the dense path grows with K.

    python benchmarks/bench_postprocess.py [--image PATH] [--repeat 3] [--models maskrcnn_r18_slim ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from instaseg.models import get_model
from instaseg.ops.lowres import lowres_inference
from instaseg.structures.paste import paste_masks_to_rles

RESULTS = Path(__file__).parent / "results" / "postprocess.json"


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ours(masks: np.ndarray, boxes: np.ndarray, h: int, w: int) -> list:
    return paste_masks_to_rles(masks, boxes, h, w)


def torchvision_dense(masks: np.ndarray, boxes: np.ndarray, h: int, w: int) -> list:
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    full = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (h, w))
    binary = (full[:, 0] >= 0.5).numpy().astype(np.uint8)
    return mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))


def _timed(fn, *args, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_growth(fn, *args) -> float | None:
    if not _reset_peak():
        return None
    base = _current_rss_mb()
    fn(*args)
    return round(_peak_rss_mb() - base, 1)


def _traced_peak(fn, *args) -> float:
    """Peak of Python/NumPy allocations (tracemalloc) during ``fn``; torch's allocator is not traced."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn(*args)
        return round(tracemalloc.get_traced_memory()[1] / 2**20, 2)
    finally:
        tracemalloc.stop()


def load_image(path: str | None, h: int, w: int) -> torch.Tensor:
    import cv2

    if path:
        from instaseg.data.io import read_image

        arr = cv2.resize(read_image(path), (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        arr = np.random.default_rng(0).integers(0, 255, (h, w, 3)).astype(np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


def bench_model(name: str, image: torch.Tensor, repeat: int) -> dict:
    torch.manual_seed(0)
    kwargs = {"num_classes": 91, "score_thresh": 0.0, "box_detections_per_img": 100}
    if name == "maskrcnn_r18_slim":
        kwargs.update(min_size=800, max_size=1333)  # run it on the 1333x800 image at full size
    model = get_model(name, **kwargs).eval()
    h, w = image.shape[-2:]
    with torch.inference_mode():
        lowres_inference(model, [image])  # warm-up
        forward_times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            det = lowres_inference(model, [image])[0]
            forward_times.append(time.perf_counter() - t0)
    forward = statistics.median(forward_times)
    masks = det["mask_lowres"].numpy().astype(np.float32)
    row = {
        "model": name,
        "model_kwargs": {k_: v for k_, v in kwargs.items() if k_ != "num_classes"},
        "forward_s": round(forward, 3),
        # The model's own (untrained) boxes, and a harder case with large COCO-like boxes, since
        # our cost grows with the total box area.
        "model_boxes": _post(masks, det["boxes"].numpy().astype(np.float32), h, w, forward, repeat),
        "large_boxes": _post(masks, _large_boxes(len(masks), h, w), h, w, forward, repeat),
    }
    print(json.dumps(row))
    return row


def _large_boxes(n: int, h: int, w: int) -> np.ndarray:
    """Boxes with sides log-uniform in [32, 640] px inside the image (clipped like a detector's)."""
    rng = np.random.default_rng(0)
    bw, bh = np.exp(rng.uniform(np.log(32), np.log(640), (2, n)))
    x1 = rng.uniform(0, w - bw / 2)
    y1 = rng.uniform(0, h - bh / 2)
    boxes = np.stack([x1, y1, np.minimum(x1 + bw, w), np.minimum(y1 + bh, h)], 1)
    return boxes.astype(np.float32)


def _post(masks: np.ndarray, boxes: np.ndarray, h: int, w: int, forward: float, repeat: int) -> dict:
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, w)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, h)
    box_px = float(((clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])).sum())
    ours_t = _timed(ours, masks, boxes, h, w, repeat=repeat)
    tv_t = _timed(torchvision_dense, masks, boxes, h, w, repeat=max(1, repeat - 1))
    memory = {}
    for n in (25, 50, 100):
        n = min(n, len(boxes))
        memory[str(n)] = {
            "ours_peak_growth_mb": _peak_growth(ours, masks[:n], boxes[:n], h, w),
            "ours_tracemalloc_peak_mb": _traced_peak(ours, masks[:n], boxes[:n], h, w),
            "torchvision_peak_growth_mb": _peak_growth(torchvision_dense, masks[:n], boxes[:n], h, w),
        }
    return {
        "detections": len(boxes),
        "total_box_area_mpx": round(box_px / 1e6, 2),
        "postprocess_ours_s": round(ours_t, 4),
        "postprocess_torchvision_s": round(tv_t, 4),
        "ours_fraction_of_forward": round(ours_t / forward, 4),
        "torchvision_fraction_of_forward": round(tv_t / forward, 4),
        "peak_memory": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=None, help="a real image (resized to 1333x800); default noise")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["maskrcnn_r18_slim", "maskrcnn_r50_fpn"])
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    image = load_image(args.image, 800, 1333)
    rows = [bench_model(name, image, args.repeat) for name in args.models]
    report = {
        "benchmark": "postprocess",
        "image": args.image or "noise",
        "image_size": [800, 1333],
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "results": rows,
        "target": "postprocess_ours_s < 0.1 * forward_s; ours peak memory flat in K",
        "passed": all(
            r[case]["ours_fraction_of_forward"] < 0.1 for r in rows for case in ("model_boxes", "large_boxes")
        ),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}; passed={report['passed']}")


if __name__ == "__main__":
    main()
