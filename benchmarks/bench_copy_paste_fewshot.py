"""Copy-paste and few-shot on a real dataset: mask AP at K labelled images, with and without
copy-paste, from an ImageNet backbone or from a model first trained on the synthetic shapes.

``--dataset`` is a folder under INSTASEG_DATA (pennfudan, nuclei); both have one class, so
``data.shots=K`` is exactly K labelled train images (drawn with the run's seed). Arms, all with the
same model, recipe and iteration budget, scored on the val split:

- ``imagenet``: the ImageNet backbone (``--backbone-weights``), no copy-paste (every K);
- ``copy_paste``: the same start with ``data.augment.copy_paste_p`` (K in ``--copy-paste-shots``);
- ``from_shapes``: fine-tuning a model first trained ``--shapes-iters`` iterations on the synthetic
  shapes from the same ImageNet start (synthetic-to-real transfer; K in ``--fewshot-shots``).

Each row is written to ``benchmarks/results/NAME.json`` as it ends and a rerun with the same arguments
skips stored rows (the runs are deterministic per seed). The shapes model is kept at
``--shapes-cache`` so a second dataset reuses it.

Usage: python benchmarks/bench_copy_paste_fewshot.py --dataset pennfudan [--seeds 0] [--iters 200]
       [--size 320] [--shapes-iters 600] [--out NAME]
Needs INSTASEG_DATA. Single-threaded torch; CPU seconds reported besides wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from instaseg.config import load_config
from instaseg.predict.validation import train

# the whole augment dict in every arm: a dotted key alone would replace the defaults
AUGMENT = "data.augment={{crop_p: 0.0, affine_p: 0.0, noise_p: 0.0, distortion_p: 0.0, copy_paste_p: {}}}"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def _common(args: Any, seed: int) -> list[str]:
    return [
        f"model.name={args.model}",
        f"model.kwargs={{min_size: {args.size}, max_size: {args.size}"
        + (f", {args.model_kwargs}}}" if args.model_kwargs else "}"),
        f"train.max_iters={args.iters}", "train.batch_size=4", f"train.lr={args.lr}",
        "train.warmup_iters=20", f"train.seed={seed}", "train.num_threads=1",
        "train.checkpoint_period=0", "eval.num_overlays=0",
        "output.tensorboard=false", "output.mlflow=false", "output.progress=false",
    ]


def _run(overrides: list[str], out: Path) -> tuple[dict[str, Any], Any]:
    wall, cpu = time.perf_counter(), _cpu()
    result = train(load_config(None, overrides), output=out)
    metrics = result.metrics or {}
    return {"mask_AP": metrics.get("segm", {}).get("AP"), "mask_AP50": metrics.get("segm", {}).get("AP50"),
            "iterations": result.iterations, "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(_cpu() - cpu, 1)}, result


def _shapes_model(args: Any, start: list[str], tmpdir: Path, results: dict[str, Any]) -> Path:
    """The synthetic-shapes model, trained once and kept at ``--shapes-cache``."""
    cache = Path(args.shapes_cache)
    if cache.is_file():
        return cache
    over = [*_common(args, 0), *start, f"train.max_iters={args.shapes_iters}", "train.checkpoint_period=0",
            f"data.train=shapes:2000:{args.size}", f"data.val=shapes:400:{args.size}"]
    row, _ = _run(over, tmpdir / "shapes")
    results["shapes_pretrain"] = row
    print("shapes pretrain", row, flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial")
    shutil.copyfile(tmpdir / "shapes" / "checkpoints" / "last.pt", partial)
    partial.replace(cache)  # atomic: a second process never reads half a file
    return cache


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="pennfudan", help="a folder under INSTASEG_DATA")
    parser.add_argument("--shots", default="5,10,20,40", help="K for the imagenet arm")
    parser.add_argument("--copy-paste-shots", default="10,20,40")
    parser.add_argument("--fewshot-shots", default="5,10,20")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--model", default="maskrcnn_effnet_lite0")
    parser.add_argument("--model-kwargs", default="", help="more model keywords, e.g. "
                        "'box_batch_size_per_image: 128, anchor_sizes: [8, 16, 32, 64]'")
    parser.add_argument("--copy-paste-p", type=float, default=0.5)
    parser.add_argument("--backbone-weights", default="imagenet", help="'none' for a random start")
    parser.add_argument("--shapes-iters", type=int, default=600)
    parser.add_argument("--shapes-cache", default="runs/bench_shapes_lite0.pt")
    parser.add_argument("--keep", default=None, help="copy each run's last.pt here as ARM_K_SEED.pt")
    parser.add_argument("--out", default=None, help="results name (default copy_paste_fewshot_DATASET)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = f"folder:{Path(os.environ['INSTASEG_DATA']) / args.dataset}"
    out = Path(__file__).parent / "results" / f"{args.out or 'copy_paste_fewshot_' + args.dataset}.json"
    results: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    key = [args.iters, args.size, args.lr, args.model, args.model_kwargs]  # other arguments: run again
    stored = {(r["arm"], r["shots"], r["seed"]): r for r in results.get("runs", [])
              if r.get("args_key") in (key, key[:4] if not args.model_kwargs else None)}
    results.update({"args": vars(args), "dataset": args.dataset, "date": time.strftime("%Y-%m-%d"),
                    "machine": "CPU-2c (2 cores, no GPU), 1 torch thread a run",
                    "command": " ".join(["python", *sys.argv]), "runs": list(stored.values())})
    start = [] if args.backbone_weights == "none" else [f"model.backbone_weights={args.backbone_weights}"]
    plan = [("imagenet", k) for k in _ints(args.shots)]
    plan += [("copy_paste", k) for k in _ints(args.copy_paste_shots)]
    plan += [("from_shapes", k) for k in _ints(args.fewshot_shots)]
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for seed in _ints(args.seeds):
            for arm, k in sorted(plan, key=lambda p: (p[1], p[0])):
                if (arm, k, seed) in stored:
                    continue
                data = [f"data.train={spec}", "data.train_split=train", f"data.val={spec}",
                        "data.val_split=val", f"data.shots={k}"]
                if arm == "from_shapes":
                    shapes = _shapes_model(args, start, tmpdir, results)
                    extra = [f"model.weights={shapes}", AUGMENT.format(0.0)]
                else:
                    p = args.copy_paste_p if arm == "copy_paste" else 0.0
                    extra = [*start, AUGMENT.format(p)]
                row, _ = _run([*_common(args, seed), *data, *extra], tmpdir / f"{arm}_{k}_{seed}")
                row = {"arm": arm, "shots": k, "seed": seed, **row,
                       "args_key": key}
                results["runs"].append(row)
                print(row, flush=True)
                if args.keep:
                    Path(args.keep).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(tmpdir / f"{arm}_{k}_{seed}" / "checkpoints" / "last.pt",
                                    Path(args.keep) / f"{arm}_{k}_{seed}.pt")
                out.write_text(json.dumps(results, indent=1))
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
