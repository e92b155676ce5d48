"""Latency of the real-time models at 640 on this CPU, against Ultralytics YOLO11n-seg, in ONE process.

    .venv/bin/python benchmarks/bench_realtime.py                   # instaseg models only
    /tmp/ulvenv/bin/python benchmarks/bench_realtime.py             # + YOLO11n-seg (see below)

Each timed call goes from a uint8 HxWx3 RGB image (640x480 by default) to final detections with
full-resolution masks: tensor conversion, letterbox, forward, Fast/Matrix NMS, mask assembly and the
resize to the image ("model forward + post-processing to final masks"). Models use random weights
(nothing can be downloaded here), so detection counts are whatever random weights give; the graph's
fixed-size part (top-K candidates, their masks, NMS) runs in full either way. Backends: PyTorch eager
and, with ``--onnx``, ONNX Runtime through instaseg's own export path (``instaseg.export``).

Rounds interleave the models (one call of each per round), so a load change on a shared machine hits
all of them alike; the ratio column is median latency / YOLO11n-seg's median latency.

Ultralytics is AGPL and is never a dependency of instaseg: install it only in a throwaway venv that
also sees instaseg's packages, e.g.::

    python3.11 -m venv /tmp/ulvenv
    printf '/work/main/.venv/lib/python3.11/site-packages\\n/work/main\\n' \\
        > /tmp/ulvenv/lib/python3.11/site-packages/zz_instaseg.pth
    /tmp/ulvenv/bin/pip install ultralytics      # reuses the venv's torch
    YOLO_OFFLINE=1 /tmp/ulvenv/bin/python benchmarks/bench_realtime.py --onnx

Target (issue 7): the fastest instaseg real-time model at most 1.0x YOLO11n-seg's latency.
Writes benchmarks/results/realtime.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instaseg.models.registry import get_model  # noqa: E402

# (label, registered name, builder kwargs); the *_lite defaults use MobileNetV3-Large; yolact_nano (the
# fastest registered configuration) is yolact_lite on MobileNetV3-Small, as is solov2_lite/mnv3-small.
MODELS = [
    ("yolact_lite", "yolact_lite", {}),
    ("yolact_nano", "yolact_nano", {}),
    ("solov2_lite", "solov2_lite", {}),
    ("solov2_lite/mnv3-small", "solov2_lite", {"backbone": "mobilenet_v3_small"}),
]
FULL_MODELS = [("yolact", "yolact", {}), ("solov2", "solov2", {})]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)


def torch_runner(model: torch.nn.Module) -> Callable[[np.ndarray], int]:
    def run(image: np.ndarray) -> int:
        with torch.inference_mode():
            out = model([to_tensor(image)])[0]
        return int(out["scores"].numel())

    return run


def onnx_runner(
    name: str, model: torch.nn.Module, threads: int, workdir: Path
) -> Callable[[np.ndarray], int]:
    from instaseg.export.onnx_export import export_onnx
    from instaseg.predict.runtime import load_onnx_model

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.onnx"
    meta = {"model_spec": {"name": name, "kwargs": {}}, "class_names": ["background"] + ["c"] * 80,
            "category_ids": list(range(81))}
    export_onnx(model, path, meta=meta, image_size=(480, 640), verify=False)
    detector, _ = load_onnx_model(path, threads=threads)

    def run(image: np.ndarray) -> int:
        return int(detector([to_tensor(image)])[0]["scores"].numel())

    return run


def yolo_runner(imgsz: int) -> Callable[[np.ndarray], int] | None:
    try:
        from ultralytics import YOLO
    except ImportError:
        return None
    yolo = YOLO("yolo11n-seg.yaml")  # built from its YAML: random weights, offline

    def run(image: np.ndarray) -> int:
        # Ultralytics takes BGR numpy; its predict() does letterbox, forward, NMS and mask assembly.
        result = yolo.predict(image[:, :, ::-1], imgsz=imgsz, verbose=False)[0]
        return 0 if result.boxes is None else len(result.boxes)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=640, help="model input size (canvas side / imgsz)")
    p.add_argument("--image", default="480x640", help="HxW of the test image")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime intra-op threads")
    p.add_argument("--onnx", action="store_true", help="also time ONNX Runtime exports")
    p.add_argument("--full", action="store_true", help="also time the paper-sized yolact / solov2")
    p.add_argument("--no-yolo", action="store_true", help="skip Ultralytics even if importable")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "realtime.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = (int(v) for v in args.image.split("x"))
    image = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)

    runners: dict[str, Callable[[np.ndarray], int]] = {}
    params: dict[str, float] = {}
    specs = MODELS + (FULL_MODELS if args.full else [])
    with tempfile.TemporaryDirectory() as tmp:
        for label, name, kwargs in specs:
            model = get_model(name, num_classes=81, input_size=args.size, **kwargs).eval()
            params[label] = sum(q.numel() for q in model.parameters()) / 1e6
            runners[f"{label} (torch)"] = torch_runner(model)
            if args.onnx:
                runners[f"{label} (onnxruntime)"] = onnx_runner(
                    name, model, args.threads, Path(tmp) / label.replace("/", "_")
                )
        yolo = None if args.no_yolo else yolo_runner(args.size)
        if yolo is not None:
            runners["yolo11n-seg (ultralytics, torch)"] = yolo

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

    yolo_key = "yolo11n-seg (ultralytics, torch)"
    ref = statistics.median(times[yolo_key]) if yolo_key in times else None
    rows = []
    for key, ts in times.items():
        med = statistics.median(ts)
        rows.append({"model": key, "median_ms": round(med * 1000, 1), "min_ms": round(min(ts) * 1000, 1),
                     "detections": dets[key], "ratio_to_yolo11n_seg": round(med / ref, 2) if ref else None})
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "threads": args.threads, "input_size": args.size, "image_hw": [h, w], "rounds": args.rounds,
        "load_avg_1_5_15_before": [round(v, 2) for v in load_before],
        "load_avg_1_5_15_after": [round(v, 2) for v in load_after],
        "params_millions": {k: round(v, 2) for k, v in params.items()},
        "results": rows,
    }
    print(f"{'model':44s} {'median ms':>10s} {'min ms':>8s} {'dets':>5s} {'x YOLO11n-seg':>13s}")
    for r in rows:
        ratio = f"{r['ratio_to_yolo11n_seg']:.2f}" if r["ratio_to_yolo11n_seg"] is not None else "-"
        print(f"{r['model']:44s} {r['median_ms']:10.1f} {r['min_ms']:8.1f} {r['detections']:5d} {ratio:>13s}")
    print(f"load average before {result['load_avg_1_5_15_before']}, after {result['load_avg_1_5_15_after']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
