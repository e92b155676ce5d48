"""The one sample schema every dataset yields, and the metadata each dataset exposes.

A dataset item is ``(image, target)``:

- ``image``: float32 Tensor[3, H, W], RGB in [0, 1] (normalisation happens in the transform/model);
- ``target``: dict with
  ``masks`` Tensor[N, H, W] bool, ``boxes`` Tensor[N, 4] float32 XYXY pixels,
  ``labels`` Tensor[N] int64 contiguous ids 1..C (0 = background, reserved),
  ``image_id`` int, ``area`` Tensor[N] float32 (mask pixel area), ``iscrowd`` Tensor[N] int64;
  panoptic datasets add ``sem_seg`` Tensor[H, W] int64 (0 = things, 1..S stuff, 255 = VOID; see
  :mod:`instaseg.structures.panoptic`), carried in :attr:`Record.extra` ``["sem_seg"]`` before transforms.

Every dataset is an :class:`InstanceDataset`: it has ``class_names`` (index 0 is ``"background"``)
and ``category_ids`` (``category_ids[label]`` is the original id to write in COCO results).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

TARGET_KEYS = ("masks", "boxes", "labels", "image_id", "area", "iscrowd")


@dataclass
class Record:
    """One image's raw annotations before any transform, in NumPy.

    ``image`` uint8 (H, W, 3) RGB; ``masks`` bool (N, H, W); ``labels`` int64 (N,) contiguous;
    ``iscrowd`` int64 (N,); ``file_name`` is the source path (for error messages).
    """

    image: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    image_id: int
    file_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def make_target(masks: Tensor, labels: Tensor, iscrowd: Tensor, image_id: int) -> dict[str, Any]:
    """Build a schema-conforming target; boxes and area are derived from ``masks`` (N, H, W)."""
    from instaseg.structures import mask_area, masks_to_boxes

    masks = masks.bool()
    return {
        "masks": masks,
        "boxes": masks_to_boxes(masks),
        "labels": labels.long(),
        "image_id": int(image_id),
        "area": mask_area(masks),
        "iscrowd": iscrowd.long(),
    }


def record_to_sample(rec: Record) -> tuple[Tensor, dict[str, Any]]:
    """Convert a :class:`Record` to ``(image, target)`` without augmentation."""
    image = torch.from_numpy(np.ascontiguousarray(rec.image)).permute(2, 0, 1).float().div_(255.0)
    h, w = rec.image.shape[:2]
    masks = torch.from_numpy(rec.masks.reshape(-1, h, w))
    target = make_target(masks, torch.from_numpy(rec.labels), torch.from_numpy(rec.iscrowd), rec.image_id)
    if "sem_seg" in rec.extra:
        target["sem_seg"] = torch.from_numpy(np.asarray(rec.extra["sem_seg"], dtype=np.int64))
    return image, target


def validate_sample(image: Tensor, target: dict[str, Any]) -> None:
    """Raise ValueError if ``(image, target)`` breaks the schema above (shapes, dtypes, lengths)."""
    if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(f"image must be float Tensor[3, H, W], got {tuple(image.shape)} {image.dtype}")
    missing = [k for k in TARGET_KEYS if k not in target]
    if missing:
        raise ValueError(f"target is missing keys {missing}")
    h, w = image.shape[1:]
    n = target["labels"].shape[0]
    m = target["masks"]
    if m.ndim != 3 or tuple(m.shape[1:]) != (h, w) or m.shape[0] != n:
        raise ValueError(f"masks must be ({n}, {h}, {w}), got {tuple(m.shape)}")
    if tuple(target["boxes"].shape) != (n, 4):
        raise ValueError(f"boxes must be ({n}, 4), got {tuple(target['boxes'].shape)}")
    for key in ("area", "iscrowd"):
        if target[key].shape[0] != n:
            raise ValueError(f"{key} must have {n} entries, got {target[key].shape[0]}")
    if target["labels"].dtype != torch.int64:
        raise ValueError(f"labels must be int64, got {target['labels'].dtype}")
    if n and int(target["labels"].min()) < 1:
        raise ValueError("labels must be >= 1 (0 is background)")


class InstanceDataset(Dataset):
    """Base class: subclasses implement ``__len__`` and ``load_record(index) -> Record``.

    ``transform`` (if given) maps a :class:`Record` to ``(image, target)``; without one the record is
    converted as is. ``class_names[0]`` is ``"background"``; ``category_ids[0]`` is 0.
    """

    class_names: list[str]
    category_ids: list[int]
    name: str = "dataset"

    def __init__(self, transform: Any = None) -> None:
        self.transform = transform

    @property
    def num_classes(self) -> int:
        """Number of classes including background (torchvision's convention)."""
        return len(self.class_names)

    def load_record(self, index: int) -> Record:  # pragma: no cover - abstract
        raise NotImplementedError

    def image_info(self, index: int) -> dict[str, Any]:
        """``{"id", "file_name", "height", "width"}`` for image ``index``; subclasses may avoid decoding."""
        rec = self.load_record(index)
        h, w = rec.image.shape[:2]
        return {"id": rec.image_id, "file_name": rec.file_name, "height": h, "width": w}

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        rec = self.load_record(index)
        if self.transform is not None:
            return self.transform(rec)
        return record_to_sample(rec)


def collate(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Collate to ``(list of images, list of targets)``: detection models take variable sizes."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)
