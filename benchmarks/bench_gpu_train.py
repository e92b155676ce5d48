"""Training and inference throughput of a recipe on a CUDA GPU, with and without AMP.

    python benchmarks/bench_gpu_train.py --config configs/mask_rcnn.yaml --iters 60

Runs ``instaseg train`` (the engine, the recipe's own model and batch size) for ``--iters`` steps on
the recipe's data (the embedded shapes unless ``--set data.train=...``), once with ``train.amp=true``
and once with ``false``, and reads the engine's own timing (the iteration loop, the first
``--skip`` steps left out through a hook). Then times inference (``Predictor.predict_torch``, batch
1, detections present) on the validation images. Random initial weights: nothing can be downloaded
here (COCO weights, when cached, go in ``model.weights``). Writes the device name, torch version
and images/s to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from instaseg.config import load_config
from instaseg.data.build import build_dataset
from instaseg.engine.trainer import HookBase
from instaseg.predict.predictor import Predictor
from instaseg.predict.validation import train


class StepClock(HookBase):
    """Wall time of each optimizer step (synchronised on CUDA)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def before_step(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def after_step(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t0)


def _train(config: str, overrides: list[str], iters: int, amp: bool, skip: int) -> dict[str, Any]:
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(
            load_config(config, overrides),
            output=Path(tmp) / "run",
            hooks=[clock],
            overrides=[
                f"train.max_iters={iters}",
                f"train.amp={str(amp).lower()}",
                "train.checkpoint_period=0",
                "eval.max_images=8",
                "output.tensorboard=false",
                "output.mlflow=false",
                "output.progress=false",
            ],
        )
        cfg = load_config(config, overrides)
        timed = clock.times[skip:] or clock.times
        step = statistics.median(timed)
        images = cfg.train.batch_size * cfg.train.accumulate
        return {
            "amp": amp,
            "iterations": result.iterations,
            "batch_size": images,
            "median_step_s": round(step, 4),
            "train_images_per_s": round(images / step, 2),
            "model": result.model,
        }


def _infer(model: torch.nn.Module, spec: str, split: str | None, n: int) -> dict[str, Any]:
    dataset = build_dataset(spec, split=split)
    device = next(model.parameters()).device
    predictor = Predictor(model.eval(), dataset.class_names, device=device, score_thresh=0.05)
    times, dets = [], []
    for i in range(min(n, len(dataset))):
        image = dataset[i][0].to(device)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = predictor.predict_torch([image])[0]
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        dets.append(len(out))
    warm = times[3:] or times
    med = statistics.median(warm)
    return {
        "images": len(times),
        "median_latency_ms": round(1000 * med, 2),
        "infer_images_per_s": round(1 / med, 2),
        "mean_detections": round(sum(dets) / max(len(dets), 1), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/mask_rcnn.yaml")
    p.add_argument("--set", action="append", default=[], dest="overrides", help="dotted override")
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--skip", type=int, default=10, help="first steps left out of the timing")
    p.add_argument("--infer-images", type=int, default=30)
    p.add_argument("--no-amp-run", action="store_true", help="time only the AMP run")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_train.json"))
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    runs = []
    for amp in ([True] if args.no_amp_run else [True, False]):
        t0 = time.perf_counter()
        run = _train(args.config, args.overrides, args.iters, amp, args.skip)
        model = run.pop("model")
        cfg = load_config(args.config, args.overrides)
        run.update(_infer(model, cfg.data.val, cfg.data.val_split, args.infer_images))
        run["wall_s"] = round(time.perf_counter() - t0, 1)
        runs.append(run)
        print(json.dumps(run))
    cfg = load_config(args.config, args.overrides)
    out = {
        "command": "python benchmarks/bench_gpu_train.py --config " + args.config
        + "".join(f" --set {o}" for o in args.overrides) + f" --iters {args.iters}",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "model": cfg.model.name,
        "data": cfg.data.train,
        "date": time.strftime("%Y-%m-%d"),
        "amp_effective": cuda,  # AMP is CUDA-only; on the CPU both runs are fp32
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
