"""Simulated annotation rounds on Penn-Fudan: random vs ``active select`` choice of images to label.

Start with ``--start`` labelled train images (seeded), then ``--rounds`` rounds of ``--step`` more,
chosen (a) ``random``ly, (b) ``active``: by :mod:`instaseg.predict.active` as ``instaseg active select
--labelled`` does (uncertainty + flip disagreement + typicality + k-center diversity away from the
labelled images) with the model of the previous round, with ``--richness-weight 0``, (c) ``rich``:
``active`` plus ``--richness-weight 1`` (images with more expected objects first: ``active select``'s
defaults since session 14), or (d) ``uncertainty``: the
selection of sessions 11-12 (no typicality bonus; diversity only within the batch). Each round
trains from scratch with the same recipe and ``--iters`` budget and records the val split's mask AP.
Several seeds.

Each round is written to ``benchmarks/results/NAME.json`` as it ends and a rerun with the same
arguments resumes there (the runs are deterministic per seed), so the curves can be built over several
sittings. Round 0 is the same labelled set for both strategies and is trained once.

``--recipe auto`` trains every round with what ``instaseg train --data`` chooses for the dataset
(model, size, anchors, augmentation: :func:`instaseg.engine.autoconfig.rule_choices`) instead of the
fixed slim Mask R-CNN; ``--model NAME`` makes that what ``instaseg train --data D --set model.name=NAME``
chooses (e.g. the ImageNet-pretrained ``maskrcnn_effnet_lite0``, which learns in fewer iterations), and
``--set KEY=VALUE`` (repeatable) overrides any choice.

Usage: python benchmarks/bench_active.py [--dataset pennfudan|nuclei] [--seeds 0,1,2] [--rounds 7]
       [--iters 400] [--recipe fixed|auto] [--model NAME] [--set KEY=VALUE ...] [--strategies random,active]
       [--out NAME] [--merge A,B]
Needs INSTASEG_DATA. Single-threaded torch; CPU seconds reported besides wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from active_instances import instance_stats
from machine import describe

from instaseg.config import load_config
from instaseg.data.build import build_dataset
from instaseg.data.convert import spec_to_coco
from instaseg.engine import autoconfig
from instaseg.predict import active
from instaseg.predict.predictor import Predictor
from instaseg.predict.validation import train


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _subset(coco: dict[str, Any], ids: set[int], path: Path) -> Path:
    sub = {**coco, "images": [im for im in coco["images"] if im["id"] in ids],
           "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
    path.write_text(json.dumps(sub))
    return path


def _recipe(args: Any, spec: str) -> list[str]:
    """The model and augmentation overrides: a fixed slim Mask R-CNN (``--recipe fixed``) or what
    ``instaseg train --data`` would choose from the whole train pool's fingerprint (``auto``; the
    iteration count stays ``--iters``: every round gets the same budget)."""
    if args.recipe == "fixed":
        if args.model or args.set:
            raise SystemExit("--model and --set go with --recipe auto")
        return ["model.name=maskrcnn_r18_slim",
                f"model.kwargs={{min_size: {args.size}, max_size: {args.size}, "
                "anchor_sizes: [16, 32, 64, 128]}",
                "train.batch_size=4", "train.lr=0.02"]
    fp = autoconfig.fingerprint(build_dataset(spec, split="train"))
    chosen = autoconfig.rule_choices(fp, cuda=False, model=args.model)
    return [f"{c.key}={json.dumps(c.value)}" for c in chosen] + list(args.set or [])


def effective_recipe(recipe: list[str] | None) -> dict[str, str]:
    """The value each key of the ``key=value`` overrides ends with (the last one wins, as in
    ``load_config``): two recipes that differ only in a choice a later ``--set`` replaces train alike."""
    return {item.split("=", 1)[0]: item.split("=", 1)[1] for item in recipe or []}


def _train(train_json: Path, val_spec: str, args: Any, recipe: list[str], seed: int, out: Path) -> Any:
    overrides = [
        *recipe,
        f"data.train=coco:{train_json}", "data.train_split=null",
        f"data.val={val_spec}", "data.val_split=val",
        f"train.max_iters={args.iters}", "train.warmup_iters=20",
        f"train.seed={seed}", "train.num_threads=1", "train.checkpoint_period=0", "eval.num_overlays=0",
        "output.tensorboard=false", "output.mlflow=false", "output.progress=false",
    ]
    return train(load_config(None, overrides), output=out)


def _resumable_curve(stored: list[dict[str, Any]], rnd: int) -> dict[str, Any] | None:
    return stored[rnd] if rnd < len(stored) and stored[rnd].get("mask_AP") is not None else None


def run(args: Any, out: Path) -> dict[str, Any]:
    """Run every (seed, strategy) curve; each round is written to ``out`` as it ends, and a rerun
    resumes: stored rounds are not trained again unless the next round's choice needs their model."""
    root = Path(os.environ["INSTASEG_DATA"]) / args.dataset
    spec = f"folder:{root}"
    results: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    results.update({"args": vars(args), "machine": describe(), "dataset": args.dataset})
    results.setdefault("curves", {})
    recipe = _recipe(args, spec)
    if effective_recipe(results.get("recipe", recipe)) != effective_recipe(recipe):
        results["curves"] = {}  # rounds of another recipe cannot be resumed
    results["recipe"] = recipe
    shared: dict[tuple[int, ...], Any] = {}  # labelled ids -> trained result: round 0 of both strategies
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        coco = spec_to_coco(spec, output_dir=tmpdir, split="train").coco
        meta = {"class_names": ["background", *[c["name"] for c in coco["categories"]]]}
        files = {im["id"]: (tmpdir / im["file_name"]).resolve() for im in coco["images"]}
        for seed in [int(s) for s in args.seeds.split(",")]:
            for strategy in args.strategies.split(","):
                key = f"{strategy}_seed{seed}"
                stored = results["curves"].get(key, [])
                rng = random.Random(seed)
                labelled = set(rng.sample(sorted(files), args.start))
                curve: list[dict[str, Any]] = []
                for rnd in range(args.rounds + 1):
                    ids = tuple(sorted(labelled))
                    done = _resumable_curve(stored, rnd)
                    if done is not None and done.get("labelled_ids") != list(ids):
                        stored, done = [], None  # other arguments made that curve: start it again
                    following = _resumable_curve(stored, rnd + 1)
                    pool = sorted(set(files) - labelled)
                    last = rnd == args.rounds or not pool
                    needs_model = strategy != "random" and not last and following is None
                    result = None
                    if done is not None and not needs_model:
                        curve.append(done)
                    elif ids in shared:
                        result, entry = shared[ids]
                        curve.append(entry)
                    else:
                        wall, cpu = time.perf_counter(), _cpu()
                        run_dir = tmpdir / f"s{seed}_{strategy}_{rnd}"
                        train_json = _subset(coco, labelled, tmpdir / f"{run_dir.name}.json")
                        result = _train(train_json, spec, args, recipe, seed, run_dir)
                        ap = (result.metrics or {}).get("segm", {}).get("AP")
                        instances = round(instance_stats(coco, list(ids))[0] * len(ids))
                        curve.append({"labelled": len(labelled), "mask_AP": ap, "labelled_ids": list(ids),
                                      "instances": instances,
                                      "wall_s": round(time.perf_counter() - wall, 1),
                                      "cpu_s": round(_cpu() - cpu, 1), "machine": describe()})
                        if rnd == 0:
                            shared = {ids: (result, curve[-1])}
                    shown = {k: v for k, v in curve[-1].items() if k != "labelled_ids"}
                    print(seed, strategy, shown, flush=True)
                    results["curves"][key] = curve + stored[len(curve):]
                    out.write_text(json.dumps(results, indent=1))
                    if last:
                        break
                    if strategy == "random":
                        labelled |= set(rng.sample(pool, min(args.step, len(pool))))
                    elif following is not None and not needs_model:
                        labelled = set(following["labelled_ids"])
                    else:
                        predictor = Predictor.from_model(result.model.eval(), meta, score_thresh=0.05)
                        scored = [active.score_image(predictor, files[i]) for i in pool]
                        new = strategy in ("active", "rich")
                        known = (active.embed_files(predictor, [files[i] for i in sorted(labelled)])
                                 if new else None)
                        picks = active.select([s for s, _ in scored], np.stack([e for _, e in scored]),
                                              args.step, labelled=known,
                                              typicality_weight=0.5 if new else 0.0,
                                              richness_weight=1.0 if strategy == "rich" else 0.0)
                        by_file = {str(files[i]): i for i in pool}
                        labelled |= {by_file[p.file] for p in picks}
                results["curves"][key] = curve
                out.write_text(json.dumps(results, indent=1))
    return results


