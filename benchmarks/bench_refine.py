"""Mask refinement at paste time (``instaseg/ops/refine.py``): held-out AP and cost on trained runs.

    INSTASEG_DATA=../shared/data .venv/bin/python benchmarks/bench_refine.py \\
        --run runs/pennfudan=folder:../shared/data/pennfudan --run runs/train=shapes:800:128

For each ``RUN=DATASET`` (a run directory or checkpoint, and the dataset spec it was validated on; its
``--split``, default val) the model predicts every image once, as its run validates (the run's
``eval.score_thresh`` and test-time flips), and the same detections are scored with plain pasting and
with each refinement setting (``radius:threshold`` in mask cells; ``--no-rescore`` settings keep the
scores), exactly as the Predictor applies it (refine, then the score filter again). Records mask and
box AP per setting and the milliseconds an image the model and the refinement take, to
``benchmarks/results/refine.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from machine import describe

from instaseg.evaluation.coco import evaluate_results
from instaseg.evaluation.summary import resolve_ground_truth
from instaseg.ops.refine import MaskRefinement, guide_image, refine_instances
from instaseg.predict.dataset import instances_to_results, map_labels
from instaseg.predict.evaluate import checkpoint_predictor

ROOT = Path(__file__).resolve().parents[1]


def parse_settings(text: str) -> list[MaskRefinement]:
    """``"1.5:0.45,2:0.45,1.5:0.45:norescore"`` -> refinements (radius in cells, threshold)."""
    out = []
    for item in (s for s in text.split(",") if s):
        parts = item.split(":")
        out.append(MaskRefinement(radius=float(parts[0]), threshold=float(parts[1]),
                                  rescore=not (len(parts) > 2 and parts[2] == "norescore")))
    return out


def bench_run(checkpoint: str, spec: str, split: str, settings: list[MaskRefinement]) -> dict[str, Any]:
    gt, dataset, _ = resolve_ground_truth(spec, split, need_images=True)
    predictor = checkpoint_predictor(checkpoint, refine=False)
    cats = map_labels(predictor.class_names, dataset, checkpoint)
    thr = predictor.score_thresh
    plain: list[dict[str, Any]] = []
    per_setting: list[list[dict[str, Any]]] = [[] for _ in settings]
    refine_s = [0.0 for _ in settings]
    forward_s, detections = 0.0, 0
    batch = int(((predictor.meta.get("config") or {}).get("eval") or {}).get("batch_size") or 1)
    for start in range(0, len(dataset), batch):  # the run's validation batches: padding changes detections
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        t0 = time.perf_counter()
        found = predictor.predict_torch([image for image, _ in items])
        forward_s += time.perf_counter() - t0
        for (image, target), inst in zip(items, found, strict=True):
            image_id = int(target["image_id"])
            detections += len(inst)
            plain += instances_to_results(inst, image_id, cats, predictor.mask_thresh)
            for k, params in enumerate(settings):
                t0 = time.perf_counter()
                refined = refine_instances(inst, guide_image(image.numpy()), params)
                refined = refined[refined.scores >= thr]
                refine_s[k] += time.perf_counter() - t0
                per_setting[k] += instances_to_results(refined, image_id, cats)
    n = len(dataset)

    def score(results: list[dict[str, Any]]) -> dict[str, float]:
        m = evaluate_results(gt, results, iou_types=("segm", "bbox"))
        return {"mask_AP": round(m["segm"]["AP"], 4), "mask_AP75": round(m["segm"]["AP75"], 4),
                "box_AP": round(m["bbox"]["AP"], 4)}

    rows = [{"setting": "plain", **score(plain)}]
    for k, params in enumerate(settings):
        rows.append({"setting": f"radius {params.radius:g} cells, threshold {params.threshold:g}"
                                f"{'' if params.rescore else ', no rescoring'}",
                     **score(per_setting[k]), "refine_ms_per_image": round(1000 * refine_s[k] / n, 2)})
    return {"checkpoint": checkpoint, "data": spec, "split": split, "images": n,
            "detections_per_image": round(detections / n, 1), "score_thresh": thr, "tta": predictor.tta,
            "batch_size": batch,
            "model_ms_per_image": round(1000 * forward_s / n, 1), "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True,
                   help="RUN_OR_CHECKPOINT=DATASET_SPEC (repeatable)")
    p.add_argument("--split", default="val")
    p.add_argument("--settings", default="1:0.45,1.5:0.45,2:0.45,1.5:0.5,1.5:0.4,1.5:0.45:norescore")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "refine.json"),
                   help="results JSON path")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    settings = parse_settings(args.settings)
    runs = []
    for item in args.run:
        if "=" not in item:
            raise SystemExit(f"--run {item!r}: expected RUN_OR_CHECKPOINT=DATASET_SPEC")
        checkpoint, spec = item.split("=", 1)
        result = bench_run(checkpoint, spec, args.split, settings)
        print(json.dumps(result), flush=True)
        runs.append(result)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": describe(), "threads": args.threads, "runs": runs}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
