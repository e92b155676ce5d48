"""Does a model learn? A bare torch training loop on synthetic shapes, then COCO mask/box AP.

Deliberately independent of the engine (plain SGD loop, pycocotools evaluation) so it checks the
model alone. Example (the CPU default recipe):

    .venv/bin/python benchmarks/bench_model_learning.py --model maskrcnn_r18_slim --minutes 5

Prints s/iter and AP, and writes benchmarks/results/model_learning_<model>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instaseg.data.build import build_dataset
from instaseg.models import get_model


def coco_eval(dataset, outputs: list[dict], num_classes: int) -> dict[str, dict[str, float]]:
    """COCO segm and bbox AP of ``outputs`` (one per dataset item, in order) with pycocotools."""
    images, anns, results = [], [], []
    for idx, out in enumerate(outputs):
        image, target = dataset[idx]
        h, w = image.shape[1:]
        images.append({"id": idx, "height": h, "width": w})
        for m, lab in zip(target["masks"].numpy(), target["labels"].tolist(), strict=True):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            x0, y0, bw, bh = mask_utils.toBbox(rle).tolist()
            anns.append({"id": len(anns) + 1, "image_id": idx, "category_id": lab, "segmentation": rle,
                         "area": float(m.sum()), "bbox": [x0, y0, bw, bh], "iscrowd": 0})
        masks = (out["masks"][:, 0] > 0.5).numpy()
        for m, box, lab, score in zip(masks, out["boxes"].tolist(), out["labels"].tolist(),
                                      out["scores"].tolist(), strict=True):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": idx, "category_id": lab, "segmentation": rle, "score": score,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes)]}
    metrics = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        dt = coco.loadRes(results) if results else None
        for iou_type in ("segm", "bbox"):
            if dt is None:
                metrics[iou_type] = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
                continue
            ev = COCOeval(coco, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            names = ("AP", "AP50", "AP75")
            metrics[iou_type] = {k: float(v) for k, v in zip(names, ev.stats[:3], strict=True)}
    return metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="maskrcnn_r18_slim")
    p.add_argument("--train", default="shapes:2000:128")
    p.add_argument("--val", default="shapes:100:128")
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    p.add_argument("--est-s-per-iter", type=float, default=1.0, help="to size the cosine schedule")
    p.add_argument("--iters", type=int, default=0, help="fixed schedule length (stops at iters or minutes)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kw", default="{}", help="extra model kwargs as JSON")
    p.add_argument("--tag", default="", help="suffix of the result file name")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = build_dataset(args.train, split="train")
    val = build_dataset(args.val, split="val")
    num_classes = len(train.class_names)
    model = get_model(args.model, num_classes=num_classes, **json.loads(args.kw))
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    total = args.iters or max(1, int(args.minutes * 60 / args.est_s_per_iter))

    def lr_at(it: int) -> float:
        if it < args.warmup:
            return args.lr * (0.001 + (1 - 0.001) * it / args.warmup)
        progress = min(1.0, (it - args.warmup) / max(1, total - args.warmup))
        return args.lr * 0.5 * (1 + math.cos(math.pi * progress))

    g = torch.Generator().manual_seed(args.seed)
    model.train()
    start, it, log = time.perf_counter(), 0, []
    while time.perf_counter() - start < args.minutes * 60 and it < total + (0 if args.iters else 10**9):
        idx = torch.randint(len(train), (args.batch,), generator=g).tolist()
        images, targets = [], []
        for i in idx:
            image, target = train[i]
            if torch.rand((), generator=g) < 0.5:  # horizontal flip
                image, target = image.flip(-1), dict(target)
                w = image.shape[-1]
                target["masks"] = target["masks"].flip(-1)
                b = target["boxes"].clone()
                target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
            images.append(image)
            targets.append(target)
        for group in opt.param_groups:
            group["lr"] = lr_at(it)
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss at iteration {it}: {losses}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        it += 1
        if it % 20 == 0:
            el = time.perf_counter() - start
            log.append({"iter": it, "loss": round(loss.item(), 4), "s": round(el, 1)})
            print(f"iter {it} loss {loss.item():.3f} {el / it:.2f} s/iter lr {lr_at(it):.4f}", flush=True)
    train_s = time.perf_counter() - start
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        outputs = [model([val[i][0]])[0] for i in range(len(val))]
    infer_s = (time.perf_counter() - t0) / len(val)
    metrics = coco_eval(val, outputs, num_classes)
    result = {"model": args.model, "kwargs": json.loads(args.kw), "train": args.train, "val": args.val,
              "batch": args.batch, "lr": args.lr, "iterations": it, "train_s": round(train_s, 1),
              "s_per_iter": round(train_s / max(it, 1), 3), "infer_s_per_image": round(infer_s, 4),
              "metrics": metrics, "log": log, "threads": args.threads}
    print(json.dumps({k: v for k, v in result.items() if k != "log"}, indent=1))
    out = Path(__file__).parent / "results" / f"model_learning_{args.model}{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
