"""``cityscapes_panoptic:ROOT[:SPLIT]``: Cityscapes panoptic GT from ``gtFine`` label and instance ids.

The panoptic view follows Cityscapes' own conversion (cityscapesScripts' ``createPanopticImgs``), so a
written GT evaluates like the official one:

- categories: the 19 evaluated classes with their Cityscapes *label ids* as ``category_id``; things =
  the 8 classes with instances (person, rider, car, truck, bus, train, motorcycle, bicycle), stuff = the
  other 11 (road ... sky); every other label (unlabeled, ego vehicle, license plate, ...) is VOID.
- segments: each distinct value ``v`` of ``*_gtFine_instanceIds.png`` is one segment with id ``v``:
  ``v >= 1000`` is instance ``v % 1000`` of thing label ``v // 1000``; ``v < 1000`` is label ``v`` itself
  (pixels of a thing class that annotators did not separate become one ``iscrowd`` segment per class).

``instanceIds`` holds the label id wherever it is below 1000, so it carries ``labelIds`` in full; when
``*_gtFine_labelIds.png`` is present it is checked to agree (a mismatch is a DataError naming it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data.base import Record
from instaseg.data.cityscapes import GT_SUFFIX, THING_CLASSES, CityscapesDataset
from instaseg.data.coco_panoptic import PanopticDatasetMixin
from instaseg.data.io import read_image, read_mask
from instaseg.errors import DataError
from instaseg.structures.panoptic import PanopticResult, PanopticSegment

STUFF_CLASSES = (
    (7, "road"),
    (8, "sidewalk"),
    (11, "building"),
    (12, "wall"),
    (13, "fence"),
    (17, "pole"),
    (19, "traffic light"),
    (20, "traffic sign"),
    (21, "vegetation"),
    (22, "terrain"),
    (23, "sky"),
)
LABEL_SUFFIX = "_gtFine_labelIds.png"


def cityscapes_panoptic_categories() -> list[dict[str, Any]]:
    """The 19 evaluated Cityscapes classes as COCO panoptic categories, in label-id order."""
    cats = [{"id": cid, "name": n, "isthing": 0} for cid, n in STUFF_CLASSES]
    cats += [{"id": cid, "name": n, "isthing": 1} for cid, n in THING_CLASSES]
    return sorted(cats, key=lambda c: c["id"])


def instance_ids_to_panoptic(ids: np.ndarray) -> PanopticResult:
    """A Cityscapes instanceIds map (H, W) as a :class:`PanopticResult` (segment id = the map's value,
    VOID = labels that are not evaluated); ``area`` is each segment's pixel count."""
    ids = np.asarray(ids).astype(np.int32)
    things = {cid for cid, _ in THING_CLASSES}
    evaluated = things | {cid for cid, _ in STUFF_CLASSES}
    values, counts = np.unique(ids, return_counts=True)
    segments: list[PanopticSegment] = []
    keep = np.zeros(int(values.max()) + 1 if values.size else 1, dtype=bool)
    for v, n in zip(values.tolist(), counts.tolist(), strict=True):
        label = v // 1000 if v >= 1000 else v
        if label not in evaluated:
            continue
        isthing = label in things
        segments.append(PanopticSegment(v, label, isthing, iscrowd=isthing and v < 1000, area=n))
        keep[v] = True
    return PanopticResult(np.where(keep[ids], ids, 0).astype(np.int32), segments)


class CityscapesPanopticDataset(PanopticDatasetMixin, CityscapesDataset):
    """Cityscapes gtFine as a panoptic dataset (same files and splits as :class:`CityscapesDataset`)."""

    name = "cityscapes_panoptic"

    def __init__(
        self, root: str | Path, split: str | None = None, *, on_error: str = "raise", transform: Any = None
    ) -> None:
        super().__init__(root, split, on_error=on_error, transform=transform)
        self._set_categories(cityscapes_panoptic_categories())

    def load_panoptic(self, index: int) -> PanopticResult:
        gt = self.gt_files[index]
        ids = read_mask(gt)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise DataError(gt, f"expected a single-channel id map, got shape {ids.shape}")
        label_file = gt.with_name(gt.name[: -len(GT_SUFFIX)] + LABEL_SUFFIX)
        if label_file.is_file():
            labels = read_mask(label_file)
            expected = np.where(ids >= 1000, ids // 1000, ids)
            if labels.shape != ids.shape or not np.array_equal(labels, expected):
                raise DataError(label_file, f"does not agree with {gt.name} (label ids differ)")
        return instance_ids_to_panoptic(ids)

    def load_annotations(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.panoptic_to_annotations(self.load_panoptic(index))

    def _load(self, index: int) -> Record:
        path = self.image_path(index)
        image = read_image(path)
        pan = self.load_panoptic(index)
        if image.shape[:2] != pan.image_size:
            raise DataError(self.gt_files[index], f"map is {pan.image_size[1]}x{pan.image_size[0]} but the "
                            f"image {path.name} is {image.shape[1]}x{image.shape[0]}")
        masks, labels, iscrowd = self.panoptic_to_annotations(pan)
        extra = {"sem_seg": self.semantic_map(pan), "panoptic": pan}
        return Record(image, masks, labels, iscrowd, index, str(path), extra=extra)
