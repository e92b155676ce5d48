"""Run a :class:`~instaseg.predict.predictor.Predictor` over a dataset and turn its ``Instances`` into COCO
results: the one loop behind training's validation and ``instaseg evaluate --checkpoint``.

COCO results: ``{"image_id", "category_id", "bbox" [x, y, w, h] (clipped to the image), "score",
"segmentation" (compressed RLE, str counts)}`` (+ ``track_id`` for tracked video instances);
``category_id`` is the dataset's original id.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from instaseg.data.base import collate
from instaseg.errors import CheckpointError
from instaseg.predict.predictor import Predictor
from instaseg.structures.instances import Instances

Samples = list[tuple[Tensor, Instances]]


class FirstImages:
    """The first ``n`` images of an InstanceDataset, keeping its class metadata and record access."""

    def __init__(self, base: Any, n: int) -> None:
        self.base, self.n = base, min(n, len(base))
        self.class_names, self.category_ids = base.class_names, base.category_ids

    def __len__(self) -> int:
        return self.n

    def _check(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return i

    def __getitem__(self, i: int) -> Any:
        return self.base[self._check(i)]

    def load_record(self, i: int) -> Any:
        return self.base.load_record(self._check(i))

    def image_info(self, i: int) -> dict[str, Any]:
        return self.base.image_info(self._check(i))


def map_labels(class_names: Sequence[str], dataset: Any, where: str) -> list[int]:
    """``result[label]`` = the dataset's category id for the model's class ``label``: by id when the
    class names agree, else by class name (labels with no same-named category map to -1 and their
    detections are dropped). Raises CheckpointError when no class name is shared."""
    names = list(class_names)
    ds_names, ds_ids = list(dataset.class_names), list(dataset.category_ids)
    if not names:
        raise CheckpointError(f"{where}: checkpoint has no class_names; cannot map its labels")
    if names == ds_names:
        return [int(c) for c in ds_ids]
    by_name = dict(zip(ds_names[1:], ds_ids[1:], strict=True))
    mapping = [0] + [int(by_name.get(n, -1)) for n in names[1:]]
    if all(m < 0 for m in mapping[1:]):
        raise CheckpointError(
            f"{where}: the checkpoint's classes ({', '.join(names[1:6])}...) share no name with the "
            f"dataset's ({', '.join(ds_names[1:6])}...)"
        )
    return mapping


def instances_to_results(
    inst: Instances, image_id: int, category_ids: Sequence[int], mask_thresh: float = 0.5
) -> list[dict[str, Any]]:
    """COCO results of one image's instances; labels whose ``category_ids[label]`` is negative are
    dropped. Boxes are clipped to the image; masks are pasted inside their boxes (``to_rles``)."""
    h, w = inst.image_size
    rles = inst.to_rles(mask_thresh) if inst.mask_kind is not None else None
    boxes = inst.boxes.detach().cpu().double()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    out = []
    for k, (label, score) in enumerate(zip(inst.labels.tolist(), inst.scores.tolist(), strict=True)):
        cat = int(category_ids[label]) if 0 <= label < len(category_ids) else -1
        if cat < 0:
            continue
        x1, y1, x2, y2 = boxes[k].tolist()
        entry: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": cat,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(score),
        }
        if rles is not None:
            entry["segmentation"] = rles[k]
        if inst.track_ids is not None:
            entry["track_id"] = int(inst.track_ids[k])
        out.append(entry)
    return out


def predict_dataset(
    predictor: Predictor,
    dataset: Any,
    *,
    category_ids: Sequence[int],
    batch_size: int = 2,
    num_workers: int = 0,
    num_samples: int = 0,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], Samples]:
    """COCO results of ``predictor`` on every image of ``dataset`` (an InstanceDataset yielding
    ``(image [3, H, W] in [0, 1], target)``), batch by batch, plus the first ``num_samples``
    ``(image, Instances)`` pairs (for overlays). Only one batch of masks is alive at a time."""
    loader: Any = DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),  # leaves the global torch RNG alone
    )
    if progress:
        loader = tqdm(loader, desc="predict", unit="batch", file=sys.stderr, leave=False, dynamic_ncols=True)
    results: list[dict[str, Any]] = []
    samples: Samples = []
    for images, targets in loader:
        for image, target, inst in zip(images, targets, predictor.predict_torch(list(images)), strict=True):
            image_id = int(target["image_id"])
            results.extend(instances_to_results(inst, image_id, category_ids, predictor.mask_thresh))
            if len(samples) < num_samples:
                samples.append((image, inst))
    return results, samples
