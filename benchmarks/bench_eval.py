"""Evaluation speed and memory: ``instaseg evaluate --predictions`` against pycocotools' COCOeval.

A synthetic COCO set (default 5,000 images of 480x640, 3-12 polygon objects each) and 100 segm
detections per image (jittered copies of GT objects with random classes/scores plus random polygons)
are written to a temporary folder. Each side then runs in its own fresh subprocess, from the JSON files
to the 12 segm stats, and reports wall time and peak RSS:

- ``pycocotools``: ``COCO(gt)``, ``loadRes(results)``, ``COCOeval(..., "segm")`` evaluate/accumulate/
  summarize;
- ``instaseg``: ``instaseg evaluate --predictions R --data G --iou-types segm --no-analysis
  --no-figures --output DIR`` (validation of the results file and writing metrics.json included).

Run: ``.venv/bin/python benchmarks/bench_eval.py [--images 5000] [--dets 100]``; writes
``benchmarks/results/bench_eval.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _polygon(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, h: int, w: int) -> list:
    k = int(rng.integers(5, 11))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = rng.uniform(0.7, 1.0, k)
    xs = np.clip(cx + rx * rad * np.cos(ang), 0, w - 1)
    ys = np.clip(cy + ry * rad * np.sin(ang), 0, h - 1)
    return np.stack([xs, ys], 1).ravel().round(2).tolist()


def make_data(n_images: int, n_dets: int, out: Path, seed: int = 0, h: int = 480, w: int = 640) -> None:
    """Write ``gt.json`` and ``results.json`` (segmentation-only COCO results, RLE str counts)."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    n_cats = 20
    cats = [{"id": 2 * i + 1, "name": f"class{i}"} for i in range(n_cats)]  # non-contiguous ids
    images, anns, results = [], [], []
    for img_id in range(1, n_images + 1):
        images.append({"id": img_id, "file_name": f"{img_id:06d}.jpg", "height": h, "width": w})
        objs = []
        for _ in range(int(rng.integers(3, 13))):
            scale = float(np.exp(rng.uniform(np.log(6), np.log(200))))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            rx, ry = scale * rng.uniform(0.5, 1.5), scale * rng.uniform(0.5, 1.5)
            objs.append((cx, cy, rx, ry, cats[int(rng.integers(n_cats))]["id"]))
        polys = [[_polygon(rng, *o[:4], h, w)] for o in objs]
        for (*_, cat), poly in zip(objs, polys, strict=True):
            rle = mask_utils.merge(mask_utils.frPyObjects(poly, h, w))
            area = float(mask_utils.area(rle))
            if area < 1:
                continue
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat,
                    "iscrowd": 0,
                    "segmentation": poly,
                    "area": area,
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                }
            )
        det_polys, det_meta = [], []
        for j in range(n_dets):
            if j < 2 * len(objs):  # near-copies of GT objects: shifted, scaled, 20% relabelled
                cx, cy, rx, ry, cat = objs[j % len(objs)]
                pts = np.asarray(polys[j % len(objs)][0]).reshape(-1, 2)
                centre = pts.mean(0)
                pts = (pts - centre) * (1 + rng.normal(0, 0.1)) + centre + rng.normal(0, 0.1, 2) * [rx, ry]
                pts = np.clip(pts, 0, [w - 1, h - 1])
                if rng.random() < 0.2:
                    cat = cats[int(rng.integers(n_cats))]["id"]
                det_polys.append(pts.ravel().round(2).tolist())
            else:
                scale = float(np.exp(rng.uniform(np.log(4), np.log(150))))
                cx, cy, rx, ry = rng.uniform(0, w), rng.uniform(0, h), scale, scale * rng.uniform(0.5, 2)
                cat = cats[int(rng.integers(n_cats))]["id"]
                det_polys.append(_polygon(rng, cx, cy, rx, ry, h, w))
            det_meta.append((cat, float(rng.random())))
        rles = mask_utils.frPyObjects(det_polys, h, w)
        for rle, (cat, score) in zip(rles, det_meta, strict=True):
            results.append(
                {
                    "image_id": img_id,
                    "category_id": cat,
                    "score": round(score, 5),
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                }
            )
    (out / "gt.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (out / "results.json").write_text(json.dumps(results))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_side(side: str, gt: str, res: str) -> dict:
    """One timed evaluation in this (fresh) process."""
    import contextlib
    import io

    t0 = time.perf_counter()
    if side == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(gt)
            coco_dt = coco_gt.loadRes(res)
            ev = COCOeval(coco_gt, coco_dt, "segm")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = [float(v) for v in ev.stats]
    else:
        from instaseg.cli import main

        out_dir = Path(res).parent / "instaseg_out"
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(
                [
                    "evaluate",
                    "--predictions",
                    res,
                    "--data",
                    gt,
                    "--iou-types",
                    "segm",
                    "--no-analysis",
                    "--no-figures",
                    "--output",
                    str(out_dir),
                ]
            )
        if code != 0:
            raise SystemExit(f"instaseg evaluate failed with exit code {code}")
        stats = [float(v) for v in json.loads((out_dir / "metrics.json").read_text())["segm"].values()]
    return {
        "side": side,
        "seconds": time.perf_counter() - t0,
        "peak_rss_mib": _peak_rss_mib(),
        "stats": stats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--side", choices=["pycocotools", "instaseg"], help=argparse.SUPPRESS)
    ap.add_argument("--gt", help=argparse.SUPPRESS)
    ap.add_argument("--res", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_eval.json"))
    args = ap.parse_args()
    if args.side:  # child process
        print(json.dumps(run_side(args.side, args.gt, args.res)))
        return
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        tmpdir = Path(tmp)
        t0 = time.perf_counter()
        make_data(args.images, args.dets, tmpdir)
        gen_s = time.perf_counter() - t0
        gt, res = str(tmpdir / "gt.json"), str(tmpdir / "results.json")
        sizes = {k: (tmpdir / f"{k}.json").stat().st_size / 2**20 for k in ("gt", "results")}
        print(
            f"data: {args.images} images, {args.dets} dets/image, generated in {gen_s:.1f}s "
            f"(gt {sizes['gt']:.0f} MiB, results {sizes['results']:.0f} MiB)",
            flush=True,
        )
        runs = {}
        for side in ("pycocotools", "instaseg"):
            cmd = [sys.executable, __file__, "--side", side, "--gt", gt, "--res", res]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
            runs[side] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"{side:12s} {runs[side]['seconds']:8.1f} s   peak RSS {runs[side]['peak_rss_mib']:7.0f} MiB",
                flush=True,
            )
    ref, ours = runs["pycocotools"], runs["instaseg"]
    max_diff = max(abs(a - b) for a, b in zip(ref["stats"], ours["stats"], strict=True))
    speedup = ref["seconds"] / ours["seconds"]
    report = {
        "benchmark": "bench_eval",
        "images": args.images,
        "dets_per_image": args.dets,
        "iou_type": "segm",
        "pycocotools_s": ref["seconds"],
        "instaseg_s": ours["seconds"],
        "speedup": speedup,
        "pycocotools_peak_rss_mib": ref["peak_rss_mib"],
        "instaseg_peak_rss_mib": ours["peak_rss_mib"],
        "max_abs_stat_diff": max_diff,
        "stats_pycocotools": ref["stats"],
        "stats_instaseg": ours["stats"],
        "data_mib": sizes,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(
        f"speedup {speedup:.2f}x, max |stat diff| {max_diff:.2e}, instaseg peak RSS "
        f"{ours['peak_rss_mib']:.0f} MiB"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
