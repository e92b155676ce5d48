"""Spread of every learning test over seeds, so that each threshold sits below the worst seed.

Runs the exact code of the overfit tests (``tests/models``) for seeds 0..N-1 on one thread, as the tests
do, and records each seed's figures and the same figures after the mask head is zeroed (a broken model
the tests must reject). Run from the repository root:

    .venv/bin/python benchmarks/bench_learning_margin.py --seeds 5

Writes benchmarks/results/learning_margin.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from tests.models.rt_synth import RT_STEPS, mask_ap, overfit_case, zero_mask_head
from tests.models.test_simple_fpn import FPN_STEPS, found_objects, overfit_simple_fpn


def rt_case(name: str, seed: int, steps: int) -> dict:
    model, samples, history = overfit_case(name, seed, steps=steps)
    ap = mask_ap(model, samples)
    zero_mask_head(model)
    zeroed = mask_ap(model, samples)
    return {"loss_ratio": history[-1] / history[0], "AP": ap["AP"], "AP50": ap["AP50"],
            "zeroed_AP": zeroed["AP"], "zeroed_AP50": zeroed["AP50"]}


def simple_fpn_case(seed: int, steps: int) -> dict:
    model, images, targets, history = overfit_simple_fpn(seed, steps=steps)
    first, last = sum(history[0].values()), sum(history[-1].values())
    found = found_objects(model, images, targets)
    zero_mask_head(model)
    zeroed = found_objects(model, images, targets)
    return {"loss_ratio": last / first, "loss_mask_ratio": history[-1]["loss_mask"] / history[0]["loss_mask"],
            **found, "zeroed_mask_iou": zeroed["mask_iou"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["yolact_lite", "solov2_lite", "simple_fpn"])
    parser.add_argument("--rt-steps", type=int, default=RT_STEPS, help="yolact_lite / solov2_lite steps")
    parser.add_argument("--fpn-steps", type=int, default=FPN_STEPS, help="simple_fpn steps")
    parser.add_argument("--out", default="benchmarks/results/learning_margin.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, dict] = {}
    for name in args.models:
        runs = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            if name == "simple_fpn":
                row = simple_fpn_case(seed, args.fpn_steps)
            else:
                row = rt_case(name, seed, args.rt_steps)
            row = {"seed": seed, **{k: round(v, 4) for k, v in row.items()},
                   "seconds": round(time.perf_counter() - t0, 1)}
            print(name, json.dumps(row), flush=True)
            runs.append(row)
        keys = [k for k in runs[0] if k not in ("seed", "seconds")]
        steps = args.fpn_steps if name == "simple_fpn" else args.rt_steps
        results[name] = {"steps": steps, "runs": runs, "min": {k: min(r[k] for r in runs) for k in keys},
                         "max": {k: max(r[k] for r in runs) for k in keys}}
    out = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread",
           "cpu": _cpu_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "models": results}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("wrote", args.out)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    main()
