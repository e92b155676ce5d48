"""Test helpers for the real-time models: a tiny synthetic dataset, an overfit loop and COCO mask AP."""

from __future__ import annotations

import numpy as np
import torch

from instaseg.data.base import make_target
from instaseg.evaluation.coco import COCOEvaluator
from instaseg.models import get_model
from instaseg.structures.masks import rle_encode


def synthetic_samples(n: int, seed: int = 0) -> list[tuple[torch.Tensor, dict]]:
    """``n`` images of 64-96 px with 1-3 non-overlapping rectangles (label 1) / discs (label 2)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        h, w = int(rng.integers(64, 97)), int(rng.integers(64, 97))
        img = (rng.random((h, w, 3)) * 0.2 + 0.1).astype(np.float32)
        masks, labels = [], []
        occupied = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 4))):
            for _try in range(20):
                size = int(rng.integers(16, 34))
                y0, x0 = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
                yy, xx = np.mgrid[:h, :w]
                label = int(rng.integers(1, 3))
                if label == 1:
                    m = (yy >= y0) & (yy < y0 + size) & (xx >= x0) & (xx < x0 + int(size * 0.8))
                else:
                    r = size / 2
                    m = (yy - y0 - r) ** 2 + (xx - x0 - r) ** 2 <= r * r
                if not (m & occupied).any():
                    break
            else:
                continue
            occupied |= m
            img[m] = rng.random(3) * 0.5 + 0.5
            masks.append(m)
            labels.append(label)
        image = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        target = make_target(
            torch.from_numpy(np.stack(masks)), torch.tensor(labels), torch.zeros(len(labels)), i
        )
        samples.append((image, target))
    return samples


def overfit(
    model: torch.nn.Module, samples: list, steps: int, lr: float = 2e-3, seed: int = 0
) -> list[float]:
    """Full-batch AdamW on ``samples``; returns the total loss per step."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    images = [s[0] for s in samples]
    targets = [s[1] for s in samples]
    history = []
    model.train()
    for _ in range(steps):
        losses = model(images, targets)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        history.append(float(total.detach()))
    recompute_bn_stats(model, images, targets)
    return history


def recompute_bn_stats(model: torch.nn.Module, images: list, targets: list, passes: int = 2) -> None:
    """"Precise BN": after a short from-scratch run the running BatchNorm statistics lag far behind the
    weights, so re-estimate them with a few no-grad train-mode passes (cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(images, targets)
    for bn in bns:
        bn.momentum = 0.1


def mask_ap(model: torch.nn.Module, samples: list) -> dict[str, float]:
    """COCO segm metrics (AP, AP50, ...) of ``model`` (eval mode) on ``samples``, computed by
    instaseg's :class:`COCOEvaluator` against the samples' own ground truth."""
    model.eval()
    with torch.no_grad():
        outputs = model([s[0] for s in samples])
    images, anns = [], []
    for image, target in samples:
        h, w = image.shape[1:]
        iid = int(target["image_id"])
        images.append({"id": iid, "height": h, "width": w})
        for m, lab in zip(target["masks"], target["labels"], strict=True):
            rle = rle_encode(m.numpy())
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": int(lab), "iscrowd": 0,
                         "segmentation": rle, "area": float(m.sum()), "bbox": box_xywh(m)})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "rect"}, {"id": 2, "name": "disc"}]}
    evaluator = COCOEvaluator(gt, category_ids=[0, 1, 2], iou_types=("segm",))
    evaluator.process([s[1] for s in samples], outputs)
    return evaluator.evaluate()["segm"]


def box_xywh(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    x0, y0 = float(xs.min()), float(ys.min())
    return [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0]


# The measured overfit recipe of each real-time model (Issue #7): stride-2 masks on a 128 px canvas.
OVERFIT_RECIPES: dict[str, dict] = {
    "yolact_lite": {"input_size": 128, "proto_stride": 2},
    "solov2_lite": {"input_size": 128, "mask_stride": 2},
}


RT_STEPS = 100


def overfit_case(
    name: str, seed: int = 0, steps: int = RT_STEPS
) -> tuple[torch.nn.Module, list, list[float]]:
    """Builds ``name`` with its overfit recipe, trains it on 4 synthetic images drawn with ``seed``;
    returns (model, samples, loss history). Shared by the tests and
    ``benchmarks/bench_learning_margin.py``."""
    torch.manual_seed(seed)
    samples = synthetic_samples(4, seed=seed)
    model = get_model(name, num_classes=3, **OVERFIT_RECIPES[name])
    history = overfit(model, samples, steps=steps, lr=3e-3, seed=seed)
    return model, samples, history


def zero_mask_head(model: torch.nn.Module) -> None:
    """Zeros the whole mask head: YOLACT's protonet, SOLOv2's mask features, simple_fpn's mask features
    and the controller that generates its dynamic mask kernels (its relative-coordinate input alone
    still draws a blob around each centre). A model that still finds boxes but has no mask signal:
    a learning test must fail on it."""
    names = ("protonet", "mask_branch", "controller")
    parts = [getattr(model, name) for name in names if hasattr(model, name)]
    with torch.no_grad():
        for part in parts:
            for p in part.parameters():
                p.zero_()
