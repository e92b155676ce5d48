"""COCO instances JSON: the ``coco:ANNOTATIONS.json[:IMAGE_DIR]`` dataset and COCO export.

:class:`CocoDataset` keeps every annotation pycocotools keeps (polygons with several parts, compressed
and uncompressed RLE, ``iscrowd``), keeps images without annotations, and maps the (possibly
non-contiguous) category ids to contiguous labels 1..C in id order. A category named like background
(``_background_``, as labelme's exporter writes) that no annotation uses is not a class.

:func:`dataset_to_coco` writes any :class:`InstanceDataset` as a COCO ground-truth dict (compressed
RLE, original category ids) that pycocotools loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data._skip import SkipCounter, check_on_error
from instaseg.data._split import RleAnnotations, load_rles
from instaseg.data.base import InstanceDataset, Record
from instaseg.data.io import image_size, read_image, read_json
from instaseg.errors import DataError
from instaseg.structures.masks import (
    counts_to_rle,
    decode_rles,
    empty_rle,
    polygons_to_rle,
    rle_areas,
    rle_boxes,
)

BACKGROUND_NAMES = {"background", "_background_", "__background__", "bg"}


def _require(obj: Any, key: str, where: str, path: Path) -> Any:
    if not isinstance(obj, dict):
        raise DataError(path, f"{where} must be a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(path, f"{where} has no {key!r} key")
    return obj[key]


def guess_image_dir(ann_file: str | Path, file_names: list[str]) -> Path:
    """Folder holding the images of ``ann_file``: ``annotations/instances_val2017.json`` -> ``val2017/``
    beside ``annotations/``, else ``images/``, else the JSON's own folder (the first candidate where one
    of the first ``file_names`` exists; the JSON's folder when none matches)."""
    ann = Path(ann_file)
    here, up = ann.parent, ann.parent.parent
    token = ann.stem.rsplit("_", 1)[-1]
    candidates = [up / token, here / token, up / "images" / token, here / "images" / token] if token else []
    candidates += [here, here / "images", up / "images", up]
    probe = file_names[:5]
    for folder in candidates:
        if folder.is_dir() and any((folder / name).is_file() for name in probe):
            return folder
    return here


def segmentation_to_rle(seg: Any, height: int, width: int, where: str, path: Path) -> dict[str, Any]:
    """One annotation's ``segmentation`` (polygons, one flat polygon, compressed or uncompressed RLE)
    as a compressed RLE with bytes counts, as pycocotools' ``annToRLE`` makes it (no full mask)."""
    if isinstance(seg, list):
        if seg and all(isinstance(v, int | float) for v in seg):
            seg = [seg]
        if not all(isinstance(p, list) for p in seg):
            raise DataError(path, f"{where}: segmentation polygons must be lists of numbers")
        polys = [[float(v) for v in p] for p in seg if len(p) >= 6]
        if not polys:
            return empty_rle(height, width)
        return polygons_to_rle(polys, height, width)
    if isinstance(seg, dict):
        size = _require(seg, "size", f"{where} segmentation", path)
        counts = _require(seg, "counts", f"{where} segmentation", path)
        if list(size) != [height, width]:
            raise DataError(path, f"{where}: RLE size {list(size)} != image size [{height}, {width}]")
        try:
            if isinstance(counts, list):
                return counts_to_rle(counts, height, width)
            code = counts.encode("ascii") if isinstance(counts, str) else counts
            rle = {"size": [height, width], "counts": code}
            rle_areas([rle])  # validates the counts string
            return rle
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            raise DataError(path, f"{where}: undecodable RLE ({exc})") from None
    raise DataError(path, f"{where}: segmentation must be a polygon list or an RLE dict")


