"""Per-image loading cost of each dataset format (decode + masks), and COCO export time.

Usage: INSTASEG_DATA=../shared/data python benchmarks/bench_data_formats.py [--repeat 3]
Prints one line per format and writes benchmarks/results/data_formats.json. Formats whose sample data
is missing are skipped. The shapes target: generating a 128x128 image costs ~1-2 ms, far below a
training step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from instaseg.data.build import build_dataset
from instaseg.data.coco import dataset_to_coco


def _time_records(ds, n: int, repeat: int) -> float:
    """Best-of-``repeat`` mean milliseconds per ``load_record`` over the first ``n`` images."""
    n = min(n, len(ds))
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for i in range(n):
            ds.load_record(i)
        best = min(best, (time.perf_counter() - t) / n * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(os.environ.get("INSTASEG_DATA", "../shared/data"))
    specs = {
        "shapes 128": ("shapes:1000:128", 500),
        "shapes 256": ("shapes:1000:256", 200),
        "coco_tiny val": (f"coco:{root}/coco_tiny/annotations/instances_val2017.json", 50),
        "cityscapes_sample": (f"cityscapes:{root}/cityscapes_sample", 1),
        "pennfudan": (f"folder:{root}/pennfudan", 50),
        "nuclei": (f"folder:{root}/nuclei", 40),
    }
    results = {}
    for name, (spec, n) in specs.items():
        try:
            ds = build_dataset(spec)
        except Exception as exc:  # sample data missing on this machine
            print(f"{name:20s} skipped: {exc}")
            continue
        ms = _time_records(ds, n, args.repeat)
        t = time.perf_counter()
        coco = dataset_to_coco(ds) if len(ds) <= 200 else None
        export_s = time.perf_counter() - t if coco else None
        results[name] = {"spec": spec.replace(str(root), "$INSTASEG_DATA"), "images_timed": min(n, len(ds)),
                         "ms_per_record": round(ms, 3),
                         "export_s": None if export_s is None else round(export_s, 3)}
        extra = f", dataset_to_coco {export_s:.2f} s for {len(ds)} images" if export_s is not None else ""
        print(f"{name:20s} {ms:8.2f} ms/record{extra}")
    out = Path(__file__).parent / "results" / "data_formats.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                               "load_avg": os.getloadavg(), "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