def merge(out: Path, parts: list[Path]) -> None:
    """Add the curves of ``parts`` (runs of the same arguments, e.g. one arm each) to ``out``; a curve
    in both is taken from the part, where it is longer."""
    results: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    for part in parts:
        if not part.is_file():
            raise SystemExit(f"{part}: no such results file (--merge takes names under benchmarks/results)")
        other = json.loads(part.read_text())
        mine = results.get("recipe")
        if mine and effective_recipe(other.get("recipe")) != effective_recipe(mine):
            raise SystemExit(f"{part}: another recipe than {out}'s; not merged")
        curves = results.setdefault("curves", {})
        for key, curve in other["curves"].items():
            if len(curve) >= len(curves.get(key, [])):
                curves[key] = curve
        results.setdefault("recipe", other.get("recipe"))
        results.setdefault("args", other.get("args"))
    out.write_text(json.dumps(results, indent=1))
    print(f"merged {len(parts)} file(s) into {out}: {sorted(results['curves'])}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="pennfudan",
                        help="a folder under INSTASEG_DATA (pennfudan, nuclei)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--start", type=int, default=10)
    parser.add_argument("--step", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--recipe", default="fixed", choices=["fixed", "auto"],
                        help="fixed: slim Mask R-CNN at --size; auto: the self-configuring rules' choices")
    parser.add_argument("--model", default=None, help="--recipe auto: the model to configure for")
    parser.add_argument("--set", action="append", help="--recipe auto: KEY=VALUE overriding a choice")
    parser.add_argument("--strategies", default="random,active",
                        help="random, active, rich, uncertainty (comma list); one each in processes "
                        "(one --out file each) runs the arms side by side, merged with --merge")
    parser.add_argument("--merge", default="",
                        help="comma list of result names whose curves are added to --out, then exit")
    parser.add_argument("--out", default="active")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(__file__).parent / "results" / f"{args.out}.json"
    if args.merge:
        merge(out, [out.with_name(f"{name}.json") for name in args.merge.split(",")])
        return
    results = run(args, out)
    print(json.dumps(results["curves"], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
