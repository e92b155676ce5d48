"""Latency of the real-time models at 640 on this CPU, trained and with detections present, against
Ultralytics YOLO11n-seg trained on the same data, in ONE process.

    .venv/bin/python benchmarks/bench_realtime.py --onnx            # instaseg models only
    YOLO_OFFLINE=1 /tmp/ulvenv/bin/python benchmarks/bench_realtime.py --onnx   # + YOLO11n-seg (below)

Weights: nothing can be downloaded here, and random weights detect nothing (so mask assembly never
runs), so every model is first trained briefly on synthetic shapes: the 64-96 px rectangle / disc
samples of ``tests/models/rt_synth.py`` at scale 1 (objects 16-34 px), on one thread (see
:func:`trained_model`: YOLACT on 128 px tiles, SOLOv2 at the 640 canvas; YOLO11n-seg, built from its
YAML, ``--yolo-epochs`` epochs on 32 tiles through Ultralytics' own trainer). The test image is
480x640, 20 samples (43 objects) tiled on the same noise background at the same scale, unseen in
training. Training takes about 7 minutes on the 2-core machine (timing about 1 more).

Each timed call is the whole inference path a user gets: uint8 HxWx3 RGB image ->
:class:`instaseg.predict.predictor.Predictor` (tensor conversion, letterbox, forward, NMS, the
predictor's score filter at 0.5) -> :class:`Instances` -> COCO RLE masks (``to_rles()``: the
box-relative low-res masks pasted at image size). Backends: PyTorch eager and, with ``--onnx``,
ONNX Runtime through instaseg's export path (``instaseg.export.onnx_export.export_onnx``, loaded with
``instaseg.predict.runtime.load_onnx_model``). YOLO11n-seg: ``YOLO.predict(image, imgsz=640,
conf=0.5)`` (its letterbox, forward, NMS, mask assembly), then RLEs with pycocotools. The benchmark
FAILS (exit 1, no JSON written) if any timed row returns 0 detections.

Rounds interleave the models (one call of each per round), so a load change on a shared machine hits
all of them alike; the ratio column is median latency / YOLO11n-seg's median latency.

Ultralytics is AGPL and is never a dependency of instaseg: install it only in a throwaway venv that
also sees instaseg's packages, e.g.::

    python3.11 -m venv /tmp/ulvenv
    printf '/work/main/.venv/lib/python3.11/site-packages\\n/work/main\\n' \\
        > /tmp/ulvenv/lib/python3.11/site-packages/zz_instaseg.pth
    /tmp/ulvenv/bin/pip install ultralytics      # reuses the venv's torch
    YOLO_OFFLINE=1 /tmp/ulvenv/bin/yolo settings mlflow=False   # no experiment logging

Writes benchmarks/results/realtime.json.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instaseg.data.base import make_target  # noqa: E402
from instaseg.export.onnx_export import export_onnx  # noqa: E402
from instaseg.models.registry import get_model  # noqa: E402
from instaseg.predict.predictor import Predictor  # noqa: E402
from instaseg.predict.runtime import load_onnx_model  # noqa: E402
from tests.models.rt_synth import overfit, synthetic_samples  # noqa: E402

# (label, registered name, builder kwargs); the *_lite defaults use MobileNetV3-Large; yolact_nano (the
# fastest registered configuration) is yolact_lite on MobileNetV3-Small, as is solov2_lite/mnv3-small.
MODELS = [
    ("yolact_lite", "yolact_lite", {}),
    ("yolact_nano", "yolact_nano", {}),
    ("solov2_lite", "solov2_lite", {}),
    ("solov2_lite/mnv3-small", "solov2_lite", {"backbone": "mobilenet_v3_small"}),
]
# solov2_lite/mnv3-small returns no detection on the test image after SOLO_STEPS steps (2026-12-04 run), so
# it would fail the benchmark: it is timed only when asked for with --models.
DEFAULT_MODELS = ("yolact_lite", "yolact_nano", "solov2_lite")
CLASS_NAMES = ["background", "rect", "disc"]
TRAIN_SIZE = 128  # training canvas = tile side: samples are pasted at scale 1
SOLO_STEPS = 100
YOLO_KEY = "yolo11n-seg (ultralytics, torch)"


def noise_background(h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """Float RGB Tensor[3, h, w] of the synthetic samples' background (uniform 0.1-0.3)."""
    return torch.from_numpy((rng.random((h, w, 3)) * 0.2 + 0.1).astype(np.float32)).permute(2, 0, 1)