def _box_polygon(bbox: Any, where: str, path: Path) -> list[list[float]]:
    """COCO ``bbox`` ``[x, y, w, h]`` as the polygon of the filled box."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
        raise DataError(path, f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise DataError(path, f"{where}: bbox {bbox} has no area")
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


class CocoDataset(InstanceDataset):
    """A COCO instances JSON and its image folder.

    Args:
        ann_file: the instances JSON.
        image_dir: folder the JSON's ``file_name`` entries are relative to (guessed when ``None``,
            see :func:`guess_image_dir`).
        on_error: ``"raise"`` (default) or ``"skip"``: log a counted warning and load the next image
            when an image is unreadable (``self.skipped`` counts them).
        boxes_as_masks: annotations without a ``segmentation`` get their ``bbox`` filled as the mask
            (a box-only file, for ``train.supervision: boxes``, whose models never read the masks);
            without it such an annotation is an error.
        transform: optional ``Record -> (image, target)``.
    """

    name = "coco"

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path | None = None,
        *,
        on_error: str = "raise",
        transform: Any = None,
        boxes_as_masks: bool = False,
    ) -> None:
        super().__init__(transform)
        self.ann_file = Path(ann_file)
        self.on_error = check_on_error(on_error)
        self.skipped = SkipCounter()
        data = read_json(self.ann_file)
        path = self.ann_file
        images = _require(data, "images", "the file", path)
        categories = _require(data, "categories", "the file", path)
        anns = data.get("annotations", []) if isinstance(data, dict) else []
        for key, value in (("images", images), ("categories", categories), ("annotations", anns)):
            if not isinstance(value, list):
                raise DataError(path, f"{key!r} must be a list, got {type(value).__name__}")

        self.images: list[dict[str, Any]] = []
        index_of: dict[int, int] = {}
        for k, img in enumerate(images):
            where = f"images[{k}]"
            image_id = _require(img, "id", where, path)
            file_name = _require(img, "file_name", where, path)
            if image_id in index_of:
                raise DataError(path, f"{where}: duplicate image id {image_id}")
            index_of[image_id] = k
            self.images.append(
                {"id": image_id, "file_name": str(file_name), "height": img.get("height"),
                 "width": img.get("width")}
            )

        cats = {}
        for k, cat in enumerate(categories):
            cid = _require(cat, "id", f"categories[{k}]", path)
            cats[cid] = str(_require(cat, "name", f"categories[{k}]", path))
        self.anns: list[list[dict[str, Any]]] = [[] for _ in self.images]
        used: set[int] = set()
        self.orphans = 0  # annotations whose image_id is not in "images" (pycocotools keeps them too)
        for k, ann in enumerate(anns):
            where = f"annotations[{k}]"
            image_id = _require(ann, "image_id", where, path)
            cid = _require(ann, "category_id", where, path)
            if "segmentation" not in ann:
                if not boxes_as_masks:
                    raise DataError(path, f"{where} has no 'segmentation' key (a box-only file: train on it "
                                          "with train.supervision=boxes, or make masks with instaseg data "
                                          "pseudo-masks)")
                ann = {**ann, "segmentation": _box_polygon(_require(ann, "bbox", where, path), where, path)}
            if cid not in cats:
                raise DataError(path, f"{where}: category_id {cid} is not in 'categories'")
            used.add(cid)
            if image_id not in index_of:
                self.orphans += 1
                continue
            self.anns[index_of[image_id]].append(ann)

        ids = sorted(c for c in cats if c in used or cats[c].lower() not in BACKGROUND_NAMES)
        self.category_ids = [0, *ids]
        self.class_names = ["background", *(cats[c] for c in ids)]
        self._label_of = {cid: label for label, cid in enumerate(self.category_ids) if label}
        self.image_dir_guessed = image_dir is None
        if image_dir is None:
            self.image_dir = guess_image_dir(path, [im["file_name"] for im in self.images])
        else:
            self.image_dir = Path(image_dir)
            if not self.image_dir.is_dir():
                raise DataError(self.image_dir, "image folder not found")

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.images[index]["file_name"]

    def image_info(self, index: int) -> dict[str, Any]:
        img = self.images[index]
        h, w = img["height"], img["width"]
        if not (isinstance(h, int) and isinstance(w, int)):
            h, w = image_size(self.image_path(index))  # the JSON does not say: read the header only
        return {"id": img["id"], "file_name": img["file_name"], "height": h, "width": w}

    def load_annotations(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(masks (N,H,W) bool, labels (N,), iscrowd (N,))`` from the JSON alone (no image decode)."""
        rles, labels, iscrowd, (h, w) = self.load_rles(index)
        if not rles:
            return np.zeros((0, h, w), dtype=bool), labels, iscrowd
        try:
            masks = decode_rles(rles, h, w)
        except ValueError as exc:
            image_id = self.images[index]["id"]
            raise DataError(self.ann_file, f"image id {image_id}: undecodable RLE ({exc})") from None
        return masks, labels, iscrowd

    def load_rles(self, index: int) -> RleAnnotations:
        """``(RLEs, labels, iscrowd, (h, w))`` straight from the JSON (for :func:`dataset_to_coco`)."""
        info = self.image_info(index)
        h, w = info["height"], info["width"]
        anns = self.anns[index]
        rles = [
            segmentation_to_rle(a["segmentation"], h, w, f"annotation id {a.get('id', '?')}", self.ann_file)
            for a in anns
        ]
        labels = np.array([self._label_of[a["category_id"]] for a in anns], dtype=np.int64)
        iscrowd = np.array([int(bool(a.get("iscrowd", 0))) for a in anns], dtype=np.int64)
        return rles, labels, iscrowd, (h, w)

    def _load(self, index: int) -> Record:
        path = self.image_path(index)
        try:
            image = read_image(path)
        except DataError as exc:
            if exc.problem == "file not found" and self.image_dir_guessed:
                raise DataError(path, f"file not found (image folder guessed as {self.image_dir}; "
                                      "name it with coco:ANNOTATIONS.json:IMAGE_DIR)") from None
            raise
        info = self.image_info(index)
        if image.shape[:2] != (info["height"], info["width"]):
            raise DataError(
                path,
                f"image is {image.shape[1]}x{image.shape[0]} but {self.ann_file.name} says "
                f"{info['width']}x{info['height']}",
            )
        masks, labels, iscrowd = self.load_annotations(index)
        return Record(image, masks, labels, iscrowd, int(info["id"]), str(path),
                      extra={"ann_ids": [a.get("id") for a in self.anns[index]]})

    def load_record(self, index: int) -> Record:
        return self.skipped.load(index, len(self), self._load, self.on_error)


