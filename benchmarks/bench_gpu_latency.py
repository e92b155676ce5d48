"""Model latency on a CUDA GPU: the contract's inference path (``lowres_inference``) at a given size.

    python benchmarks/bench_gpu_latency.py --size 544 --rounds 50

Each timed call takes a float image already on the device through the model's own resize, backbone,
heads, NMS and box-relative mask assembly (``forward_lowres``), synchronised before and after. Random
weights (nothing can be downloaded here) with ``score_thresh = 0`` so that every model returns its
maximum number of detections: the mask path always runs in full. Rounds interleave the models.
Writes benchmarks/results/gpu_latency.json with the device name, torch version and per-model medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from instaseg.models import get_model
from instaseg.ops.lowres import lowres_inference

MODELS = {
    "maskrcnn_r18_slim": {},
    "simple_fpn": {},
    "yolact_lite": {},
    "yolact_nano": {},
    "solov2_lite": {"final_threshold": 0.0},  # its second (post-NMS) threshold, 0 as well
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=544, help="input size (one-stage models: a multiple of 32)")
    p.add_argument("--image", default="480x640", help="HxW of the test image")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_latency.json"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures GPU latency")
    device = torch.device("cuda")
    h, w = (int(v) for v in args.image.split("x"))
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    models = {}
    for name, kw in MODELS.items():
        size = {"input_size": args.size} if name.startswith(("yolact", "solov2")) else {
            "min_size": args.size, "max_size": args.size}
        torch.manual_seed(0)
        model = get_model(name, num_classes=81, **size, **kw).to(device).eval()
        model.score_thresh = 0.0
        models[name] = model
    times: dict[str, list[float]] = {n: [] for n in models}
    dets: dict[str, int] = {}
    for r in range(args.warmup + args.rounds):
        for name, model in models.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = lowres_inference(model, [image])
            torch.cuda.synchronize()
            if r >= args.warmup:
                times[name].append(1000 * (time.perf_counter() - t0))
            dets[name] = int(len(out[0]["boxes"]))
    rows = {n: {"median_ms": round(statistics.median(t), 2), "min_ms": round(min(t), 2),
                "fps": round(1000 / statistics.median(t), 1), "detections": dets[n]}
            for n, t in times.items()}
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "size": args.size,
              "image": [h, w], "rounds": args.rounds, "date": time.strftime("%Y-%m-%d"),
              "weights": "random, score_thresh 0 (each model's maximum detections)", "models": rows}
    for n, row in rows.items():
        print(f"{n:20s} {row['median_ms']:8.2f} ms  {row['fps']:7.1f} FPS  {row['detections']} detections")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