def training_tiles(n: int, seed: int = 0) -> list[tuple[torch.Tensor, dict]]:
    """``n`` (image Tensor[3, 128, 128], target) pairs: one synthetic sample each, pasted at scale 1
    at a random offset into a noise tile; target masks are moved with it."""
    rng = np.random.default_rng(seed + 1000)
    tiles = []
    for i, (img, target) in enumerate(synthetic_samples(n, seed=seed)):
        canvas = noise_background(TRAIN_SIZE, TRAIN_SIZE, rng)
        h, w = img.shape[1:]
        y0, x0 = int(rng.integers(0, TRAIN_SIZE + 1 - h)), int(rng.integers(0, TRAIN_SIZE + 1 - w))
        canvas[:, y0:y0 + h, x0:x0 + w] = img
        masks = torch.zeros((len(target["labels"]), TRAIN_SIZE, TRAIN_SIZE), dtype=torch.bool)
        masks[:, y0:y0 + h, x0:x0 + w] = target["masks"].bool()
        labels = target["labels"]
        tiles.append((canvas, make_target(masks, labels, torch.zeros(len(labels)), i)))
    return tiles


def tiled_sample(h: int, w: int, seed: int) -> tuple[torch.Tensor, dict]:
    """(image Tensor[3, h, w], target): synthetic samples at scale 1 in a grid of 120x128 cells on the
    noise background (20 samples, about 40 objects, at 480x640)."""
    rng = np.random.default_rng(seed + 1000)
    canvas = noise_background(h, w, rng)
    rows, cols = h // 120, w // 128
    masks, labels = [], []
    for k, (img, target) in enumerate(synthetic_samples(rows * cols, seed=seed)):
        r, c = divmod(k, cols)
        ih, iw = img.shape[1:]
        canvas[:, r * 120:r * 120 + ih, c * 128:c * 128 + iw] = img
        m = torch.zeros((len(target["labels"]), h, w), dtype=torch.bool)
        m[:, r * 120:r * 120 + ih, c * 128:c * 128 + iw] = target["masks"].bool()
        masks.append(m)
        labels.append(target["labels"])
    label = torch.cat(labels)
    return canvas, make_target(torch.cat(masks), label, torch.zeros(len(label)), seed)