def dataset_to_coco(dataset: Any, *, description: str = "") -> dict[str, Any]:
    """A COCO ground-truth dict for ``dataset`` (any :class:`InstanceDataset`).

    ``images``: ``id`` (the dataset's image ids), ``file_name``, ``height``, ``width``;
    ``annotations``: ``id`` (1..), ``image_id``, ``category_id`` (the ORIGINAL ids,
    ``dataset.category_ids[label]``), ``segmentation`` (compressed RLE with str counts), ``area``
    (mask pixels), ``bbox`` [x, y, w, h] of the mask's pixel extent, ``iscrowd``; ``categories``.
    Images are decoded only when the dataset cannot give its masks without them.
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in range(len(dataset)):
        info = dataset.image_info(i)
        rles, labels, iscrowd, (h, w) = load_rles(dataset, i)
        images.append({"id": int(info["id"]), "file_name": str(info["file_name"]),
                       "height": int(h), "width": int(w)})
        areas, boxes = rle_areas(rles).tolist(), rle_boxes(rles).tolist()
        for rle, area, box, label, crowd in zip(rles, areas, boxes, labels, iscrowd, strict=True):
            counts = rle["counts"]
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": int(info["id"]),
                "category_id": int(dataset.category_ids[int(label)]),
                "segmentation": {"size": [int(h), int(w)],
                                 "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts},
                "area": float(area),
                "bbox": [float(v) for v in box],
                "iscrowd": int(crowd),
            })
    categories = [
        {"id": int(cid), "name": str(name), "supercategory": ""}
        for cid, name in zip(dataset.category_ids[1:], dataset.class_names[1:], strict=True)
    ]
    info = {"description": description or f"instaseg export of {getattr(dataset, 'name', 'dataset')}"}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}
