"""Interactive segmentation in clicks: a trained click model (click_lite0) vs the GrabCut backend.

Trains one click model per dataset through the engine (``configs/interactive.yaml``) on one CPU
thread, under a CPU-time budget (15 CPU-minutes for both together: 9.5 + 5.5; set-up included, the
cosine schedule fitted to it), then runs the same click protocol
(``instaseg evaluate-interactive``'s code) for every backend on Penn-Fudan's val split and on the
nuclei val split. Run from the repository root:

    INSTASEG_DATA=/path/to/data .venv/bin/python benchmarks/bench_interactive.py
    ... --stage eval --runs DIR   # evaluate models trained before

Writes benchmarks/results/interactive.json (+ miou_vs_clicks_<dataset>.png beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from instaseg.config import load_config
from instaseg.data.build import build_dataset
from instaseg.engine.trainer import HookBase
from instaseg.evaluation.clicks import format_table, plot_curves
from instaseg.predict.interactive import ClickSegmenter, ModelSegmenter
from instaseg.predict.interactive_eval import evaluate_backend
from instaseg.predict.validation import train

DATA = os.environ.get("INSTASEG_DATA", "../shared/data")
# name: (train/val spec, CPU-minute budget, overrides)
DATASETS = {
    "pennfudan": (f"folder:{DATA}/pennfudan", 9.5, []),
    "nuclei": (f"folder:{DATA}/nuclei", 5.5, ["model.kwargs.max_size=512", "model.kwargs.objects_per_image=4",
                                              "train.batch_size=2"]),
}


class CpuBudgetHook(HookBase):
    """Fit training into ``minutes`` of this process's CPU time, counted from the hook's creation
    (model and data set-up included): after ``calibrate`` steps, and every ``recheck`` steps, the
    schedule (cosine) is shortened to the iterations that fit at the measured CPU seconds per step
    (3% slack, so the schedule ends on its own); a hard stop if the budget runs out anyway."""

    def __init__(self, minutes: float, calibrate: int = 10, recheck: int = 50) -> None:
        self.limit = minutes * 60.0
        self.start = time.process_time()
        self.calibrate, self.recheck = calibrate, recheck
        self.configured = 0
        self.mark: tuple[float, int] | None = None
        self.steps = 0

    def before_train(self) -> None:
        self.configured = self.trainer.max_iter

    def after_step(self) -> None:
        t = self.trainer
        now = time.process_time()
        self.steps += 1
        if self.steps == 2:  # the first step pays for lazy set-up: measure from the second
            self.mark = (now, t.iter)
        elif self.mark and self.steps >= self.calibrate and (
                self.steps == self.calibrate or self.steps % self.recheck == 0):
            per_step = (now - self.mark[0]) / max(1, t.iter - self.mark[1])
            left = 0.97 * self.limit - (now - self.start)
            total = max(t.iter + 1, min(self.configured, t.iter + int(left / per_step)))
            if total != t.max_iter:
                t.max_iter = total
                if hasattr(t.scheduler, "total"):
                    t.scheduler.total = total
                print(f"CPU budget {self.limit / 60:.1f} min: {per_step:.3f} CPU-s/it, schedule {total} it",
                      flush=True)
        if now - self.start >= self.limit:
            self.trainer.request_stop(f"CPU budget of {self.limit / 60:.1f} min used")


def train_one(name: str, runs: Path, seed: int | None = None, extra: list[str] | None = None) -> dict:
    spec, minutes, overrides = DATASETS[name]
    keys = [f"data.train={spec}", f"data.val={spec}", "output.progress=false", "train.log_period=20"]
    seed_key = [] if seed is None else [f"train.seed={seed}"]
    cfg = load_config("configs/interactive.yaml", [*keys, *overrides, *seed_key, *(extra or [])])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = train(cfg, output=runs / name, hooks=[CpuBudgetHook(minutes)])  # budget counts set-up too
    cpu, wall = (time.process_time() - cpu0) / 60, (time.perf_counter() - wall0) / 60
    return {"run": str(result.run_dir), "iterations": result.iterations, "stop_reason": result.stop_reason,
            "cpu_minutes": cpu, "wall_minutes": wall, "budget_cpu_minutes": minutes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("train", "eval", "all"), default="all")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_interactive"))
    parser.add_argument("--datasets", default="pennfudan,nuclei")
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--max-per-image", type=int, default=None)
    parser.add_argument("--max-objects", type=int, default=None)
    parser.add_argument("--backends", default="click_lite0,grabcut")
    parser.add_argument("--stop-iou", type=float, default=0.90,
                        help="stop clicking an object once IoU >= this (NoC@85/90 unchanged; later mIoU@k "
                        "keep the last IoU); 0 runs all clicks")
    parser.add_argument("--expand", type=float, default=None,
                        help="ModelSegmenter's crop expansion (default: its own)")
    parser.add_argument("--expand-large", type=float, default=None,
                        help="ModelSegmenter's crop expansion for large objects (default: its own)")
    parser.add_argument("--no-flip", action="store_true", help="ModelSegmenter without flip averaging")
    parser.add_argument("--seed", type=int, default=None, help="train.seed (default: the config's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra dotted config override for training (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/interactive.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in args.datasets.split(",") if n]
    out = json.loads(args.out.read_text()) if args.out.is_file() else {}
    out.update({"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                "loaded by parallel jobs", "torch_threads": 1, "date": time.strftime("%Y-%m-%d")})
    out.setdefault("training", {})
    out.setdefault("evaluation", {})
    if args.stage in ("train", "all"):
        for name in names:
            out["training"][name] = train_one(name, args.runs, args.seed, args.overrides)
            print(name, out["training"][name], flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=1))
    if args.stage in ("eval", "all"):
        for name in names:
            spec = DATASETS[name][0]
            dataset = build_dataset(spec, split="val")
            results = out["evaluation"].get(name, {})
            for backend in args.backends.split(","):
                if backend == "click_lite0":
                    kw: dict = {"flip": not args.no_flip}
                    if args.expand is not None:
                        kw["expand"] = args.expand
                    if args.expand_large is not None:
                        kw["expand_large"] = args.expand_large
                    seg = ModelSegmenter(args.runs / name, **kw)
                else:
                    seg = ClickSegmenter()
                results[backend], _ = evaluate_backend(
                    seg, dataset, max_clicks=args.max_clicks, max_per_image=args.max_per_image,
                    max_objects=args.max_objects, stop_iou=args.stop_iou or None, log=print)
                # whole evaluation's CPU (protocol, image loading included) over the answers: an upper bound
                r = results[backend]
                r["cpu_seconds_per_click"] = round(r["cpu_seconds"] / r["clicks_made"], 4)
                print(name, backend, {k: v for k, v in r.items() if k != "mIoU@k"}, flush=True)
            if "grabcut" in results and "click_lite0" in results:
                g85, m85 = results["grabcut"]["NoC@85"], results["click_lite0"]["NoC@85"]
                results["fewer_clicks_than_grabcut@85"] = round(1 - m85 / g85, 4)
            out["evaluation"][name] = results
            print(format_table({k: v for k, v in results.items() if isinstance(v, dict)}))
            stem = "" if args.out.stem == "interactive" else f"{args.out.stem}_"
            plot_curves({k: v for k, v in results.items() if isinstance(v, dict)},
                        str(args.out.with_name(f"miou_vs_clicks_{stem}{name}.png")), title=f"{name} val")
            args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
