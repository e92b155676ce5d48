"""Box-only training on Penn-Fudan: GrabCut pseudo-masks vs the box-supervised loss vs full masks.

Every arm trains the same model with the same recipe and iteration budget on Penn-Fudan's train
split and is scored (mask AP) on its val split:

- ``full_masks``: the true masks;
- ``grabcut``: masks discarded, GrabCut pseudo-masks from the boxes (``instaseg data pseudo-masks``);
- ``box_fill``: masks discarded, each mask the filled box (reference);
- ``box_loss``: masks discarded (the filled-box file: boxes only), ``train.supervision=boxes``;
- ``grabcut_self``: the GrabCut file, and self-training: after ``--relabel-at`` of the iterations
  the model relabels the training masks (:mod:`instaseg.engine.relabel`; its CPU time is in the
  arm's ``cpu_s``, and the relabelled masks' mean IoU is reported).

The four arms at 500 iterations take about 25 CPU-minutes (plus ~2 for GrabCut). ``--arms`` runs a
subset (the JSON then holds only those).

``--core LO,HI`` and ``--core-shape`` seed GrabCut with a definite-object core (``instaseg data
pseudo-masks --core``). ``--cache DIR`` keeps the pseudo-mask files (and their reports) between runs.

Usage: python benchmarks/bench_box_supervision.py [--iters 500] [--size 256] [--arms a,b] [--out NAME]
       [--seed S] [--core 0.4,0.6 --core-shape band] [--cache runs/pseudo]
       python benchmarks/bench_box_supervision.py --summary a,b,c --out NAME   # seeds' runs -> one table
Needs INSTASEG_DATA (../shared/data). Single-threaded torch; reports CPU seconds besides wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instaseg.config import load_config
from instaseg.data.convert import Conversion, write_conversion
from instaseg.data.pseudo_masks import compare_masks, load_box_source, pseudo_mask_dataset
from instaseg.engine.relabel import RelabelHook
from instaseg.predict.validation import train

RESULTS = Path(__file__).parent / "results"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pseudo(spec: str, method: str, out: Path, **grabcut: Any) -> dict[str, Any]:
    images, cats = load_box_source(spec, split="train")
    coco, masks, report = pseudo_mask_dataset(images, cats, method=method, output_dir=out.parent, **grabcut)
    report.mean_iou, report.compared = compare_masks(masks, spec, split="train")
    write_conversion(Conversion(coco=coco), out, overwrite=True)
    return report.to_dict()


def _run(train_spec: str, train_split: str | None, val: str, extra: list[str], args: Any,
         out: Path, hooks: list[Any] | None = None) -> dict[str, Any]:
    overrides = [
        "model.name=maskrcnn_r18_slim",
        f"model.kwargs={{min_size: {args.size}, max_size: {args.size}, anchor_sizes: [16, 32, 64, 128]}}",
        f"data.train={train_spec}", f"data.train_split={'null' if train_split is None else train_split}",
        f"data.val={val}", "data.val_split=val",
        f"train.max_iters={args.iters}", "train.batch_size=4", "train.lr=0.02", "train.warmup_iters=50",
        f"train.seed={args.seed}", "train.num_threads=1", "train.checkpoint_period=0",
        "eval.num_overlays=0", "output.tensorboard=false", "output.mlflow=false", "output.progress=false",
        *extra,
    ]
    wall, cpu = time.perf_counter(), _cpu()
    result = train(load_config(None, overrides), output=out, hooks=hooks)
    metrics = result.metrics or {}
    return {"mask_AP": metrics.get("segm", {}).get("AP"), "box_AP": metrics.get("bbox", {}).get("AP"),
            "iterations": result.iterations, "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(_cpu() - cpu, 1)}


def summary(names: list[str], out: Path) -> dict[str, Any]:
    """Per-seed box-only fractions of full-mask AP (each seed's own full-mask run) and their mean."""
    rows = []
    for name in names:
        path = RESULTS / f"{name}.json"
        run = json.loads(path.read_text()) if path.is_file() else {}
        if not {"full_masks", "grabcut"} <= set(run.get("arms", {})):
            raise SystemExit(f"{path}: no such result with both a full_masks and a grabcut arm")
        full, box = run["arms"]["full_masks"]["mask_AP"], run["arms"]["grabcut"]["mask_AP"]
        rows.append({"file": f"{name}.json", "seed": run["seed"], "full_masks_mask_AP": full,
                     "grabcut_mask_AP": box, "fraction_of_full": round(box / full, 4), "date": run["date"]})
    fractions = np.array([r["fraction_of_full"] for r in rows])
    mean_full = float(np.mean([r["full_masks_mask_AP"] for r in rows]))
    mean_box = float(np.mean([r["grabcut_mask_AP"] for r in rows]))
    result = {
        "seeds": rows, "ratio_of_mean_APs": round(mean_box / mean_full, 4),
        "mean_of_fractions": round(float(fractions.mean()), 4),
        "median_of_fractions": round(float(np.median(fractions)), 4),
        "std_of_fractions": round(float(fractions.std(ddof=1)), 4) if len(rows) > 1 else None,
        "seeds_at_target": int((fractions >= 0.90).sum()),
        "target": "box-only mask AP >= 0.90 x full-mask mask AP (same seed, same code)",
        "command": " ".join(["python", *sys.argv]),
    }
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "seeds"}))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--summary", default=None, help="comma-separated result names (one per seed) to "
                        "summarise into --out instead of training")
    parser.add_argument("--iters", type=int, default=500)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default="full_masks,grabcut,box_fill,box_loss")
    parser.add_argument("--out", default="box_supervision")
    parser.add_argument("--core", default=None, help="GrabCut's definite-object core LO,HI (box fractions)")
    parser.add_argument("--cache", default=None, help="folder keeping the pseudo-mask files between runs")
    parser.add_argument("--relabel-at", type=float, default=0.5, help="grabcut_self: fraction of --iters")
    parser.add_argument("--relabel-weight", type=float, default=0.75, help="grabcut_self: the model's weight")
    parser.add_argument("--core-shape", default="band", help="ellipse, rect or band")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary.split(","), RESULTS / f"{args.out}.json")
        return
    torch.set_num_threads(1)
    root = Path(os.environ["INSTASEG_DATA"]) / "pennfudan"
    spec = f"folder:{root}"
    core = tuple(float(v) for v in args.core.split(",")) if args.core else None
    results: dict[str, Any] = {
        "iters": args.iters, "size": args.size, "seed": args.seed, "machine": "CPU-2c, shared",
        "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv]),
        "grabcut": {"core": core, "core_shape": args.core_shape if core else None},
        "arms": {}, "pseudo_masks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        folder = Path(args.cache) if args.cache else tmpdir
        folder.mkdir(parents=True, exist_ok=True)
        tag = f"_core{core[0]}-{core[1]}_{args.core_shape}" if core else ""
        files = {"grabcut": folder / f"grabcut{tag}.json", "box": folder / "box.json"}
        wanted = args.arms.split(",")
        users = {"grabcut": {"grabcut", "grabcut_self"}, "box": {"box_fill", "box_loss"}}
        needed = {method for method, arms_using in users.items() if arms_using & set(wanted)}
        for method in sorted(needed):
            report_file = files[method].with_suffix(".report.json")
            if report_file.exists() and files[method].exists():  # GrabCut is deterministic (seeded)
                results["pseudo_masks"][method] = {**json.loads(report_file.read_text()), "cached": True}
                continue
            wall, cpu = time.perf_counter(), _cpu()
            grabcut = {"core": core, "core_shape": args.core_shape} if method == "grabcut" else {}
            results["pseudo_masks"][method] = _pseudo(spec, method, files[method], **grabcut)
            results["pseudo_masks"][method]["cpu_s"] = round(_cpu() - cpu, 1)
            results["pseudo_masks"][method]["wall_s"] = round(time.perf_counter() - wall, 1)
            report_file.write_text(json.dumps(results["pseudo_masks"][method]))
            print(method, results["pseudo_masks"][method], flush=True)
        arms = {
            "full_masks": (spec, "train", []),
            "grabcut": (f"coco:{files['grabcut']}", None, []),
            "box_fill": (f"coco:{files['box']}", None, []),
            "box_loss": (f"coco:{files['box']}", None, ["train.supervision=boxes"]),
            "grabcut_self": (f"coco:{files['grabcut']}", None, []),
        }
        for name in wanted:
            train_spec, split, extra = arms[name]
            hook = RelabelHook(int(args.iters * args.relabel_at), weight=args.relabel_weight)
            hooks = [hook] if name == "grabcut_self" else []
            results["arms"][name] = _run(train_spec, split, spec, extra, args, tmpdir / name, hooks)
            if hooks:
                iou, _ = compare_masks(hook.masks, spec, split="train")
                results["arms"][name].update(relabel_at=hook.at_iter, relabel_weight=hook.weight,
                                             relabel_cpu_s=round(hook.seconds, 1), relabel_mean_iou=iou)
            print(name, results["arms"][name], flush=True)
    full = results["arms"].get("full_masks", {}).get("mask_AP")
    for arm in results["arms"].values():
        if full and arm["mask_AP"] is not None:
            arm["fraction_of_full"] = round(arm["mask_AP"] / full, 3)
    out = RESULTS / f"{args.out}.json"
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
