"""Validation during and after training: COCO mask/box AP on the val set, plus overlay images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from instaseg.data.base import collate


def _to_cpu(output: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in output.items():
        if isinstance(v, Tensor):
            v = v.detach().cpu()
            v = v.float() if v.is_floating_point() else v
        out[k] = v
    return out


def _filter(output: dict[str, Any], score_thresh: float) -> dict[str, Any]:
    keep = output["scores"] >= score_thresh
    return {
        k: (v[keep] if isinstance(v, Tensor) and v.shape[:1] == keep.shape else v) for k, v in output.items()
    }


class Validator:
    """COCO mask/box AP of a model on a val dataset (an InstanceDataset yielding ``(image, target)``).

    The ground truth is converted once; each call runs the model over the (first ``max_images``)
    images and returns ``(metrics, samples)``: ``{"segm": {...}, "bbox": {...}, "per_class": {...}}``
    on a 0-1 scale, and the first ``num_samples`` ``(image, output)`` pairs for overlays.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int = 4,
        score_thresh: float = 0.05,
        max_images: int | None = None,
        num_samples: int = 0,
        num_workers: int = 0,
    ) -> None:
        from instaseg.evaluation.coco import COCOEvaluator

        self.evaluator = COCOEvaluator(dataset)
        self.dataset: Dataset = dataset
        n = len(dataset)  # type: ignore[arg-type]
        if max_images is not None and max_images < n:
            self.dataset = Subset(dataset, range(max_images))
            keep = {int(dataset.image_info(i)["id"]) for i in range(max_images)}  # type: ignore[attr-defined]
            gt = self.evaluator.gt
            self.evaluator.gt = {
                **gt,
                "images": [im for im in gt["images"] if int(im["id"]) in keep],
                "annotations": [a for a in gt["annotations"] if int(a["image_id"]) in keep],
            }
        self.batch_size = batch_size
        self.score_thresh = score_thresh
        self.num_samples = num_samples
        self.num_workers = num_workers

    @torch.no_grad()
    def __call__(
        self, model: nn.Module, device: torch.device, *, amp: bool = False, progress: bool = False
    ) -> tuple[dict[str, Any], list[tuple[Tensor, dict[str, Any]]]]:
        loader: Any = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            collate_fn=collate,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(0),  # leaves the global torch RNG alone
        )
        if progress:
            from tqdm import tqdm

            loader = tqdm(loader, desc="validate", leave=False, dynamic_ncols=True)
        was_training = model.training
        model.eval()
        self.evaluator.reset()
        samples: list[tuple[Tensor, dict[str, Any]]] = []
        for images, targets in loader:
            with torch.autocast(device.type, enabled=amp):
                outputs = model([im.to(device) for im in images])
            outputs = [_filter(_to_cpu(o), self.score_thresh) for o in outputs]
            self.evaluator.process(targets, outputs)
            for image, out in zip(images, outputs, strict=True):
                if len(samples) < self.num_samples:
                    samples.append((image, out))
        model.train(was_training)
        return self.evaluator.evaluate(), samples


def overlay(
    image: Tensor,
    output: dict[str, Any],
    class_names: list[str] | None = None,
    mask_thresh: float = 0.5,
    min_score: float = 0.5,
) -> np.ndarray:
    """Draw ``output`` (model eval format) on ``image`` [3,H,W] in [0,1]: uint8 HxWx3 RGB."""
    from instaseg.viz.draw import draw_instances

    rgb = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    keep = output["scores"] >= min_score
    masks = output["masks"][keep]
    masks = (masks[:, 0] if masks.ndim == 4 else masks) >= mask_thresh
    return draw_instances(
        rgb,
        masks.numpy(),
        boxes=output["boxes"][keep].numpy(),
        labels=output["labels"][keep].numpy(),
        scores=output["scores"][keep].numpy(),
        class_names=class_names,
    )


def write_overlays(
    samples: list[tuple[Tensor, dict[str, Any]]], folder: str | Path, class_names: list[str] | None = None
) -> list[Path]:
    """Write one PNG per sample (``val_<i>.png``) into ``folder``; returns the paths."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, output) in enumerate(samples):
        path = folder / f"val_{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(overlay(image, output, class_names), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths
