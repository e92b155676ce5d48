"""``cityscapes:ROOT[:SPLIT]``: Cityscapes fine instance annotations.

Layout: ``ROOT/leftImg8bit/SPLIT/CITY/X_leftImg8bit.png`` and
``ROOT/gtFine/SPLIT/CITY/X_gtFine_instanceIds.png`` (16-bit). In an instanceIds map, a pixel
``class_id * 1000 + k`` belongs to instance ``k`` of a thing class; a pixel equal to a thing
``class_id`` (< 1000) is a group of that class that annotators could not separate: it becomes one
``iscrowd=1`` region per class (COCO's convention). Other ids are stuff. Labels follow the 8 Cityscapes
instance classes; ``category_ids`` holds their Cityscapes label ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data._skip import SkipCounter, check_on_error
from instaseg.data.base import InstanceDataset, Record
from instaseg.data.io import image_size, read_image, read_mask
from instaseg.errors import DataError

# (Cityscapes label id, name) of the classes that have instances, in label order.
THING_CLASSES = (
    (24, "person"),
    (25, "rider"),
    (26, "car"),
    (27, "truck"),
    (28, "bus"),
    (31, "train"),
    (32, "motorcycle"),
    (33, "bicycle"),
)
GT_SUFFIX = "_gtFine_instanceIds.png"
IMG_SUFFIX = "_leftImg8bit.png"


def instance_ids_to_masks(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a Cityscapes instanceIds map (H, W) into ``(masks (N,H,W) bool, labels (N,), iscrowd (N,))``.

    Instances (``id >= 1000`` of a thing class) come first in id order, then one crowd region per thing
    class that has plain-class pixels.
    """
    label_of = {cid: k + 1 for k, (cid, _) in enumerate(THING_CLASSES)}
    present = np.flatnonzero(np.bincount(ids.ravel().astype(np.int64)))
    things = [int(v) for v in present if v >= 1000 and v // 1000 in label_of]
    crowds = [int(v) for v in present if v in label_of]
    values = things + crowds
    labels = [label_of[v // 1000] for v in things] + [label_of[v] for v in crowds]
    iscrowd = [0] * len(things) + [1] * len(crowds)
    if values:
        masks = ids[None] == np.array(values, dtype=ids.dtype)[:, None, None]
    else:
        masks = np.zeros((0, *ids.shape), dtype=bool)
    return masks, np.array(labels, dtype=np.int64), np.array(iscrowd, dtype=np.int64)


class CityscapesDataset(InstanceDataset):
    """Cityscapes gtFine instances.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"``, ``"val"``, ``"test"`` (any folder under ``gtFine/``), or ``None`` for every
            split folder present.
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`instaseg.data._skip`).
        transform: optional ``Record -> (image, target)``.
    """

    name = "cityscapes"

    def __init__(
        self, root: str | Path, split: str | None = None, *, on_error: str = "raise", transform: Any = None
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        self.on_error = check_on_error(on_error)
        self.skipped = SkipCounter()
        gt_root = self.root / "gtFine"
        for folder in (self.root, self.root / "leftImg8bit", gt_root):
            if not folder.is_dir():
                raise DataError(folder, "folder not found (expected ROOT/leftImg8bit and ROOT/gtFine)")
        available = sorted(p.name for p in gt_root.iterdir() if p.is_dir())
        if split is None:
            splits = available
        elif split in available:
            splits = [split]
        else:
            raise DataError(gt_root / split, f"split {split!r} not found (available: {available})")
        self.split = split
        self.gt_files = sorted(f for s in splits for f in (gt_root / s).glob(f"*/*{GT_SUFFIX}"))
        if not self.gt_files:
            raise DataError(gt_root, f"no */*{GT_SUFFIX} files in splits {splits}")
        self.class_names = ["background", *(name for _, name in THING_CLASSES)]
        self.category_ids = [0, *(cid for cid, _ in THING_CLASSES)]

    def __len__(self) -> int:
        return len(self.gt_files)

    def image_path(self, index: int) -> Path:
        gt = self.gt_files[index]
        rel = gt.relative_to(self.root / "gtFine")
        return self.root / "leftImg8bit" / rel.parent / (gt.name[: -len(GT_SUFFIX)] + IMG_SUFFIX)

    def image_info(self, index: int) -> dict[str, Any]:
        path = self.image_path(index)
        h, w = image_size(path)
        return {"id": index, "file_name": str(path.relative_to(self.root)), "height": h, "width": w}

    def load_annotations(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks, labels and iscrowd from the instanceIds PNG alone."""
        ids = read_mask(self.gt_files[index])
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise DataError(self.gt_files[index], f"expected a single-channel id map, got {ids.shape}")
        return instance_ids_to_masks(ids)

    def _load(self, index: int) -> Record:
        path = self.image_path(index)
        image = read_image(path)
        masks, labels, iscrowd = self.load_annotations(index)
        if masks.shape[1:] != image.shape[:2] and len(masks):
            raise DataError(
                self.gt_files[index], f"mask is {masks.shape[2]}x{masks.shape[1]} but the image "
                f"{path.name} is {image.shape[1]}x{image.shape[0]}"
            )
        return Record(image, masks, labels, iscrowd, index, str(path))

    def load_record(self, index: int) -> Record:
        return self.skipped.load(index, len(self), self._load, self.on_error)
