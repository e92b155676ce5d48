"""Copy-paste and few-shot on Penn-Fudan: mask AP at K labelled images, with and without copy-paste,
from an ImageNet backbone or from a model first trained on the synthetic shapes.

Penn-Fudan has one class, so ``data.shots=K`` is exactly K labelled train images (seeded). Arms per K
and seed: ``plain`` and ``copy_paste`` (``data.augment.copy_paste_p``) from ``--start`` weights, and,
with ``--shapes-iters > 0``, ``from_shapes``: fine-tuning a model trained on ``shapes`` first
(synthetic-to-real transfer). Val split mask AP; same recipe and budget for every arm.

Usage: python benchmarks/bench_copy_paste_fewshot.py [--shots 10,20,40] [--seeds 0,1,2] [--iters 400]
       [--backbone-weights imagenet] [--shapes-iters 600] [--out NAME]
Needs INSTASEG_DATA. Single-threaded torch; CPU seconds reported besides wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from instaseg.config import load_config
from instaseg.predict.validation import train


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _common(args: Any, seed: int) -> list[str]:
    return [
        "model.name=maskrcnn_r18_slim",
        f"model.kwargs={{min_size: {args.size}, max_size: {args.size}, anchor_sizes: [16, 32, 64, 128]}}",
        f"train.max_iters={args.iters}", "train.batch_size=4", "train.lr=0.02", "train.warmup_iters=20",
        f"train.seed={seed}", "train.num_threads=1", "train.checkpoint_period=0", "eval.num_overlays=0",
        "output.tensorboard=false", "output.mlflow=false", "output.progress=false",
    ]


def _run(overrides: list[str], out: Path) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), _cpu()
    result = train(load_config(None, overrides), output=out)
    metrics = result.metrics or {}
    return {"mask_AP": metrics.get("segm", {}).get("AP"), "iterations": result.iterations,
            "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(_cpu() - cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shots", default="10,20,40")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--copy-paste-p", type=float, default=0.5)
    parser.add_argument("--backbone-weights", default=None, help="e.g. imagenet (must be available offline)")
    parser.add_argument("--shapes-iters", type=int, default=0, help="pre-train on shapes first (0: skip)")
    parser.add_argument("--out", default="copy_paste_fewshot")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = f"folder:{Path(os.environ['INSTASEG_DATA']) / 'pennfudan'}"
    results: dict[str, Any] = {"args": vars(args), "machine": "CPU-2c, loaded by parallel jobs", "runs": []}
    start = [f"model.backbone_weights={args.backbone_weights}"] if args.backbone_weights else []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        shapes_ckpt = None
        if args.shapes_iters:
            pre = tmpdir / "shapes"
            over = [*_common(args, 0), *start, f"train.max_iters={args.shapes_iters}",
                    "data.train=shapes:600:256", "data.val=shapes:600:256"]
            results["shapes_pretrain"] = _run(over, pre)
            shapes_ckpt = pre / "checkpoints" / "last.pt"
        for k in [int(s) for s in args.shots.split(",")]:
            for seed in [int(s) for s in args.seeds.split(",")]:
                data = [f"data.train={spec}", "data.train_split=train", f"data.val={spec}",
                        "data.val_split=val", f"data.shots={k}"]
                # the whole augment dict in both arms: a dotted key alone would replace the defaults
                aug = ("data.augment={{crop_p: 0.0, affine_p: 0.0, noise_p: 0.0, distortion_p: 0.0, "
                       "copy_paste_p: {}}}")
                arms = {"plain": [*start, aug.format(0.0)],
                        "copy_paste": [*start, aug.format(args.copy_paste_p)]}
                if shapes_ckpt is not None:
                    arms["from_shapes"] = [f"model.weights={shapes_ckpt}", aug.format(0.0)]
                for name, extra in arms.items():
                    row = {"shots": k, "seed": seed, "arm": name,
                           **_run([*_common(args, seed), *data, *extra], tmpdir / f"{name}_{k}_{seed}")}
                    results["runs"].append(row)
                    print(row, flush=True)
    out = Path(__file__).parent / "results" / f"{args.out}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