def test_image(h: int, w: int, seed: int = 1) -> tuple[np.ndarray, int]:
    """uint8 (h, w, 3) RGB :func:`tiled_sample`; returns (image, number of objects drawn)."""
    canvas, target = tiled_sample(h, w, seed)
    image = (canvas.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    return image, len(target["labels"])


def trained_model(name: str, kwargs: dict, size: int, steps: int) -> tuple[torch.nn.Module, float]:
    """``name`` at input ``size``, trained full-batch (AdamW, one thread); returns (eval-mode model,
    final training loss). YOLACT: ``steps`` steps on 8 training tiles at a 128 canvas, the weights then
    loaded into the same architecture at ``size`` (its anchors are in pixels, so objects at scale 1
    stay in scale). SOLOv2: its grids and scale ranges are fractions of the canvas, so it is trained
    at ``size`` itself, on 2 tiled 480x640 images (seeds 10, 11; the test image is seed 1), for
    ``SOLO_STEPS`` steps (about 3 minutes on one busy core)."""
    torch.manual_seed(0)
    if name.startswith("solov2"):
        model = get_model(name, num_classes=len(CLASS_NAMES), input_size=size, **kwargs)
        history = overfit(model, [tiled_sample(480, 640, seed) for seed in (10, 11)], steps=SOLO_STEPS,
                          lr=3e-3, seed=0)
        return model.eval(), history[-1]
    small = get_model(name, num_classes=len(CLASS_NAMES), input_size=TRAIN_SIZE, **kwargs)
    history = overfit(small, training_tiles(8, seed=0), steps=steps, lr=3e-3, seed=0)
    model = get_model(name, num_classes=len(CLASS_NAMES), input_size=size, **kwargs)
    model.load_state_dict(small.state_dict())
    return model.eval(), history[-1]


def predictor_runner(predictor: Predictor) -> Callable[[np.ndarray], int]:
    """image -> Predictor -> Instances -> RLE masks; returns the number of detections."""

    def run(image: np.ndarray) -> int:
        inst = predictor.predict(image)
        rles = inst.to_rles()
        return len(rles)

    return run


def onnx_predictor(
    name: str, kwargs: dict, model: torch.nn.Module, threads: int, workdir: Path, size: tuple[int, int]
) -> Predictor:
    """Export ``model`` with instaseg's ONNX export and load it into a Predictor (ONNX Runtime)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.onnx"
    meta = {"model_spec": {"name": name, "kwargs": kwargs}, "class_names": CLASS_NAMES,
            "category_ids": list(range(len(CLASS_NAMES)))}
    export_onnx(model, path, meta=meta, image_size=size, verify=False)
    detector, onnx_meta = load_onnx_model(path, threads=threads)
    return Predictor.from_model(detector, onnx_meta)


def write_yolo_dataset(root: Path, tiles: list[tuple[torch.Tensor, dict]]) -> Path:
    """The training tiles as an Ultralytics segmentation dataset under ``root`` (PNG images, one polygon
    per object from its mask's outer contour, normalised xy; class = label - 1); returns its YAML."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i, (img, target) in enumerate(tiles):
        rgb = (img.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"{i}.png"), np.ascontiguousarray(rgb[:, :, ::-1]))
        lines = []
        for mask, label in zip(target["masks"], target["labels"], strict=True):
            contours, _ = cv2.findContours(mask.numpy().astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            xy = max(contours, key=cv2.contourArea).reshape(-1, 2) / np.array([img.shape[2], img.shape[1]])
            lines.append(" ".join([str(int(label) - 1)] + [f"{v:.4f}" for v in xy.reshape(-1)]))
        (root / "labels" / f"{i}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images\nval: images\nnames:\n  0: rect\n  1: disc\n")
    return data


def yolo_runner(imgsz: int, epochs: int, workdir: Path) -> tuple[Callable[[np.ndarray], int], dict] | None:
    """YOLO11n-seg built from its YAML (no download), trained ``epochs`` epochs on 32 training tiles at
    128 px (no augmentation but flips), then predicting at ``imgsz`` with conf 0.5 (instaseg's
    predictor threshold); returns (runner, training info), or None without ultralytics."""
    try:
        from ultralytics import YOLO
    except ImportError:
        return None
    data = write_yolo_dataset(workdir / "yolo_data", training_tiles(32, seed=0))
    yolo = YOLO("yolo11n-seg.yaml")
    start = time.perf_counter()
    yolo.train(data=str(data), epochs=epochs, imgsz=TRAIN_SIZE, batch=8, device="cpu", workers=0,
               plots=False, val=False, amp=False, pretrained=False, mosaic=0.0, scale=0.0, translate=0.0,
               hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, lr0=0.01, warmup_epochs=1, project=str(workdir / "yolo_runs"),
               name="train", exist_ok=True, verbose=False)
    info = {"epochs": epochs, "images": 32, "imgsz": TRAIN_SIZE,
            "train_s": round(time.perf_counter() - start, 1)}

    def run(image: np.ndarray) -> int:
        # Ultralytics takes BGR numpy; its predict() does letterbox, forward, NMS and mask assembly.
        result = yolo.predict(image[:, :, ::-1], imgsz=imgsz, conf=0.5, verbose=False)[0]
        if result.masks is None:
            return 0
        masks = np.asfortranarray(result.masks.data.cpu().numpy().transpose(1, 2, 0).astype(np.uint8))
        return len(mask_utils.encode(masks))

    return run, info


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "onnxruntime", "numpy", "ultralytics"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=640, help="model input size (canvas side / imgsz)")
    p.add_argument("--image", default="480x640", help="HxW of the test image")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=150, help="training steps per YOLACT model")
    p.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime intra-op threads")
    p.add_argument("--onnx", action="store_true", help="also time ONNX Runtime exports")
    p.add_argument("--no-yolo", action="store_true", help="skip Ultralytics even if importable")
    p.add_argument("--yolo-epochs", type=int, default=150, help="YOLO11n-seg training epochs (4 it each)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated labels to time, from: " + ", ".join(m[0] for m in MODELS))
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "realtime.json"))
    args = p.parse_args()
    h, w = (int(v) for v in args.image.split("x"))
    image, objects = test_image(h, w)
    wanted = set(filter(None, args.models.split(",")))
    unknown = wanted - {m[0] for m in MODELS}
    if unknown:
        p.error(f"--models: unknown {', '.join(sorted(unknown))}")
    specs = [s for s in MODELS if s[0] in wanted]

    runners: dict[str, Callable[[np.ndarray], int]] = {}
    params: dict[str, float] = {}
    train_info: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, name, kwargs in specs:
            torch.set_num_threads(1)
            start = time.perf_counter()
            model, loss = trained_model(name, kwargs, args.size, args.steps)
            steps = SOLO_STEPS if name.startswith("solov2") else args.steps
            train_info[label] = {"steps": steps, "final_loss": round(loss, 3),
                                 "train_s": round(time.perf_counter() - start, 1)}
            print(f"trained {label}: loss {loss:.3f} in {train_info[label]['train_s']} s", flush=True)
            params[label] = sum(q.numel() for q in model.parameters()) / 1e6
            runners[f"{label} (torch)"] = predictor_runner(
                Predictor.from_model(model, {"class_names": CLASS_NAMES, "model_spec": {"name": name}})
            )
            if args.onnx:
                predictor = onnx_predictor(name, kwargs, model, args.threads,
                                           Path(tmp) / label.replace("/", "_"), (h, w))
                runners[f"{label} (onnxruntime)"] = predictor_runner(predictor)
        yolo = None if args.no_yolo else yolo_runner(args.size, args.yolo_epochs, Path(tmp))
        if yolo is not None:
            runners[YOLO_KEY], train_info["yolo11n-seg"] = yolo
            print(f"trained yolo11n-seg in {train_info['yolo11n-seg']['train_s']} s", flush=True)
        torch.set_num_threads(args.threads)

        load_before = os.getloadavg()
        for run in runners.values():
            for _ in range(args.warmup):
                run(image)
        times: dict[str, list[float]] = {k: [] for k in runners}
        dets: dict[str, int] = {}
        for _ in range(args.rounds):
            for key, run in runners.items():
                start = time.perf_counter()
                dets[key] = run(image)
                times[key].append(time.perf_counter() - start)
        load_after = os.getloadavg()

    ref = statistics.median(times[YOLO_KEY]) if YOLO_KEY in times else None
    rows = []
    for key, ts in times.items():
        med = statistics.median(ts)
        rows.append({"model": key, "median_ms": round(med * 1000, 1), "min_ms": round(min(ts) * 1000, 1),
                     "detections": dets[key], "ratio_to_yolo11n_seg": round(med / ref, 2) if ref else None})
    print(f"{'model':44s} {'median ms':>10s} {'min ms':>8s} {'dets':>5s} {'x YOLO11n-seg':>13s}")
    for r in rows:
        ratio = f"{r['ratio_to_yolo11n_seg']:.2f}" if r["ratio_to_yolo11n_seg"] is not None else "-"
        print(f"{r['model']:44s} {r['median_ms']:10.1f} {r['min_ms']:8.1f} {r['detections']:5d} {ratio:>13s}")
    before, after = [round(v, 2) for v in load_before], [round(v, 2) for v in load_after]
    print(f"load average before {before}, after {after}")
    empty = [r["model"] for r in rows if r["detections"] == 0]
    if empty:
        print(f"FAIL: no detections in {', '.join(empty)}: mask assembly was not timed; nothing written")
        sys.exit(1)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "versions": versions(),
        "threads": args.threads, "input_size": args.size, "image_hw": [h, w], "rounds": args.rounds,
        "warmup": args.warmup,
        "statistic": "median over interleaved rounds (one call of each model per round)",
        "timed_path": "uint8 RGB image -> Predictor.predict (score >= 0.5) -> Instances.to_rles()",
        "test_image": f"synthetic rectangles/discs (tests/models/rt_synth.py) at scale 1, {objects} objects",
        "weights": "instaseg models trained briefly on synthetic shapes (see trained_model: YOLACT at a 128 "
                   "canvas, loaded at input_size; SOLOv2 at input_size)",
        "training": train_info,
        "yolo11n_seg": (
            "Ultralytics YOLO11n-seg built from yolo11n-seg.yaml (no pretrained weights), trained on the "
            "same synthetic tiles (written as a YOLO segmentation dataset), predict(imgsz, conf=0.5), then "
            "masks encoded as COCO RLEs with pycocotools"
        ) if YOLO_KEY in times else None,
        "load_avg_1_5_15_before": before, "load_avg_1_5_15_after": after,
        "params_millions": {k: round(v, 2) for k, v in params.items()},
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
