"""Evaluation speed and memory: ``instaseg evaluate --predictions`` against pycocotools' COCOeval.

A synthetic COCO set (default 5,000 images of 480x640, 3-12 polygon objects each) and 100 segm
detections per image (jittered copies of GT objects with random classes/scores plus random polygons)
are written to a temporary folder. Each side then runs in its own fresh subprocess, from the JSON files
to the 12 segm stats:

- ``pycocotools``: ``COCO(gt)``, ``loadRes(results)``, ``COCOeval(..., "segm")`` evaluate/accumulate/
  summarize;
- ``instaseg``: ``instaseg evaluate --predictions R --data G --iou-types segm --no-analysis
  --no-figures --output DIR`` (validation of the results file and writing metrics.json included; its
  default engine, with worker processes).

The two sides alternate (pycocotools, instaseg, pycocotools, ...) ``--repeats`` times and medians are
reported, with the 1-minute load average around every run (the machine may be shared). Memory: the
peak RSS of the side's main process (``VmHWM``) and the peak of the summed RSS of that process and all
its descendants (the evaluation workers), sampled every 20 ms from /proc; the tree figure counts pages
shared between processes (libraries) once per process, so it is an upper bound.

A scaling run then times ``instaseg`` alone (median of ``--repeats``) at ``--scaling`` image counts
(default 1k, 5k, 20k) and reports seconds per 1,000 images, and (unless ``--no-profile``) one more
fresh process times each stage of instaseg's evaluation in a single process, with its peak RSS after
each stage (the ``profile_serial`` entry).

Run: ``.venv/bin/python benchmarks/bench_eval.py [--images 5000] [--dets 100] [--repeats 3]``; writes
``benchmarks/results/bench_eval.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import platform
import resource
import statistics
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
    t0 = time.perf_counter()
    if side == "profile":
        return profile_stages(gt, res)
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
        args = [
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
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
        if code != 0:
            raise SystemExit(f"instaseg evaluate failed with exit code {code}")
        stats = [float(v) for v in json.loads((out_dir / "metrics.json").read_text())["segm"].values()]
    return {
        "side": side,
        "seconds": time.perf_counter() - t0,
        "peak_rss_mib": _peak_rss_mib(),
        "stats": stats,
    }


def profile_stages(gt: str, res: str) -> dict:
    """Where the time and memory of ``instaseg evaluate``'s segm evaluation go, stage by stage, all in
    this process (one worker's share of the work is half of the matching and accumulation rows)."""
    rows: list[dict] = []
    t0 = time.perf_counter()

    def lap(stage: str, seconds: float | None = None) -> None:
        nonlocal t0
        now = time.perf_counter()
        rows.append(
            {
                "stage": stage,
                "seconds": now - t0 if seconds is None else seconds,
                "peak_rss_mib": _peak_rss_mib(),
            }
        )
        t0 = now

    import instaseg.predict.evaluate  # noqa: F401  (what the CLI imports: torch, models, evaluation)
    from instaseg.evaluation import cocoengine, cocoworker
    from instaseg.evaluation.coco import load_coco_gt
    from instaseg.evaluation.results import validate_results

    lap("imports (torch, instaseg)")
    gt_dict = load_coco_gt(gt)
    lap("ground truth JSON")
    raw = json.loads(Path(res).read_text())
    lap("results JSON parse")
    results = validate_results(raw, gt_dict, copy=False)
    lap("results validation")
    params = cocoengine.Params(iouType="segm")
    cols = cocoengine.build_columns(gt_dict, results, "segm", params)
    lap("columns (loadRes completion, sort, 100-per-image cut)")
    timings: dict[str, float] = {}
    outs = [
        cocoworker.evaluate_chunk(c, timings)
        for c in cocoengine.make_chunks(cols, "segm", params, n_chunks=25)
    ]
    chunk_total = time.perf_counter() - t0
    for stage, seconds in timings.items():
        lap(stage, seconds)
    t0 = time.perf_counter()
    rows.append(
        {
            "stage": "chunk bookkeeping",
            "seconds": chunk_total - sum(timings.values()),
            "peak_rss_mib": _peak_rss_mib(),
        }
    )
    tp = np.concatenate([o[0] for o in outs])
    fp = np.concatenate([o[1] for o in outs])
    tasks, _ = cocoengine.accumulation_tasks(cols, tp, fp, params, n_tasks=4)
    answers = [cocoworker.run_task(t) for t in tasks]
    precision, recall = cocoengine.fill_arrays(answers, tasks, cols.n_cats, params)
    lap("accumulation")
    cocoengine.summarize("segm", precision, recall)
    lap("summarize")
    return {
        "side": "profile",
        "stages": rows,
        "peak_rss_mib": _peak_rss_mib(),
        "seconds": sum(r["seconds"] for r in rows),
        "stats": [],
    }


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def run_child(side: str, gt: str, res: str) -> dict:
    """Run one side in a fresh subprocess, sampling the RSS of its process tree."""
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--side", side, "--gt", gt, "--res", res]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree_peak = 0
    kids: list[int] = []
    tick = 0
    while proc.poll() is None:
        if tick % 10 == 0:  # the process list changes rarely: rescan every 0.2 s
            kids = _descendants(proc.pid)
        tree_peak = max(tree_peak, _rss_kib(proc.pid) + sum(_rss_kib(k) for k in kids))
        tick += 1
        time.sleep(0.02)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{err[-3000:]}")
    run = json.loads(out.strip().splitlines()[-1])
    run["tree_peak_rss_mib"] = max(tree_peak / 1024, run["peak_rss_mib"])
    run["load_1min_before"] = load_before
    run["load_1min_after"] = os.getloadavg()[0]
    return run


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("pycocotools", "faster-coco-eval", "numpy", "torch"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _machine() -> dict:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    return {
        "machine": platform.machine(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
    }


def _median(runs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def _say(text: str) -> None:
    print(text, flush=True)


def compare(images: int, dets: int, repeats: int, tmpdir: Path) -> dict:
    """pycocotools and instaseg alternately, ``repeats`` times each, on one data set."""
    gt, res = str(tmpdir / "gt.json"), str(tmpdir / "results.json")
    runs: dict[str, list[dict]] = {"pycocotools": [], "instaseg": []}
    for i in range(repeats):
        for side in ("pycocotools", "instaseg") if i % 2 == 0 else ("instaseg", "pycocotools"):
            r = run_child(side, gt, res)
            runs[side].append(r)
            _say(
                f"  {side:12s} {r['seconds']:7.1f} s  main RSS {r['peak_rss_mib']:6.0f} MiB  tree "
                f"{r['tree_peak_rss_mib']:6.0f} MiB  load "
                f"{r['load_1min_before']:.2f}->{r['load_1min_after']:.2f}"
            )
    ref, ours = runs["pycocotools"], runs["instaseg"]
    max_diff = max(abs(a - b) for r in ours for a, b in zip(ref[0]["stats"], r["stats"], strict=True))
    summary = {
        "pycocotools_s_median": _median(ref, "seconds"),
        "instaseg_s_median": _median(ours, "seconds"),
        "pycocotools_peak_rss_mib_median": _median(ref, "peak_rss_mib"),
        "instaseg_peak_rss_mib_median": _median(ours, "peak_rss_mib"),
        "instaseg_tree_peak_rss_mib_median": _median(ours, "tree_peak_rss_mib"),
        "instaseg_tree_peak_rss_mib_max": max(r["tree_peak_rss_mib"] for r in ours),
        "pycocotools_peak_rss_mib_min": min(r["peak_rss_mib"] for r in ref),
    }
    summary["speedup_median"] = summary["pycocotools_s_median"] / summary["instaseg_s_median"]
    summary["max_abs_stat_diff"] = max_diff
    summary["stats_identical"] = all(r["stats"] == ref[0]["stats"] for r in ref + ours)
    return {"summary": summary, "runs": runs, "stats_pycocotools": ref[0]["stats"]}


def scaling(sizes: list[int], dets: int, repeats: int, reuse: dict[int, list[dict]]) -> list[dict]:
    """instaseg alone at each image count: median seconds and seconds per 1,000 images."""
    rows = []
    for n in sizes:
        runs = list(reuse.get(n, []))
        if len(runs) < repeats:
            with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
                make_data(n, dets, Path(tmp))
                for _ in range(repeats - len(runs)):
                    runs.append(
                        run_child("instaseg", str(Path(tmp) / "gt.json"), str(Path(tmp) / "results.json"))
                    )
        med = _median(runs, "seconds")
        rows.append(
            {
                "images": n,
                "seconds_median": med,
                "seconds_per_1k_images": med / n * 1000,
                "seconds": [r["seconds"] for r in runs],
                "peak_rss_mib_median": _median(runs, "peak_rss_mib"),
                "tree_peak_rss_mib_median": _median(runs, "tree_peak_rss_mib"),
                "load_1min": [r["load_1min_before"] for r in runs],
            }
        )
        _say(f"  scaling {n:6d} images: {med:7.1f} s median, {med / n * 1000:.2f} s per 1k images")
    base = rows[0]["seconds_per_1k_images"]
    for row in rows:
        row["per_image_cost_vs_smallest"] = row["seconds_per_1k_images"] / base
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--scaling", default="1000,5000,20000", help="image counts for the scaling run ('' for none)"
    )
    ap.add_argument("--side", choices=["pycocotools", "instaseg", "profile"], help=argparse.SUPPRESS)
    ap.add_argument("--no-profile", action="store_true", help="skip the stage-by-stage profile")
    ap.add_argument("--gt", help=argparse.SUPPRESS)
    ap.add_argument("--res", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_eval.json"))
    args = ap.parse_args()
    if args.side:  # child process
        print(json.dumps(run_side(args.side, args.gt, args.res)))
        return
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        tmpdir = Path(tmp)
        t0 = time.perf_counter()
        make_data(args.images, args.dets, tmpdir)
        sizes = {k: (tmpdir / f"{k}.json").stat().st_size / 2**20 for k in ("gt", "results")}
        _say(
            f"data: {args.images} images, {args.dets} dets/image, "
            f"generated in {time.perf_counter() - t0:.1f}s "
            f"(gt {sizes['gt']:.0f} MiB, results {sizes['results']:.0f} MiB)"
        )
        comparison = compare(args.images, args.dets, args.repeats, tmpdir)
        profile = None
        if not args.no_profile:
            profile = run_child("profile", str(tmpdir / "gt.json"), str(tmpdir / "results.json"))
            for row in profile["stages"]:
                _say(
                    f"  profile {row['stage']:55s} {row['seconds']:6.2f} s  "
                    f"peak RSS {row['peak_rss_mib']:6.0f} MiB"
                )
    s = comparison["summary"]
    _say(
        f"speedup {s['speedup_median']:.2f}x (medians {s['pycocotools_s_median']:.1f} s vs "
        f"{s['instaseg_s_median']:.1f} s), stats identical: {s['stats_identical']}, peak RSS "
        f"{s['instaseg_peak_rss_mib_median']:.0f} MiB (tree {s['instaseg_tree_peak_rss_mib_median']:.0f}) vs "
        f"{s['pycocotools_peak_rss_mib_median']:.0f} MiB"
    )
    sizes_scaling = [int(v) for v in args.scaling.split(",") if v.strip()]
    rows = scaling(sizes_scaling, args.dets, args.repeats, {args.images: comparison["runs"]["instaseg"]})
    report = {
        "benchmark": "bench_eval",
        "started": started,
        "images": args.images,
        "dets_per_image": args.dets,
        "iou_type": "segm",
        "repeats": args.repeats,
        **s,
        "scaling": rows,
        "profile_serial": profile,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "data_mib": sizes,
        "versions": _versions(),
        **_machine(),
        "stats_pycocotools": comparison["stats_pycocotools"],
        "runs": comparison["runs"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    _say(f"wrote {out}")


if __name__ == "__main__":
    main()
