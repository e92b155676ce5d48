"""Index subsets of a dataset (the 80/20 train/val split) and annotation-only loading."""

from __future__ import annotations

from typing import Any

import numpy as np

from instaseg.data.base import InstanceDataset, Record
from instaseg.structures.masks import encode_masks


def load_annotations(dataset: Any, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(masks (N,H,W) bool, labels (N,), iscrowd (N,))`` of image ``index``, without decoding the
    image when the dataset offers ``load_annotations`` (COCO, Cityscapes, folder datasets do)."""
    fn = getattr(dataset, "load_annotations", None)
    if fn is not None:
        return fn(index)
    rec = dataset.load_record(index)
    return rec.masks, rec.labels, rec.iscrowd


# (compressed RLEs with bytes counts, labels (N,), iscrowd (N,), (height, width))
RleAnnotations = tuple[list[dict[str, Any]], np.ndarray, np.ndarray, tuple[int, int]]


def load_rles(dataset: Any, index: int) -> RleAnnotations:
    """``(compressed RLEs with bytes counts, labels, iscrowd, (height, width))`` of image ``index``.

    Uses the dataset's own ``load_rles`` when it has one (COCO: straight from the JSON, no full masks),
    else encodes the masks of :func:`load_annotations`.
    """
    fn = getattr(dataset, "load_rles", None)
    if fn is not None:
        return fn(index)
    masks, labels, iscrowd = load_annotations(dataset, index)
    if len(masks):
        size = (int(masks.shape[1]), int(masks.shape[2]))
    else:
        info = dataset.image_info(index)
        size = (int(info["height"]), int(info["width"]))
    rles = [encode_masks(m[None])[0] for m in masks]
    return rles, labels, iscrowd, size


def split_8020(n: int, split: str) -> list[int]:
    """Deterministic 80/20 split of ``range(n)``: index % 5 == 4 is ``val``, the rest ``train``."""
    if split == "val":
        return [i for i in range(n) if i % 5 == 4]
    return [i for i in range(n) if i % 5 != 4]


# Dataset attributes a subset shares with its base when the base has them (panoptic category lists).
SHARED_ATTRS = ("panoptic_categories", "thing_category_ids", "stuff_category_ids", "stuff_names")


class SplitDataset(InstanceDataset):
    """A fixed subset of ``base`` (by index) that shares its classes, image ids and file names, and a
    panoptic base's category lists and ``load_panoptic``."""

    def __init__(self, base: InstanceDataset, indices: list[int], *, split: str, transform: Any = None):
        super().__init__(transform)
        self.base = base
        self.indices = list(indices)
        self.split = split
        self.class_names = base.class_names
        self.category_ids = base.category_ids
        self.name = f"{base.name}[{split}]"
        for attr in SHARED_ATTRS:
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))

    def __len__(self) -> int:
        return len(self.indices)

    def load_record(self, index: int) -> Record:
        return self.base.load_record(self.indices[index])

    def image_info(self, index: int) -> dict[str, Any]:
        return self.base.image_info(self.indices[index])

    def load_annotations(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return load_annotations(self.base, self.indices[index])

    def load_rles(self, index: int) -> RleAnnotations:
        return load_rles(self.base, self.indices[index])

    def load_panoptic(self, index: int) -> Any:
        """The base's panoptic GT (only panoptic bases, those with ``panoptic_categories``, have one)."""
        return self.base.load_panoptic(self.indices[index])
