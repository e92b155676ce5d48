"""The embedded panoptic default: CPU time, wall time and held-out PQ of
`instaseg train -c configs/panoptic_fpn.yaml` (Panoptic FPN r18 slim on shapes_panoptic at 128 px).

    .venv/bin/python benchmarks/bench_panoptic.py [--threads 1] [--set KEY=VALUE ...] [--out FILE]

Runs the real CLI in a subprocess (cold start included) with ``train.num_threads`` fixed, measures the
child's CPU seconds (``resource.getrusage(RUSAGE_CHILDREN)``: user + system) and wall seconds, then
reads the run's metrics.json (PQ / SQ / RQ for All, Things, Stuff on the 120 held-out val images).
Writes benchmarks/results/panoptic.json. Targets: <= 600 CPU-s and PQ >= 0.55.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "panoptic_fpn.yaml"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "panoptic.json"))
    args = p.parse_args()
    overrides = [f"train.num_threads={args.threads}", "output.mlflow=false", "output.tensorboard=false",
                 "output.progress=false", *args.overrides]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "instaseg.cli", "train", "-c", args.config, "--output", str(run_dir)]
        for o in overrides:
            cmd += ["--set", o]
        load_before = os.getloadavg()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, text=True, capture_output=True, env=env)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_after = os.getloadavg()
        print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n")
        if proc.returncode != 0:
            raise SystemExit(f"instaseg train failed with exit code {proc.returncode}")
        metrics = json.loads((run_dir / "metrics.json").read_text())["panoptic"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    table = {g: {k: round(float(v), 4) for k, v in metrics[g].items()} for g in ("All", "Things", "Stuff")}
    result = {
        "command": " ".join(["instaseg", "train", "-c", os.path.relpath(args.config, ROOT),
                             *[f"--set {o}" for o in overrides]]),
        "model": "panoptic_fpn_r18_slim",
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "threads": args.threads,
        "PQ": table["All"]["pq"],
        "PQ_things": table["Things"]["pq"],
        "PQ_stuff": table["Stuff"]["pq"],
        "tables": table,
        "per_class": metrics.get("per_class"),
        "time_breakdown": next((ln for ln in proc.stdout.splitlines() if ln.startswith("time: ")), None),
        "loadavg_1min_before": round(load_before[0], 2),
        "loadavg_1min_after": round(load_after[0], 2),
        "cpus": os.cpu_count(),
        "targets": {"cpu_s": 600, "PQ": 0.55},
    }
    print(json.dumps({k: v for k, v in result.items() if k != "per_class"}, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
