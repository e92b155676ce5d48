"""``folder:ROOT``: images with instance masks in plain folders. The layout is detected from folder names:

- ``images/`` + ``masks/``: one instance-id PNG per image (0 background, k = instance k), matched by file
  stem; the mask may carry a ``_mask`` suffix (``masks/a_mask.png`` for ``images/a.jpg``).
- ``PNGImages/`` + ``PedMasks/``: the Penn-Fudan layout (same id masks); its class is ``person``.
- ``JPEGImages/`` + ``SegmentationObject/``: PASCAL VOC instance PNGs (255 = void border, ignored);
  classes from ``SegmentationClass/`` (majority class under each instance) and ``class_names.txt``
  (labelme's export), or one class when those are missing. Only images with a mask are used.
- ``<id>/images/<id>.png`` + ``<id>/masks/*.png``: one binary PNG per instance (Data Science Bowl 2018
  nuclei); instances may overlap.

All layouts but VOC have one class, named ``object`` unless ``ROOT/classes.txt`` names it (its first
non-empty line) or the ``class_name=`` option does. Image ids are indices in sorted file order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data._skip import SkipCounter, check_on_error
from instaseg.data.base import InstanceDataset, Record
from instaseg.data.io import image_size, read_image, read_mask
from instaseg.errors import DataError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
ID_MASK_LAYOUTS = (("images", "masks"), ("PNGImages", "PedMasks"))
VOC_VOID = 255


def _files(folder: Path, exts: set[str] = IMAGE_EXTS) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)


def _mask_key(stem: str) -> str:
    return stem[: -len("_mask")] if stem.endswith("_mask") else stem


def id_map_to_masks(ids: np.ndarray, ignore: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Split an instance-id map (H, W) into ``(masks (N,H,W) bool, ids (N,))``: one mask per non-zero
    id (ascending), skipping ``ignore`` ids."""
    flat = ids.ravel()
    if ids.dtype.kind in "iu" and ids.dtype.itemsize <= 2:
        values = np.flatnonzero(np.bincount(flat.astype(np.int64)))
    else:
        values = np.unique(flat)
    values = np.array([v for v in values if v != 0 and v not in ignore], dtype=ids.dtype)
    masks = ids[None] == values[:, None, None] if len(values) else np.zeros((0, *ids.shape), bool)
    return masks, values


