"""COCO panoptic format: reading, writing and the ``coco_panoptic:PANOPTIC.json:PNG_DIR[:IMAGE_DIR]`` dataset.

The format (panopticapi's): one JSON with ``images``, ``annotations`` (one per image: ``image_id``,
``file_name`` of its PNG, ``segments_info`` = ``[{id, category_id, iscrowd, area, bbox}]``) and
``categories`` (``{id, name, isthing}``), plus one RGB PNG per image whose pixels hold the segment id
``R + 256 G + 256^2 B`` (0 = VOID).

- :func:`read_coco_panoptic` / :func:`iter_coco_panoptic`: ``(image_info, PanopticResult)`` per image,
  every problem (missing PNG, ids in the PNG that ``segments_info`` does not list, a PNG of the wrong
  size, an unknown ``category_id``, duplicate ids) a one-line :class:`~instaseg.errors.DataError` naming
  the file. ``area`` of each segment is the JSON's (panopticapi's ``pq_compute`` uses the GT JSON area).
- :func:`write_coco_panoptic`: the JSON + PNGs, atomically, refusing to replace existing files unless
  ``overwrite``; the output loads in ``pq_compute`` as a prediction or as ground truth.
- :class:`CocoPanopticDataset`: instances from thing segments, ``extra["sem_seg"]`` and
  ``extra["panoptic"]``; see :class:`PanopticDatasetMixin` for the attributes every panoptic dataset has.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from instaseg.data._skip import SkipCounter, check_on_error
from instaseg.data.base import InstanceDataset, Record
from instaseg.data.coco import guess_image_dir
from instaseg.data.io import _decode, _open, image_size, read_image, read_json
from instaseg.errors import ConfigError, DataError
from instaseg.fileio import atomic_open, atomic_path
from instaseg.structures.panoptic import (
    PanopticResult,
    PanopticSegment,
    id_to_rgb,
    rgb_to_id,
    segments_info,
    stuff_index_map,
)

PANOPTIC_ATTRS = ("panoptic_categories", "thing_category_ids", "stuff_category_ids")
"""Attributes of every panoptic dataset (kept by :class:`~instaseg.data._split.SplitDataset`)."""


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """int32 (H, W) segment ids of a COCO panoptic PNG (RGB or RGBA; alpha ignored)."""
    with _open(path, None) as im:
        _decode(im, path)
        if im.mode not in ("RGB", "RGBA"):
            raise DataError(path, f"a panoptic PNG must be RGB (id = R + 256 G + 256^2 B), not {im.mode}")
        rgb = np.asarray(im)
    return rgb_to_id(rgb).astype(np.int32, copy=False)


def check_categories(categories: Any, path: str | Path) -> list[dict[str, Any]]:
    """Validated COCO panoptic categories: each a dict with int ``id``, ``name`` and ``isthing`` 0/1."""
    if not isinstance(categories, list) or not categories:
        raise DataError(path, "'categories' must be a non-empty list")
    out, seen = [], set()
    for k, cat in enumerate(categories):
        if not isinstance(cat, dict) or "id" not in cat or "isthing" not in cat:
            raise DataError(path, f"categories[{k}] must be an object with 'id' and 'isthing'")
        cid = cat["id"]
        if not isinstance(cid, int) or cid in seen:
            raise DataError(path, f"categories[{k}]: id {cid!r} is not a unique integer")
        seen.add(cid)
        out.append({**cat, "name": str(cat.get("name", cid)), "isthing": int(bool(cat["isthing"]))})
    return out


def _check_segments(ann: dict[str, Any], k: int, cats: dict[int, dict], path: Path) -> list[PanopticSegment]:
    where = f"annotations[{k}] (image_id {ann.get('image_id')})"
    infos = ann.get("segments_info")
    if not isinstance(infos, list):
        raise DataError(path, f"{where}: 'segments_info' must be a list")
    segs: list[PanopticSegment] = []
    seen: set[int] = set()
    for s in infos:
        if not isinstance(s, dict) or "id" not in s or "category_id" not in s:
            raise DataError(path, f"{where}: every segments_info entry needs 'id' and 'category_id'")
        sid, cid = s["id"], s["category_id"]
        if not isinstance(sid, int) or sid <= 0 or sid >= 256**3:
            raise DataError(path, f"{where}: segment id {sid!r} must be an integer in 1..256^3-1")
        if sid in seen:
            raise DataError(path, f"{where}: segment id {sid} listed twice")
        seen.add(sid)
        if cid not in cats:
            raise DataError(path, f"{where}: segment {sid} has unknown category_id {cid}")
        area = s.get("area")
        segs.append(PanopticSegment(
            sid, int(cid), bool(cats[cid]["isthing"]), iscrowd=bool(s.get("iscrowd", 0)),
            score=float(s["score"]) if "score" in s else None,
            area=int(area) if isinstance(area, int | float) else None,
        ))
    return segs


class CocoPanopticFile:
    """A parsed, validated COCO panoptic JSON; PNGs are read on demand by :meth:`load`.

    ``categories`` (validated), ``entries``: per annotation ``(image_info, png_name, segments)`` where
    ``image_info`` is ``{"id", "file_name", "height", "width", "panoptic_file_name"}`` (from ``images``
    when it lists the image; ``height``/``width`` may be ``None`` then). ``categories`` (for prediction
    files, which need none of their own) replaces the JSON's categories in the checks.
    """

    def __init__(
        self,
        json_path: str | Path,
        png_dir: str | Path | None = None,
        *,
        categories: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        self.json_path = Path(json_path)
        self.png_dir = Path(png_dir) if png_dir else self.json_path.with_suffix("")
        data = read_json(self.json_path)
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise DataError(self.json_path, "not a COCO panoptic JSON: no 'annotations' list")
        if categories is None:
            self.categories = check_categories(data.get("categories"), self.json_path)
        else:  # a prediction file is checked against the ground truth's categories, as pq_compute does
            self.categories = [dict(c) for c in categories]
        self.cats = {c["id"]: c for c in self.categories}
        images = {im.get("id"): im for im in data.get("images") or [] if isinstance(im, dict)}
        self.entries: list[tuple[dict[str, Any], str, list[PanopticSegment]]] = []
        seen: set[Any] = set()
        for k, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or "image_id" not in ann or "file_name" not in ann:
                raise DataError(self.json_path, f"annotations[{k}] needs 'image_id' and 'file_name'")
            image_id = ann["image_id"]
            if image_id in seen:
                raise DataError(self.json_path, f"annotations[{k}]: image_id {image_id} annotated twice")
            seen.add(image_id)
            segs = _check_segments(ann, k, self.cats, self.json_path)
            im = images.get(image_id, {})
            info = {
                "id": image_id,
                "file_name": str(im.get("file_name", Path(ann["file_name"]).with_suffix(".jpg").name)),
                "height": im.get("height"),
                "width": im.get("width"),
                "panoptic_file_name": str(ann["file_name"]),
            }
            self.entries.append((info, str(ann["file_name"]), segs))
        if not self.png_dir.is_dir():
            raise DataError(self.png_dir, "panoptic PNG folder not found")

    def __len__(self) -> int:
        return len(self.entries)

    def png_path(self, index: int) -> Path:
        return self.png_dir / self.entries[index][1]

    def load(self, index: int, *, check: bool = True) -> PanopticResult:
        """The PanopticResult of entry ``index``; DataError naming the PNG or the JSON on any mismatch
        (``check=False`` leaves out the unlisted-ids check, for callers that count ids anyway)."""
        info, _, segs = self.entries[index]
        png = self.png_path(index)
        ids = read_panoptic_png(png)
        h, w = info["height"], info["width"]
        if isinstance(h, int) and isinstance(w, int) and ids.shape != (h, w):
            raise DataError(png, f"PNG is {ids.shape[1]}x{ids.shape[0]} but {self.json_path.name} says image "
                                 f"{info['id']} is {w}x{h}")
        listed = {s.id for s in segs}
        present = np.unique(ids) if check else ()
        unlisted = [int(v) for v in present if v != 0 and int(v) not in listed]
        if unlisted:
            raise DataError(png, f"ids {unlisted[:5]} in the PNG are not in segments_info of image "
                                 f"{info['id']} in {self.json_path.name}")
        return PanopticResult(ids, [PanopticSegment(**vars(s)) for s in segs])


def iter_coco_panoptic(
    json_path: str | Path, png_dir: str | Path | None = None
) -> Iterator[tuple[dict[str, Any], PanopticResult]]:
    """``(image_info, PanopticResult)`` per annotation, one PNG at a time (see :class:`CocoPanopticFile`)."""
    f = CocoPanopticFile(json_path, png_dir)
    for i in range(len(f)):
        yield f.entries[i][0], f.load(i)


def read_coco_panoptic(
    json_path: str | Path, png_dir: str | Path | None = None
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], PanopticResult]]]:
    """``(categories, [(image_info, PanopticResult), ...])`` of a COCO panoptic JSON and its PNG folder
    (default: the JSON path without ``.json``, as panopticapi). All PNGs are held in memory: iterate with
    :func:`iter_coco_panoptic` for big sets."""
    f = CocoPanopticFile(json_path, png_dir)
    return f.categories, [(f.entries[i][0], f.load(i)) for i in range(len(f))]


def _png_name(info: dict[str, Any]) -> str:
    if info.get("panoptic_file_name"):
        return Path(str(info["panoptic_file_name"])).name
    if info.get("file_name"):
        return Path(str(info["file_name"])).stem + ".png"
    return f"{info['id']}.png"


def write_coco_panoptic(
    results: Sequence[tuple[dict[str, Any], PanopticResult]],
    categories: Sequence[dict[str, Any]],
    out_json: str | Path,
    png_dir: str | Path | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``results`` as a COCO panoptic JSON + one PNG per image; returns the JSON path.

    ``image_info`` needs ``id``; the PNG is named by ``panoptic_file_name``, else the stem of
    ``file_name`` + ``.png``, else ``<id>.png``. ``png_dir`` defaults to ``out_json`` without ``.json``
    (where ``pq_compute`` looks). Each file is written atomically; an existing JSON or PNG raises
    ConfigError unless ``overwrite`` (checked before anything is written). ``segments_info`` entries
    get ``area`` and ``bbox`` from the id map, plus ``score`` when the segment has one; listed segments
    without pixels are left out (``pq_compute`` refuses them), and an id in a map that no segment lists
    is a ValueError (``pq_compute`` would refuse the file).
    """
    out_json = Path(out_json)
    png_dir = Path(png_dir) if png_dir else out_json.with_suffix("")
    cats = check_categories([dict(c) for c in categories], out_json)
    known = {c["id"] for c in cats}
    names = [_png_name(info) for info, _ in results]
    if len(set(names)) != len(names):
        raise ConfigError(f"{png_dir}: two images would share a PNG name; give distinct file names")
    if not overwrite:
        for p in [out_json, *(png_dir / n for n in names)]:
            if p.exists():
                raise ConfigError(f"{p}: already exists; choose another output or pass overwrite")
    png_dir.mkdir(parents=True, exist_ok=True)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for (info, res), name in zip(results, names, strict=True):
        unknown = sorted({s.category_id for s in res.segments} - known)
        if unknown:
            raise ConfigError(f"{out_json}: image {info['id']} has segments of unknown categories {unknown}")
        present = set(np.unique(res.id_map).tolist()) - {0}
        unlisted = sorted(present - {s.id for s in res.segments})
        if unlisted:
            raise ValueError(f"image {info['id']}: ids {unlisted[:5]} in the map are not in its segments")
        with atomic_path(png_dir / name) as tmp:
            Image.fromarray(id_to_rgb(res.id_map)).save(tmp, format="PNG")
        h, w = res.image_size
        image_name = str(info.get("file_name") or name)
        images.append({"id": info["id"], "file_name": image_name, "height": h, "width": w})
        infos = [s for s in segments_info(res) if s["area"] > 0]
        annotations.append({"image_id": info["id"], "file_name": name, "segments_info": infos})
    with atomic_open(out_json, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": cats}, f)
    return out_json


class PanopticDatasetMixin:
    """What every panoptic dataset has besides :class:`InstanceDataset`'s ``class_names``/``category_ids``
    (which list the *thing* classes, labels 1..T, for the instance branch):

    ``panoptic_categories`` (COCO category dicts with ``isthing``), ``thing_category_ids``,
    ``stuff_category_ids`` (``sem_seg`` value ``k+1`` is ``stuff_category_ids[k]``), ``stuff_names``,
    and ``load_panoptic(index) -> PanopticResult`` (GT at the image's own size, no image decode).
    """

    panoptic_categories: list[dict[str, Any]]
    thing_category_ids: list[int]
    stuff_category_ids: list[int]
    stuff_names: list[str]

    def _set_categories(self, categories: Sequence[dict[str, Any]]) -> None:
        self.panoptic_categories = [dict(c) for c in categories]
        things = [c for c in categories if c["isthing"]]
        stuff = [c for c in categories if not c["isthing"]]
        self.thing_category_ids = [int(c["id"]) for c in things]
        self.stuff_category_ids = [int(c["id"]) for c in stuff]
        self.stuff_names = [str(c["name"]) for c in stuff]
        self.class_names = ["background", *(str(c["name"]) for c in things)]
        self.category_ids = [0, *self.thing_category_ids]
        self._label_of = {cid: k + 1 for k, cid in enumerate(self.thing_category_ids)}
        self._stuff_index = stuff_index_map(self.stuff_category_ids)

    def panoptic_to_annotations(self, pan: PanopticResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(masks (N,H,W) bool, labels (N,), iscrowd (N,))`` of the thing segments of ``pan``."""
        things = [s for s in pan.segments if s.isthing]
        if not things:
            return np.zeros((0, *pan.image_size), bool), np.zeros(0, np.int64), np.zeros(0, np.int64)
        masks = pan.id_map[None] == np.array([s.id for s in things], dtype=pan.id_map.dtype)[:, None, None]
        labels = np.array([self._label_of[s.category_id] for s in things], dtype=np.int64)
        return masks, labels, np.array([int(s.iscrowd) for s in things], dtype=np.int64)

    def semantic_map(self, pan: PanopticResult) -> np.ndarray:
        """int64 (H, W) ``sem_seg`` target of ``pan`` (0 things, 1..S stuff, 255 VOID)."""
        return pan.semantic_map(self._stuff_index)


class CocoPanopticDataset(PanopticDatasetMixin, InstanceDataset):
    """A COCO panoptic JSON, its PNG folder and its image folder.

    Args:
        json_path: the panoptic JSON.
        png_dir: folder of the segment PNGs (default: the JSON path without ``.json``).
        image_dir: folder of the images (guessed like :func:`~instaseg.data.coco.guess_image_dir`).
        on_error: ``"raise"`` or ``"skip"``; transform: optional ``Record -> (image, target)``.
    """

    name = "coco_panoptic"

    def __init__(
        self,
        json_path: str | Path,
        png_dir: str | Path | None = None,
        image_dir: str | Path | None = None,
        *,
        on_error: str = "raise",
        transform: Any = None,
    ) -> None:
        super().__init__(transform)
        self.file = CocoPanopticFile(json_path, png_dir)
        self.on_error = check_on_error(on_error)
        self.skipped = SkipCounter()
        self._set_categories(self.file.categories)
        names = [e[0]["file_name"] for e in self.file.entries]
        self.image_dir = Path(image_dir) if image_dir else guess_image_dir(self.file.json_path, names)
        if not self.image_dir.is_dir():
            raise DataError(self.image_dir, "image folder not found")

    def __len__(self) -> int:
        return len(self.file)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.file.entries[index][0]["file_name"]

    def image_info(self, index: int) -> dict[str, Any]:
        info = self.file.entries[index][0]
        h, w = info["height"], info["width"]
        if not (isinstance(h, int) and isinstance(w, int)):
            h, w = image_size(self.file.png_path(index))
        return {"id": info["id"], "file_name": info["file_name"], "height": h, "width": w}

    def load_panoptic(self, index: int) -> PanopticResult:
        return self.file.load(index)

    def load_annotations(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Thing masks, labels and iscrowd from the PNG alone."""
        return self.panoptic_to_annotations(self.load_panoptic(index))

    def _load(self, index: int) -> Record:
        path = self.image_path(index)
        image = read_image(path)
        pan = self.load_panoptic(index)
        if image.shape[:2] != pan.image_size:
            raise DataError(self.file.png_path(index), f"PNG is {pan.image_size[1]}x{pan.image_size[0]} but "
                            f"the image {path.name} is {image.shape[1]}x{image.shape[0]}")
        masks, labels, iscrowd = self.panoptic_to_annotations(pan)
        image_id = self.file.entries[index][0]["id"]
        extra = {"sem_seg": self.semantic_map(pan), "panoptic": pan}
        return Record(image, masks, labels, iscrowd, int(image_id) if isinstance(image_id, int) else index,
                      str(path), extra=extra)

    def load_record(self, index: int) -> Record:
        return self.skipped.load(index, len(self), self._load, self.on_error)
