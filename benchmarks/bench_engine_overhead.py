"""Engine overhead: training images/s of `instaseg train`'s loop vs a bare torchvision-style loop.

    .venv/bin/python benchmarks/bench_engine_overhead.py [--steps 15] [--rounds 2]

Same model (the default maskrcnn_r18_slim), same data and transforms (the default shapes config),
same batch size, optimizer and gradient clipping. The engine side is the real ``run_training``
(progress, checkpoint hook, TensorBoard, MLflow, seeded resumable sampler, bad-sample guard) timed by
an extra hook from the end of warmup step ``--warmup`` to the last step. The two loops alternate
``--rounds`` times (the machine may be shared) and the best round of each counts. Both wall-clock and
process CPU time are measured: on a shared machine wall time swings by 2x between rounds, while CPU
time per image (use ``--threads 1``) still compares the work each loop does.
Writes benchmarks/results/engine_overhead.json. Target: ratio >= 0.98.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from instaseg.config import load_config
from instaseg.data.base import collate
from instaseg.data.build import build_dataset
from instaseg.data.transforms import build_transforms
from instaseg.engine.launch import resolve_image_size
from instaseg.engine.trainer import HookBase
from instaseg.models import get_model
from instaseg.predict.validation import train as run_training


class StepTimer(HookBase):
    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.t0 = self.c0 = 0.0
        self.images = 0
        self.elapsed = self.cpu = 0.0

    def after_step(self) -> None:
        t = self.trainer
        if t.iter == self.warmup:
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        elif t.iter > self.warmup:
            self.images += int(t.latest["images"])
            self.elapsed = time.perf_counter() - self.t0
            self.cpu = time.process_time() - self.c0


def engine_round(cfg_overrides: list[str], steps: int, warmup: int, tmp: Path) -> tuple[float, float]:
    cfg = load_config(
        None,
        cfg_overrides
        + [
            f"train.max_iters={steps + warmup}",
            "eval.max_images=4",
            "eval.num_overlays=0",
            "output.progress=false",
        ],
    )
    timer = StepTimer(warmup)
    run_training(cfg, output=tmp / f"run{time.time_ns()}", hooks=[timer])
    return timer.images / timer.elapsed, timer.images / timer.cpu


def bare_round(cfg_overrides: list[str], steps: int, warmup: int) -> tuple[float, float]:
    cfg = load_config(None, cfg_overrides)
    torch.manual_seed(cfg.train.seed)
    d = cfg.data
    d.image_size = resolve_image_size(cfg)
    ds = build_dataset(
        d.train, split=d.train_split, transform=build_transforms(True, image_size=d.image_size, **d.augment)
    )
    model = get_model(cfg.model.name, num_classes=ds.num_classes, **cfg.model.kwargs)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        params, lr=cfg.train.lr, momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay
    )
    loader = torch.utils.data.DataLoader(
        ds, batch_size=cfg.train.batch_size, shuffle=True, collate_fn=collate, num_workers=d.num_workers
    )
    model.train()
    it, images, t0, c0 = 0, 0, 0.0, 0.0
    while it < steps + warmup:
        for batch_images, targets in loader:
            losses = model(batch_images, targets)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_grad_norm)
            opt.step()
            it += 1
            if it == warmup:
                t0, c0 = time.perf_counter(), time.process_time()
            elif it > warmup:
                images += len(batch_images)
            if it == steps + warmup:
                break
    return images / (time.perf_counter() - t0), images / (time.process_time() - c0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    overrides = [f"train.num_threads={args.threads}", *args.overrides]
    torch.set_num_threads(args.threads)
    bare, engine = [], []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            bare.append(bare_round(overrides, args.steps, args.warmup))
            engine.append(engine_round(overrides, args.steps, args.warmup, Path(tmp)))
            print(f"round {r}: bare {bare[-1]} img/s, engine {engine[-1]} img/s (wall, cpu)", flush=True)
    result = {
        "bare_images_per_s_wall": [round(x[0], 3) for x in bare],
        "engine_images_per_s_wall": [round(x[0], 3) for x in engine],
        "bare_images_per_cpu_s": [round(x[1], 3) for x in bare],
        "engine_images_per_cpu_s": [round(x[1], 3) for x in engine],
        "ratio_best_wall": round(max(x[0] for x in engine) / max(x[0] for x in bare), 4),
        "ratio_best_cpu": round(max(x[1] for x in engine) / max(x[1] for x in bare), 4),
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "overrides": args.overrides,
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
        "target_ratio": 0.98,
    }
    print(json.dumps(result, indent=1))
    out = Path(__file__).parent / "results" / "engine_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
