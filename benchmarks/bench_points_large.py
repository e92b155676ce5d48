"""Large point clouds: time and peak memory of ``instaseg predict``'s point path as scenes grow.

A point model (``--checkpoint RUN``, or one trained here for ``--train-iters`` iterations of
``configs/points.yaml`` so that instances are found) segments synthetic rooms of 100k to 3M points
through :class:`~instaseg.predict.points.PointPredictor` (voxel-downsampled to 2 cm, labels carried
back to every point). Each size runs in a fresh subprocess that loads the scene from an NPZ, resets
the kernel's peak-RSS counter, predicts, and reports the peak RSS growth over the RSS before
predicting, so imports, the model and the scene itself are not counted.

    PYTHONPATH=. python benchmarks/bench_points_large.py [--sizes 100000,1000000,3000000]

Writes benchmarks/results/points_large.json. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(checkpoint: str, scene_path: str) -> None:
    """Runs in the subprocess: one prediction, printed as one JSON line."""
    import torch

    from instaseg.data.points.io import read_npz
    from instaseg.predict.points import PointPredictor

    torch.set_num_threads(1)
    predictor = PointPredictor.load(checkpoint)
    scene = read_npz(scene_path, max_points=10**8)
    small = read_npz(scene_path, max_points=10**8)
    predictor.predict(small)  # warm-up on the same scene (lazy kernels, allocator)
    del small
    before = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    wall, cpu = time.perf_counter(), time.process_time()
    instances, info = predictor.predict(scene)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _rss_kib("VmHWM")
    print(json.dumps({
        "points": len(scene), "model_points": info["model_points"], "instances": len(instances),
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "peak_rss_growth_mib": round((peak - before) / 1024, 1), "rss_before_mib": round(before / 1024, 1),
        "scene_mib": round(sum(a.nbytes for a in (scene.xyz, scene.rgb) if a is not None) / 2**20, 1),
    }))


def _train(iters: int, out: Path) -> Path:
    import torch

    from instaseg.config import load_config
    from instaseg.engine.launch import run_training

    torch.set_num_threads(1)
    cfg = load_config(str(ROOT / "configs/points.yaml"),
                      [f"train.max_iters={iters}", "train.checkpoint_period=0", "output.progress=false"])
    result = run_training(cfg, output=out)
    return result.run_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="a trained point model (run dir or .pt); default: train one here")
    ap.add_argument("--train-iters", type=int, default=300)
    ap.add_argument("--sizes", default="100000,300000,1000000,3000000")
    ap.add_argument("--output", default=str(ROOT / "benchmarks/results/points_large.json"))
    args = ap.parse_args()
    from instaseg.data.points.io import write_scene
    from instaseg.data.points.synthetic import generate_scene

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        train_cpu = None
        if checkpoint is None:
            cpu0 = time.process_time()
            checkpoint = str(_train(args.train_iters, Path(tmp) / "run"))
            train_cpu = round(time.process_time() - cpu0, 1)
        rows = []
        for n in (int(s) for s in args.sizes.split(",")):
            path = write_scene(Path(tmp) / f"scene_{n}.npz", generate_scene(424_242, n))
            env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
            proc = subprocess.run([sys.executable, __file__, "--child", checkpoint, str(path)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{n} points: {proc.stderr[-2000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(row, flush=True)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": "CPU-2c", "torch_threads": 1,
           "checkpoint": args.checkpoint or f"configs/points.yaml, {args.train_iters} iterations here",
           "train_cpu_s": train_cpu, "downsample_m": 0.02, "runs": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
