"""Test-time flips: mask and box AP of one checkpoint with and without ``--tta`` on a dataset's split,
and the time per image of each (same process, same images, one after the other).

Usage: python benchmarks/bench_tta.py --checkpoint RUN_OR_PT --data SPEC [--split val] [--out NAME]
Writes benchmarks/results/NAME.json (default tta.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from machine import describe

from instaseg.predict.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="tta")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: dict[str, Any] = {}
    for name, tta in (("plain", False), ("tta", True)):
        start = time.perf_counter()
        ev = evaluate(args.data, checkpoint=args.checkpoint, split=args.split, tta=tta, analysis=False,
                      need_images=False)
        seconds = time.perf_counter() - start
        m = ev.report.metrics
        images = len(ev.dataset) if ev.dataset is not None else None
        rows[name] = {"mask_AP": m["segm"]["AP"], "mask_AP50": m["segm"]["AP50"], "box_AP": m["bbox"]["AP"],
                      "seconds": round(seconds, 2), "images": images}
        print(name, rows[name], flush=True)
    result = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d"),
              "machine": f"{describe()}, {args.threads} torch threads", **vars(args), "rows": rows,
              "mask_AP_gain": rows["tta"]["mask_AP"] - rows["plain"]["mask_AP"]}
    out = Path(__file__).parent / "results" / f"{args.out}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
