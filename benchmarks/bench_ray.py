"""Images/s of batch inference: the plain single-process predictor vs ``--engine ray`` with 1 and 2 actors
(1 torch thread each), with Ray's fixed start-up cost separated from its steady-state rate.

    PYTHONPATH=. INSTASEG_DATA=../shared/data python benchmarks/bench_ray.py [--images 200]

Model: maskrcnn_r18_slim (random weights, 81 classes; score_thresh 0 and 20 detections per image so
mask pasting and RLE encoding are part of the work), or ``--checkpoint``. Images: the 50 COCO val
images of ``$INSTASEG_DATA/coco_tiny`` cycled to ``--images``. Every configuration does the same work
per image (:meth:`instaseg.predict.ray_batch.PredictBatch.predict_one`: read, predict, RLE).

For Ray: ``init_s`` (``ray.init``), ``first_rows_s`` (from submitting the job to the first rows:
actor start, model load, first batch), ``steady_ips`` (slope of rows received vs time after the first
rows) and ``fixed_s`` = init + job - images / steady_ips (what a job pays whatever its length).
Targets: 2 actors >= 1.6x 1 actor (steady), 1 actor >= 0.9x plain (steady, i.e. on long jobs).
CPU time: this process (``time.process_time``) and Ray's processes (psutil, summed before shutdown).
The load average is recorded because the numbers depend on it. Writes benchmarks/results/ray.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from instaseg.engine.checkpoint import save_checkpoint
from instaseg.models import get_model
from instaseg.predict import ray_batch
from instaseg.predict.predictor import Predictor

RESULTS = Path(__file__).parent / "results"


def _children_cpu() -> float:
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _slim_checkpoint(folder: Path) -> Path:
    kwargs = {"num_classes": 81}
    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim", **kwargs)
    path = folder / "slim.pt"
    names = ["background"] + [f"class_{i}" for i in range(1, 81)]
    spec = {"name": "maskrcnn_r18_slim", "kwargs": kwargs}
    save_checkpoint({"model": model.state_dict(), "model_spec": spec, "class_names": names,
                     "category_ids": list(range(81)), "config": {}}, path)
    return path


def steady_rate(arrivals: list[tuple[float, int]]) -> float:
    """Images/s once running: the least-squares slope of rows received vs time, after the first
    arrival (which carries the actors' start-up and model load)."""
    import numpy as np

    pts = np.array(arrivals[1:], dtype=np.float64)
    if len(pts) < 2 or np.ptp(pts[:, 0]) <= 0:
        t, rows = arrivals[-1]
        return rows / max(t, 1e-9)
    return float(np.polyfit(pts[:, 0], pts[:, 1], 1)[0])


def plain(factory: Any, paths: list[str]) -> dict[str, Any]:
    torch.set_num_threads(1)
    worker = ray_batch.PredictBatch(factory, 1, "path", None, None)
    worker.predict_one(paths[0], 0)  # warm-up, as an actor's first batch would be
    start, cpu = time.perf_counter(), time.process_time()
    rows = [worker.predict_one(p, i) for i, p in enumerate(paths)]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    errors = sum(1 for r in rows if r.get("error"))
    print(f"plain      {len(paths) / wall:6.2f} images/s ({wall:.1f} s wall, {cpu:.1f} s CPU, "
          f"{errors} errors)", flush=True)
    return {"images": len(paths), "wall_s": wall, "cpu_s": cpu, "ips": len(paths) / wall, "errors": errors}


def with_ray(factory: Any, paths: list[str], workers: int, batch_size: int, out_dir: Path) -> dict[str, Any]:
    import ray

    start = time.perf_counter()
    ray_batch.connect(None, num_cpus=workers + 1, timeout=10)
    init_s = time.perf_counter() - start
    cpu0 = time.process_time()
    opts = ray_batch.RayOptions(workers=workers, batch_size=batch_size, threads=1)
    try:
        summary = ray_batch.run_ray_predict(factory, paths, out_dir / f"ray{workers}.parquet", opts,
                                            overwrite=True, log=lambda _: None)
        ray_cpu = _children_cpu()
    finally:
        ray.shutdown()
    n, total, first = summary.images, summary.seconds, summary.startup_seconds
    steady = steady_rate(summary.arrivals)
    out = {
        "workers": workers, "images": n, "errors": summary.errors, "init_s": init_s, "job_s": total,
        "first_rows_s": first, "steady_ips": steady, "job_ips": n / total,
        "with_init_ips": n / (total + init_s),
        "fixed_s": init_s + total - n / steady, "driver_cpu_s": time.process_time() - cpu0,
        "ray_processes_cpu_s": ray_cpu,
    }
    print(f"ray x{workers}     {steady:6.2f} images/s steady, {n / total:.2f} over the job; "
          f"init {init_s:.1f} s, "
          f"first rows after {first:.1f} s, fixed cost {out['fixed_s']:.1f} s; CPU: driver "
          f"{out['driver_cpu_s']:.1f} s, Ray processes {ray_cpu:.1f} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--checkpoint", help="an instaseg run/checkpoint (default: random-weight r18_slim)")
    ap.add_argument("--out", default=str(RESULTS / "ray.json"))
    args = ap.parse_args(argv)
    root = Path(os.environ.get("INSTASEG_DATA", "../shared/data")) / "coco_tiny" / "val2017"
    sources = sorted(str(p) for p in root.glob("*.jpg"))
    if not sources:
        print(f"bench_ray: no images in {root} (set INSTASEG_DATA)", file=sys.stderr)
        return 2
    paths = [sources[i % len(sources)] for i in range(args.images)]
    load_start, cpu_start = os.getloadavg(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or _slim_checkpoint(Path(tmp))
        factory = functools.partial(Predictor.load, checkpoint=str(ckpt), score_thresh=0.0, max_detections=20)
        print(f"{len(paths)} images, load average {load_start[0]:.1f}", flush=True)
        report: dict[str, Any] = {
            "date": "2026-12-05", "machine": "CPU-2c, loaded by parallel jobs", "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "model": "checkpoint" if args.checkpoint else "maskrcnn_r18_slim random",
            "plain": plain(factory, paths),
        }
        report["ray_1"] = with_ray(factory, paths, 1, args.batch_size, Path(tmp))
        report["ray_2"] = with_ray(factory, paths, 2, args.batch_size, Path(tmp))
    r1, r2, p = report["ray_1"], report["ray_2"], report["plain"]
    report["scaling_2_vs_1"] = r2["steady_ips"] / r1["steady_ips"]
    report["scaling_efficiency"] = report["scaling_2_vs_1"] / 2
    report["ray1_vs_plain"] = r1["steady_ips"] / p["ips"]
    report["targets_met"] = {"2_actors_ge_1.6x": report["scaling_2_vs_1"] >= 1.6,
                             "1_actor_ge_0.9x_plain": report["ray1_vs_plain"] >= 0.9}
    report["loadavg_end"] = os.getloadavg()
    report["driver_cpu_s_total"] = time.process_time() - cpu_start
    print(f"2 actors / 1 actor {report['scaling_2_vs_1']:.2f}x "
          f"(efficiency {report['scaling_efficiency']:.0%}); "
          f"1 actor / plain {report['ray1_vs_plain']:.2f}x; load average now {report['loadavg_end'][0]:.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
