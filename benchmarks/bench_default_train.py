"""The embedded default: wall time and held-out AP of `instaseg train` with no config.

    .venv/bin/python benchmarks/bench_default_train.py [--config CONFIG.yaml] [--set KEY=VALUE ...]

Runs the real CLI in a subprocess (cold start included), then reads the run's metrics.json.
Records the 1-minute load average before and after (the machine may be shared) and writes
benchmarks/results/default_train.json. Target: <= 600 s and mask AP >= 0.50 on 2 CPU cores.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="a config file (default: the embedded default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "default_train.json"))
    args = p.parse_args()
    exe = Path(sys.executable).with_name("instaseg")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [str(exe), "train", "--output", str(run_dir)]
        if args.config:
            cmd += ["--config", str(Path(args.config).resolve())]
        for o in args.overrides:
            cmd += ["--set", o]
        load_before = os.getloadavg()
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, text=True, capture_output=True)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n")
        if proc.returncode != 0:
            raise SystemExit(f"instaseg train failed with exit code {proc.returncode}")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        files = sorted(str(f.relative_to(run_dir)) for f in run_dir.rglob("*") if f.is_file())
    result = {
        "command": " ".join(["instaseg", "train", *([f"--config {args.config}"] if args.config else []),
                             *[f"--set {o}" for o in args.overrides]]),
        "wall_s": round(wall, 1),
        "mask_AP": round(metrics["segm"]["AP"], 4),
        "box_AP": round(metrics["bbox"]["AP"], 4),
        "mask_AP50": round(metrics["segm"]["AP50"], 4),
        "time_breakdown": next((ln for ln in proc.stdout.splitlines() if ln.startswith("time: ")), None),
        "loadavg_1min_before": round(load_before[0], 2),
        "loadavg_1min_after": round(load_after[0], 2),
        "cpus": os.cpu_count(),
        "run_files": files[:40],
        "targets": {"wall_s": 600, "mask_AP": 0.5},
    }
    print(json.dumps({k: v for k, v in result.items() if k != "run_files"}, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
