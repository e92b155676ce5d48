"""Our PQ against panopticapi's ``pq_compute`` on the real panoptic samples: time and agreement.

    PYTHONPATH=. INSTASEG_DATA=../shared/data .venv/bin/python benchmarks/bench_pq_speed.py [--repeat 20]

For the COCO panoptic sample (2 images, 50 segments) and the Cityscapes sample (1 frame) it writes the
ground truth and a perturbed prediction (shifted 5/9 px, every third segment dropped) with
``write_coco_panoptic`` into a temporary folder, then times, each ``--repeat`` times (median reported):

- ``pq_compute``: panopticapi's entry point (it starts a multiprocessing pool per call, one worker per
  core; its workers' CPU time is not in this process's CPU time, so only wall time is comparable);
- ``pq_compute_single_core``: panopticapi's per-image loop alone (PNG reading included, no pool);
- ``pq_from_files``: ours from the same files (PNG reading and validation included);
- ``evaluate_panoptic``: ours on PanopticResults already in memory (no I/O).

CPU time is ``time.process_time`` of this process. Every run also checks |ours - pq_compute| <= 1e-9.
Writes benchmarks/results/pq_speed.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _perturb(res: Any) -> Any:
    from instaseg.structures.panoptic import PanopticResult, PanopticSegment

    ids = np.zeros_like(res.id_map)
    ids[5:, 9:] = res.id_map[:-5, :-9]
    for s in res.segments[1::3]:
        ids[ids == s.id] = 0
    present = set(np.unique(ids).tolist())
    keep = [s for s in res.segments if s.id in present]
    segs = [PanopticSegment(s.id, s.category_id, s.isthing, s.iscrowd) for s in keep]
    return PanopticResult(ids, segs)


def _time(fn: Callable[[], Any], repeat: int) -> tuple[dict[str, float], Any]:
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):  # pq_compute prints progress
            out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"wall_ms": round(1000 * statistics.median(walls), 2),
            "cpu_ms": round(1000 * statistics.median(cpus), 2)}, out


def _bench(name: str, categories: list[dict], items: list, tmp: Path, repeat: int) -> dict[str, Any]:
    from panopticapi.evaluation import pq_compute, pq_compute_single_core

    from instaseg.data.coco_panoptic import read_coco_panoptic, write_coco_panoptic
    from instaseg.evaluation.panoptic import evaluate_panoptic, pq_from_files

    preds = [(info, _perturb(r)) for info, r in items]
    gt_json = write_coco_panoptic(items, categories, tmp / f"{name}_gt.json")
    pred_json = write_coco_panoptic(preds, categories, tmp / f"{name}_pred.json")
    gt_dir, pred_dir = tmp / f"{name}_gt", tmp / f"{name}_pred"
    gt_data, pred_data = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    cats = {c["id"]: c for c in gt_data["categories"]}
    pairs_json = list(zip(gt_data["annotations"], pred_data["annotations"], strict=True))
    _, gt_read = read_coco_panoptic(gt_json, gt_dir)
    _, pred_read = read_coco_panoptic(pred_json, pred_dir)
    pairs = [(g, p) for (_, g), (_, p) in zip(gt_read, pred_read, strict=True)]

    rows: dict[str, Any] = {}
    rows["pq_compute"], ref = _time(
        lambda: pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir)), repeat)
    rows["pq_compute_single_core"], _ = _time(
        lambda: pq_compute_single_core(0, pairs_json, str(gt_dir), str(pred_dir), cats), repeat)
    rows["pq_from_files"], ours_files = _time(
        lambda: pq_from_files(gt_json, gt_dir, pred_json, pred_dir), repeat)
    rows["evaluate_panoptic"], ours = _time(lambda: evaluate_panoptic(pairs, categories), repeat)
    diff = max(abs(o[g][k] - ref[g][k]) for o in (ours, ours_files) for g in ("All", "Things", "Stuff")
               for k in ("pq", "sq", "rq"))
    return {
        "images": len(items),
        "segments_gt": sum(len(r.segments) for _, r in items),
        "PQ": round(ref["All"]["pq"], 6),
        "max_abs_diff_vs_pq_compute": diff,
        "timings": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pq_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = Path(os.environ.get("INSTASEG_DATA", ROOT.parent / "shared" / "data"))
    from instaseg.data.cityscapes_panoptic import CityscapesPanopticDataset, cityscapes_panoptic_categories
    from instaseg.data.coco_panoptic import read_coco_panoptic

    src = data / "coco_panoptic_sample"
    coco = read_coco_panoptic(src / "panoptic_examples.json", src / "panoptic_examples")
    ds = CityscapesPanopticDataset(data / "cityscapes_sample", "val")
    city = (cityscapes_panoptic_categories(),
            [({"id": i, "file_name": ds.image_path(i).name}, ds.load_panoptic(i)) for i in range(len(ds))])
    load0 = os.getloadavg()[0]
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "load_before": round(load0, 2), "repeat": args.repeat,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cats, items) in (("coco_panoptic_sample", coco), ("cityscapes_sample", city)):
            result[name] = _bench(name, cats, items, Path(tmp), args.repeat)
            t = result[name]["timings"]
            r = result[name]
            print(f"{name}: PQ {r['PQ']:.4f}, |diff| {r['max_abs_diff_vs_pq_compute']:.1e}")
            for k, v in t.items():
                print(f"  {k:24s} wall {v['wall_ms']:8.2f} ms   cpu {v['cpu_ms']:8.2f} ms")
    result["load_after"] = round(os.getloadavg()[0], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
