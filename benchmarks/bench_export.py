"""Latency per image: PyTorch eager vs ONNX Runtime (CPU) for each exportable model, plus file size.

For every model: build it with seeded random weights (2 classes), export it with ``export_onnx`` (which
also verifies it against PyTorch), then time on real COCO images (``$INSTASEG_DATA/coco_tiny/val2017``;
the model resizes them to its default size inside):

- ``graph``: the network up to fixed-size outputs (boxes, scores, labels, low-res masks): the eager
  export graph (what ``instaseg predict`` runs on the torch backend) vs ``InferenceSession.run``;
- ``end_to_end``: ``model(images)`` with full-size float masks: eager model vs ``OnnxDetector`` (the
  same torchvision ``paste_masks_in_image`` after the graph, so this dilutes the gap);
- ``predictor``: what ``instaseg predict`` runs: ``Predictor.predict`` on a uint8 image with RLE masks
  (low-resolution masks pasted per box by ``instaseg.structures.paste``), torch backend vs onnxruntime
  backend.

Both sides use the same score threshold and ``threads`` CPU threads (torch.set_num_threads, ORT
intra-op threads). Median of ``--repeat`` passes over the images after one warm-up pass. Random
weights may score nothing above ``--threshold`` (then the mask head never runs); ``--target-detections
N`` instead sets each model's threshold between its N-th and (N+1)-th best eager score on the first
image, so the timings include N masks.

    INSTASEG_DATA=/work/shared/data .venv/bin/python benchmarks/bench_export.py \
        --models maskrcnn_r18_slim maskrcnn_mobilenet_v3 --images 5
    ... --models simple_fpn --target-detections 10 --output benchmarks/results/export_simple_fpn.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from instaseg.export.graphs import export_graph
from instaseg.export.onnx_export import export_onnx
from instaseg.models import get_model
from instaseg.predict.runtime import load_onnx_model

DEFAULT_MODELS = [
    "maskrcnn_r18_slim", "maskrcnn_mobilenet_v3", "maskrcnn_effnet_lite0", "yolact_lite", "solov2_lite",
    "maskrcnn_r50_fpn", "simple_fpn",
]


def load_images(n: int) -> list[torch.Tensor]:
    root = Path(os.environ.get("INSTASEG_DATA", "../shared/data")) / "coco_tiny" / "val2017"
    paths = sorted(root.glob("*.jpg"))[:n]
    if not paths:
        raise SystemExit(f"no images under {root}: set INSTASEG_DATA")
    return [torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1).float() / 255
            for p in paths]


def timed(fn, images: list[torch.Tensor], repeat: int) -> float:
    """Median over ``repeat`` passes of the mean seconds per image (after one warm-up pass)."""
    for img in images:
        fn(img)
    passes = []
    for _ in range(repeat):
        start = time.perf_counter()
        for img in images:
            fn(img)
        passes.append((time.perf_counter() - start) / len(images))
    return statistics.median(passes)


def set_score_thresh(model: torch.nn.Module, threshold: float) -> None:
    """The eager model's own score threshold (``score_thresh`` of the model contract)."""
    model.score_thresh = threshold


def threshold_for(model: torch.nn.Module, image: torch.Tensor, target: int) -> float:
    """A score threshold leaving about ``target`` eager detections on ``image``: halfway between the
    target-th and the next best score (below the lowest one when there are fewer)."""
    set_score_thresh(model, 0.0)
    scores = model([image])[0]["scores"].sort(descending=True).values.tolist()
    if len(scores) <= target:
        return max(0.0, scores[-1] - 1e-4) if scores else 0.0
    return (scores[target - 1] + scores[target]) / 2


@torch.no_grad()
def bench_model(name: str, images: list[torch.Tensor], repeat: int, threshold: float, threads: int,
                workdir: Path, target_detections: int | None = None) -> dict:
    torch.manual_seed(0)
    model = get_model(name, num_classes=2).eval()
    if target_detections:
        threshold = threshold_for(model, images[0], target_detections)
    t0 = time.perf_counter()
    result = export_onnx(model, workdir / f"{name}.onnx", meta={"model_spec": {"name": name}}, overwrite=True)
    export_s = time.perf_counter() - t0
    graph = export_graph(model)
    onnx_model, meta = load_onnx_model(result.path, threads=threads, score_thresh=threshold)
    thr = torch.tensor(threshold)
    set_score_thresh(model, threshold)
    detections = [len(onnx_model.run_raw(img)[0]) for img in images]
    row = {
        "model": name,
        "file_mb": round(result.size_bytes / 1e6, 2),
        "export_s": round(export_s, 1),
        "verify": result.checks,
        "threshold": round(threshold, 6),
        "mean_detections": round(float(np.mean(detections)), 1),
        "default_size": meta["preprocessing"].get("default_size"),
    }
    graph_torch = timed(lambda img: graph(img, thr), images, repeat)
    graph_ort = timed(onnx_model.run_raw, images, repeat)
    e2e_torch = timed(lambda img: model([img]), images, repeat)
    e2e_ort = timed(lambda img: onnx_model([img]), images, repeat)
    predictor = None
    try:
        from instaseg.predict.predictor import Predictor

        rgb = [(img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for img in images]
        by_index = {id(img): arr for img, arr in zip(images, rgb, strict=True)}
        p_torch = Predictor(model, meta["class_names"], score_thresh=threshold)
        p_onnx = Predictor(onnx_model, meta["class_names"], score_thresh=threshold)
        pred_torch = timed(lambda img: p_torch.predict(by_index[id(img)]), images, repeat)
        pred_ort = timed(lambda img: p_onnx.predict(by_index[id(img)]), images, repeat)
        predictor = {"torch": round(pred_torch * 1e3, 1), "onnxruntime": round(pred_ort * 1e3, 1),
                     "speedup": round(pred_torch / pred_ort, 2)}
    except ImportError:  # the predictor is optional here
        pass
    row["predictor_ms"] = predictor
    row.update({
        "graph_ms": {"torch": round(graph_torch * 1e3, 1), "onnxruntime": round(graph_ort * 1e3, 1),
                     "speedup": round(graph_torch / graph_ort, 2)},
        "end_to_end_ms": {"torch": round(e2e_torch * 1e3, 1), "onnxruntime": round(e2e_ort * 1e3, 1),
                          "speedup": round(e2e_torch / e2e_ort, 2)},
    })
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold on both sides")
    parser.add_argument("--target-detections", type=int, default=None,
                        help="per model, the threshold leaving about N detections on the first image")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/results/export.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = load_images(args.images)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"threads": args.threads, "threshold": args.threshold,
              "target_detections": args.target_detections, "images": args.images, "repeat": args.repeat,
              "torch": torch.__version__, "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            report["results"].append(bench_model(name, images, args.repeat, args.threshold, args.threads,
                                                 Path(tmp), args.target_detections))
            out.write_text(json.dumps(report, indent=2))  # after each model: partial runs keep results
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