class FolderDataset(InstanceDataset):
    """Images and instance masks in one of the folder layouts above.

    Args:
        root: the dataset folder.
        class_name: name of the single class (default: ``classes.txt``, Penn-Fudan ``person``, ``object``).
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`instaseg.data._skip`).
        transform: optional ``Record -> (image, target)``.
    """

    name = "folder"

    def __init__(
        self,
        root: str | Path,
        *,
        class_name: str | None = None,
        on_error: str = "raise",
        transform: Any = None,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        self.on_error = check_on_error(on_error)
        self.skipped = SkipCounter()
        if not self.root.is_dir():
            raise DataError(self.root, "dataset folder not found")
        self.items: list[tuple[Path, list[Path]]] = []
        self.class_map_dir: Path | None = None
        default_name = "object"
        for image_dir, mask_dir in ID_MASK_LAYOUTS:
            if (self.root / image_dir).is_dir() and (self.root / mask_dir).is_dir():
                self.layout = "id_masks"
                self._pair_by_stem(self.root / image_dir, self.root / mask_dir)
                default_name = "person" if mask_dir == "PedMasks" else default_name
                break
        else:
            if (self.root / "JPEGImages").is_dir() and (self.root / "SegmentationObject").is_dir():
                self.layout = "voc"
                self._pair_voc()
            else:
                self.layout = "per_instance"
                self._collect_per_instance()
        if not self.items:
            raise DataError(self.root, f"no images with masks found ({self.layout} layout)")
        names_file = self.root / "classes.txt"
        if class_name is None and names_file.is_file():
            lines = [ln.strip() for ln in names_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
            class_name = lines[0] if lines else None
        if self.layout == "voc" and self.class_map_dir is not None and class_name is None:
            self.class_names = ["background", *self._voc_class_names()]
        else:
            self.class_map_dir = None
            self.class_names = ["background", class_name or default_name]
        self.category_ids = list(range(len(self.class_names)))

    # --- layout discovery -------------------------------------------------------------------------
    def _pair_by_stem(self, image_dir: Path, mask_dir: Path) -> None:
        masks: dict[str, Path] = {}
        for m in _files(mask_dir):
            masks.setdefault(_mask_key(m.stem), m)
        missing = []
        for img in _files(image_dir):
            mask = masks.get(img.stem)
            if mask is None:
                missing.append(img.name)
            else:
                self.items.append((img, [mask]))
        if missing:
            raise DataError(
                mask_dir,
                f"{len(missing)} image(s) have no mask (first: {missing[0]}); expected "
                f"{mask_dir.name}/<stem>.png or {mask_dir.name}/<stem>_mask.png",
            )

    def _pair_voc(self) -> None:
        images = {p.stem: p for p in _files(self.root / "JPEGImages")}
        for mask in _files(self.root / "SegmentationObject", {".png"}):
            if mask.stem not in images:
                raise DataError(mask, f"no JPEGImages/{mask.stem}.* image for this mask")
            self.items.append((images[mask.stem], [mask]))
        if (self.root / "SegmentationClass").is_dir() and (self.root / "class_names.txt").is_file():
            self.class_map_dir = self.root / "SegmentationClass"

    def _voc_class_names(self) -> list[str]:
        lines = (self.root / "class_names.txt").read_text(encoding="utf-8").splitlines()
        names = [ln.strip() for ln in lines if ln.strip()]
        if names and names[0].lower().strip("_") == "background":
            names = names[1:]
        if not names:
            raise DataError(self.root / "class_names.txt", "no class names")
        return names

    def _collect_per_instance(self) -> None:
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir() and (p / "images").is_dir())
        if not subdirs:
            raise DataError(
                self.root,
                "unrecognised folder layout: expected images/+masks/, PNGImages/+PedMasks/, "
                "JPEGImages/+SegmentationObject/ or <id>/images/+<id>/masks/",
            )
        for sub in subdirs:
            images = _files(sub / "images")
            if len(images) != 1:
                raise DataError(sub / "images", f"expected exactly one image, found {len(images)}")
            masks = _files(sub / "masks") if (sub / "masks").is_dir() else []
            self.items.append((images[0], masks))

    # --- dataset API ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def image_info(self, index: int) -> dict[str, Any]:
        path = self.items[index][0]
        h, w = image_size(path)
        return {"id": index, "file_name": str(path.relative_to(self.root)), "height": h, "width": w}

    def load_annotations(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks, labels and iscrowd from the mask files alone (no image decode)."""
        image_path, mask_paths = self.items[index]
        if self.layout == "per_instance":
            if not mask_paths:
                h, w = image_size(image_path)
                masks = np.zeros((0, h, w), bool)
            else:
                first = read_mask(mask_paths[0])
                masks = np.empty((len(mask_paths), *first.shape[:2]), dtype=bool)  # filled in place
                for k, p in enumerate(mask_paths):
                    m = first if k == 0 else read_mask(p)
                    if m.shape != first.shape:
                        raise DataError(p, f"mask is {m.shape[::-1]} but {mask_paths[0].name} is "
                                           f"{first.shape[::-1]}")
                    np.greater(m, 0, out=masks[k])
            labels = np.ones(len(masks), np.int64)
        else:
            ids = read_mask(mask_paths[0])
            if ids.ndim != 2:
                raise DataError(mask_paths[0], f"expected a single-channel id map, got shape {ids.shape}")
            masks, _ = id_map_to_masks(ids, (VOC_VOID,) if self.layout == "voc" else ())
            labels = self._voc_labels(index, masks) if self.class_map_dir else np.ones(len(masks), np.int64)
        return masks, labels, np.zeros(len(masks), np.int64)

    def _voc_labels(self, index: int, masks: np.ndarray) -> np.ndarray:
        path = self.class_map_dir / self.items[index][1][0].name  # type: ignore[operator]
        classes = read_mask(path)
        if classes.shape != masks.shape[1:]:
            raise DataError(path, f"class map is {classes.shape[::-1]}, instance map {masks.shape[:0:-1]}")
        labels = []
        for m in masks:
            votes = np.bincount(classes[m].astype(np.int64), minlength=VOC_VOID + 1)
            votes[[0, VOC_VOID]] = 0
            label = int(votes.argmax())
            if votes[label] == 0 or label >= len(self.class_names):
                raise DataError(path, f"instance without a valid class (class id {label})")
            labels.append(label)
        return np.array(labels, dtype=np.int64)

    def _load(self, index: int) -> Record:
        image_path, mask_paths = self.items[index]
        image = read_image(image_path)
        masks, labels, iscrowd = self.load_annotations(index)
        if masks.shape[1:] != image.shape[:2]:
            raise DataError(
                mask_paths[0], f"mask is {masks.shape[2]}x{masks.shape[1]} but the image "
                f"{image_path.name} is {image.shape[1]}x{image.shape[0]}"
            )
        return Record(image, masks, labels, iscrowd, index, str(image_path))

    def load_record(self, index: int) -> Record:
        return self.skipped.load(index, len(self), self._load, self.on_error)
