"""The data linter behind ``instaseg data check``.

For ``coco:`` and ``coco_panoptic:`` specs the raw JSON (and the panoptic PNGs) is checked (problems
the loader would hide or stop at are all found and counted); for every other format the dataset is
iterated and what fails to load, or loads inconsistent, is reported (panoptic datasets: their
``extra["panoptic"]`` too). Unusable input (missing or malformed JSON, bad spec) raises
:class:`~instaseg.errors.InstasegError` instead: the CLI prints one line and exits 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from instaseg.errors import DataError
from instaseg.structures.masks import counts_to_rle, polygons_to_rle, rle_areas

# kind -> one-line description (the report's vocabulary, in report order)
PROBLEMS: dict[str, str] = {
    "missing_image": "image file not found",
    "unreadable_image": "image unreadable (corrupt, truncated, not an image, too large)",
    "size_mismatch": "image size differs from the annotation file",
    "malformed_image_entry": "image entry without id/file_name/height/width",
    "duplicate_image_id": "duplicate image ids",
    "malformed_annotation": "annotation with missing or malformed keys",
    "duplicate_annotation_id": "duplicate annotation ids",
    "missing_image_ref": "annotation points at an image id not in 'images'",
    "unknown_category": "annotation category_id not in 'categories'",
    "empty_segmentation": "empty segmentation",
    "degenerate_polygon": "polygon with fewer than 3 points",
    "segmentation_size_mismatch": "RLE size differs from the image size",
    "zero_area_mask": "mask with zero area",
    "box_outside_image": "bbox outside the image",
    "degenerate_box": "bbox with zero or negative width/height",
    "unloadable_sample": "sample fails to load",
    "inconsistent_sample": "sample masks/labels inconsistent",
    # panoptic sets (COCO panoptic JSON + PNGs, or any dataset's extra["panoptic"])
    "missing_png": "panoptic PNG not found",
    "unreadable_png": "panoptic PNG unreadable or not RGB",
    "png_size_mismatch": "panoptic PNG size differs from the image",
    "unlisted_segment_id": "ids in the PNG that segments_info does not list",
    "absent_segment": "segments listed in segments_info but absent from the PNG",
    "duplicate_segment_id": "segment id listed twice in one image",
    "segment_area_mismatch": "segments_info area differs from the PNG pixel count",
}

BOX_TOLERANCE = 1.0  # pixels: COCO boxes are floats from polygon vertices; allow rounding slack


@dataclass
class ProblemReport:
    """Counts and the first examples of every problem kind found in one dataset. ``kinds`` (kind ->
    one-line description, in report order) is the vocabulary; subclasses say what they read
    (:meth:`sizes`)."""

    source: str
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5
    kinds: ClassVar[dict[str, str]] = {}

    def add(self, kind: str, example: str, n: int = 1) -> None:
        if kind not in self.kinds:
            raise KeyError(kind)
        self.counts[kind] = self.counts.get(kind, 0) + n
        ex = self.examples.setdefault(kind, [])
        if len(ex) < self.max_examples:
            ex.append(example)

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def total_problems(self) -> int:
        return sum(self.counts.values())

    def sizes(self) -> dict[str, int]:
        """What was read, e.g. ``{"images": 10, "annotations": 31}`` (report order)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            **self.sizes(),
            "ok": self.ok,
            "problems": {
                k: {"count": self.counts[k], "description": self.kinds[k], "examples": self.examples[k]}
                for k in self.kinds
                if k in self.counts
            },
        }

    def format(self) -> str:
        sizes = ", ".join(f"{v} {k}" for k, v in self.sizes().items())
        head = f"{self.source}: {sizes}" if sizes else self.source
        if self.ok:
            return f"{head}: no problems found"
        lines = [f"{head}: {self.total_problems} problems in {len(self.counts)} kinds"]
        for kind in self.kinds:
            if kind in self.counts:
                lines.append(f"  {kind}: {self.counts[kind]}  ({self.kinds[kind]})")
                lines.extend(f"    - {ex}" for ex in self.examples[kind])
        return "\n".join(lines)


@dataclass
class CheckReport(ProblemReport):
    """The image linter's report: :data:`PROBLEMS` over ``images`` images and ``annotations``."""

    images: int = 0
    annotations: int = 0
    kinds: ClassVar[dict[str, str]] = PROBLEMS

    def sizes(self) -> dict[str, int]:
        return {"images": self.images, "annotations": self.annotations}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_images(images: list, image_dir: Path, report: CheckReport) -> dict[Any, tuple[int, int] | None]:
    """Check every image entry and file; returns image id -> (h, w) from the JSON (None if absent)."""
    from tqdm import tqdm

    from instaseg.data.io import read_image

    sizes: dict[Any, tuple[int, int] | None] = {}
    # disable=None: a progress bar on a terminal only (never in logs or tests)
    for k, img in enumerate(tqdm(images, desc="checking images", unit="img", disable=None, leave=False)):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            report.add("malformed_image_entry", f"images[{k}]: needs 'id' and 'file_name'")
            continue
        iid, name = img["id"], str(img["file_name"])
        if iid in sizes:
            report.add("duplicate_image_id", f"images[{k}]: id {iid} ({name})")
            continue
        h, w = img.get("height"), img.get("width")
        size = (h, w) if _is_int(h) and _is_int(w) and h > 0 and w > 0 else None
        if size is None:
            report.add("malformed_image_entry", f"image id {iid} ({name}): height/width missing or invalid")
        sizes[iid] = size
        path = image_dir / name
        if not path.is_file():
            report.add("missing_image", f"image id {iid}: {path}")
            continue
        try:
            arr = read_image(path)
        except DataError as exc:
            report.add("unreadable_image", f"image id {iid}: {exc}")
            continue
        if size is None:
            sizes[iid] = arr.shape[:2]
        elif arr.shape[:2] != size:
            report.add(
                "size_mismatch",
                f"image id {iid} ({name}): file is {arr.shape[1]}x{arr.shape[0]}, JSON says {w}x{h}",
            )
    return sizes


def _segmentation_area(seg: Any, size: tuple[int, int], where: str, report: CheckReport) -> float | None:
    """Mask area of a segmentation, after reporting empty/degenerate/size problems (None: skip)."""
    h, w = size
    if isinstance(seg, list):
        if not seg:
            report.add("empty_segmentation", f"{where}: segmentation is []")
            return None
        polys = [seg] if all(_is_num(v) for v in seg) else seg
        good = []
        for j, poly in enumerate(polys):
            if not isinstance(poly, list) or not all(_is_num(v) for v in poly):
                report.add("malformed_annotation", f"{where}: polygon {j} is not a list of numbers")
                return None
            if len(poly) < 6 or len(poly) % 2:
                report.add("degenerate_polygon", f"{where}: polygon {j} has {len(poly)} coordinates")
            else:
                good.append([float(v) for v in poly])
        if not good:
            return None
        return float(rle_areas([polygons_to_rle(good, h, w)])[0])
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [h, w]:
            report.add("segmentation_size_mismatch", f"{where}: RLE size {seg['size']}, image is {[h, w]}")
            return None
        try:
            rle = seg
            if isinstance(seg["counts"], list):
                rle = counts_to_rle(seg["counts"], h, w)
            elif isinstance(seg["counts"], str):
                rle = {"size": [h, w], "counts": seg["counts"].encode("ascii")}
            return float(rle_areas([rle])[0])
        except Exception as exc:  # COCO's RLE code raises assorted errors on corrupt counts
            report.add("malformed_annotation", f"{where}: RLE cannot be decoded ({exc})")
            return None
    report.add("malformed_annotation", f"{where}: segmentation is neither polygons nor RLE")
    return None


def check_coco_json(ann_file: str | Path, image_dir: str | Path | None = None, *, max_examples: int = 5):
    """Lint a COCO instances JSON and its images; returns a :class:`CheckReport`."""
    from instaseg.data.coco import guess_image_dir
    from instaseg.data.io import read_json

    path = Path(ann_file)
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, f"not a COCO JSON: top level is {type(data).__name__}, expected an object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(path, f"not a COCO instances JSON: no {key!r} key")
        if not isinstance(data[key], list):
            raise DataError(path, f"{key!r} must be a list, got {type(data[key]).__name__}")
    images, anns = data["images"], data["annotations"]
    names = [str(im.get("file_name", "")) for im in images if isinstance(im, dict)]
    root = Path(image_dir) if image_dir is not None else guess_image_dir(path, names)
    if not root.is_dir():
        raise DataError(root, "image folder not found")
    report = CheckReport(str(path), images=len(images), annotations=len(anns), max_examples=max_examples)
    sizes = _check_images(images, root, report)
    cats = {c.get("id") for c in data["categories"] if isinstance(c, dict)}

    seen_ids: set[Any] = set()
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict):
            report.add("malformed_annotation", f"annotations[{k}]: not an object")
            continue
        aid = ann.get("id")
        where = f"annotation id {aid}" if aid is not None else f"annotations[{k}]"
        missing = [key for key in ("id", "image_id", "category_id", "segmentation") if key not in ann]
        if missing:
            report.add("malformed_annotation", f"{where}: missing {missing}")
        if aid is not None:
            if aid in seen_ids:
                report.add("duplicate_annotation_id", f"{where} (annotations[{k}])")
            seen_ids.add(aid)
        if "category_id" in ann and ann["category_id"] not in cats:
            report.add("unknown_category", f"{where}: category_id {ann['category_id']}")
        iid = ann.get("image_id")
        if iid not in sizes:
            if "image_id" in ann:
                report.add("missing_image_ref", f"{where}: image_id {iid}")
            continue
        size = sizes[iid]
        if size is None:
            continue
        h, w = size
        if "segmentation" in ann:
            area = _segmentation_area(ann["segmentation"], size, where, report)
            if area is not None and area <= 0:
                report.add("zero_area_mask", f"{where} (image id {iid})")
        box = ann.get("bbox")
        if box is None:
            continue
        if not (isinstance(box, list) and len(box) == 4 and all(_is_num(v) for v in box)):
            report.add("malformed_annotation", f"{where}: bbox must be [x, y, w, h], got {box!r}")
            continue
        x, y, bw, bh = box
        if bw <= 0 or bh <= 0:
            report.add("degenerate_box", f"{where}: bbox {box}")
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + bw > w + t or y + bh > h + t:
            report.add("box_outside_image", f"{where}: bbox {box} in a {w}x{h} image")
    return report


def _check_pan_segments(
    ann: dict[str, Any], where: str, cats: dict[Any, Any], report: CheckReport
) -> dict[int, Any]:
    """Listed segments of one annotation (id -> JSON area), after reporting malformed, duplicate
    and unknown-category entries."""
    listed: dict[int, Any] = {}
    infos = ann.get("segments_info")
    if not isinstance(infos, list):
        report.add("malformed_annotation", f"{where}: 'segments_info' must be a list")
        return listed
    for s in infos:
        if not isinstance(s, dict) or not isinstance(s.get("id"), int) or "category_id" not in s:
            report.add("malformed_annotation", f"{where}: segments_info entry {s!r:.60} lacks id/category_id")
            continue
        sid = s["id"]
        if sid in listed:
            report.add("duplicate_segment_id", f"{where}: segment id {sid} listed twice")
            continue
        if s["category_id"] not in cats:
            report.add("unknown_category", f"{where}: segment {sid} has category_id {s['category_id']}")
        listed[sid] = s.get("area")
    report.annotations += len(listed)
    return listed


def check_coco_panoptic(
    json_path: str | Path,
    png_dir: str | Path | None = None,
    image_dir: str | Path | None = None,
    *,
    max_examples: int = 5,
) -> CheckReport:
    """Lint a COCO panoptic JSON, its PNG folder (default: the JSON path without ``.json``) and, when
    ``image_dir`` is given or found beside the JSON, its images. Unusable input (JSON missing or
    malformed, no ``annotations``/``categories`` list, folder missing) raises DataError instead."""
    from instaseg.data.coco import guess_image_dir
    from instaseg.data.coco_panoptic import read_panoptic_png
    from instaseg.data.io import read_json

    path = Path(json_path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, "not a COCO panoptic JSON: top level is not an object")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(path, f"not a COCO panoptic JSON: no {key!r} list")
    pngs = Path(png_dir) if png_dir else path.with_suffix("")
    if not pngs.is_dir():
        raise DataError(pngs, "panoptic PNG folder not found")
    images = data.get("images") if isinstance(data.get("images"), list) else []
    report = CheckReport(str(path), images=len(data["annotations"]), max_examples=max_examples)
    names = [str(im.get("file_name", "")) for im in images if isinstance(im, dict)]
    if image_dir is not None and not Path(image_dir).is_dir():
        raise DataError(image_dir, "image folder not found")
    root = Path(image_dir) if image_dir else guess_image_dir(path, names)
    if image_dir is not None or any((root / n).is_file() for n in names[:5]):
        sizes = _check_images(images, root, report)
    else:  # no image folder: the PNGs and the JSON alone (all that evaluation needs)
        sizes = {im.get("id"): (im.get("height"), im.get("width")) for im in images if isinstance(im, dict)}
    cats = {c.get("id"): c for c in data["categories"] if isinstance(c, dict)}
    seen: set[Any] = set()
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "file_name" not in ann:
            report.add("malformed_annotation", f"annotations[{k}]: needs 'image_id' and 'file_name'")
            continue
        iid = ann["image_id"]
        where = f"image id {iid} ({ann['file_name']})"
        if iid in seen:
            report.add("duplicate_image_id", f"annotations[{k}]: image id {iid} annotated twice")
        seen.add(iid)
        if images and iid not in sizes:
            report.add("missing_image_ref", f"annotations[{k}]: image_id {iid} not in 'images'")
        listed = _check_pan_segments(ann, where, cats, report)
        try:
            ids = read_panoptic_png(pngs / str(ann["file_name"]))
        except DataError as exc:
            kind = "missing_png" if exc.problem == "file not found" else "unreadable_png"
            report.add(kind, str(exc))
            continue
        size = sizes.get(iid)
        if size and all(isinstance(v, int) for v in size) and ids.shape != tuple(size):
            report.add("png_size_mismatch", f"{where}: PNG is {ids.shape[1]}x{ids.shape[0]}, "
                                            f"the image {size[1]}x{size[0]}")
            continue  # its segments cannot be compared with the JSON
        values, counts = np.unique(ids, return_counts=True)
        area = {int(v): int(c) for v, c in zip(values, counts, strict=True) if v != 0}
        unlisted = sorted(set(area) - set(listed))
        if unlisted:
            report.add("unlisted_segment_id", f"{where}: ids {unlisted[:5]} in the PNG not in segments_info")
        absent = sorted(set(listed) - set(area))
        if absent:
            report.add("absent_segment", f"{where}: segments {absent[:5]} listed but not in the PNG")
        wrong = [s for s, a in listed.items() if s in area and isinstance(a, int | float) and a != area[s]]
        if wrong:
            s = wrong[0]
            report.add("segment_area_mismatch", f"{where}: {len(wrong)} segments, e.g. {s}: JSON area "
                                                f"{listed[s]}, PNG {area[s]} px")
    return report


def check_panoptic_record(rec: Any, where: str, report: CheckReport) -> None:
    """Findings of a loaded record's ``extra["panoptic"]`` (any panoptic dataset)."""
    pan = rec.extra.get("panoptic")
    if pan is None:
        return
    if pan.image_size != rec.image.shape[:2]:
        report.add("png_size_mismatch", f"{where}: map {pan.image_size}, image {rec.image.shape[:2]}")
    for problem in pan.validate():
        kind = "unlisted_segment_id" if "does not list" in problem else "duplicate_segment_id"
        if "absent" in problem:
            kind = "absent_segment"
        report.add(kind, f"{where}: {problem}")


def check_dataset(dataset: Any, source: str, *, max_examples: int = 5) -> CheckReport:
    """Iterate any :class:`InstanceDataset`; report samples that fail to load or are inconsistent."""
    report = CheckReport(source, images=len(dataset), max_examples=max_examples)
    from tqdm import tqdm

    num_classes = len(dataset.class_names)
    for i in tqdm(range(len(dataset)), desc="checking samples", unit="img", disable=None, leave=False):
        try:
            rec = dataset.load_record(i)
        except DataError as exc:
            report.add("unloadable_sample", f"#{i}: {exc}")
            continue
        n = int(np.asarray(rec.labels).shape[0])
        report.annotations += n
        where = f"#{i} ({rec.file_name or rec.image_id})"
        h, w = rec.image.shape[:2]
        masks = np.asarray(rec.masks)
        if masks.shape != (n, h, w) or np.asarray(rec.iscrowd).shape[0] != n:
            report.add("inconsistent_sample", f"{where}: masks {masks.shape}, {n} labels, image {h}x{w}")
            continue
        if n and ((rec.labels < 1) | (rec.labels >= num_classes)).any():
            report.add("unknown_category", f"{where}: labels {sorted(set(rec.labels.tolist()))}")
        for j in np.flatnonzero(~masks.reshape(n, -1).any(axis=1)) if n else []:
            report.add("zero_area_mask", f"{where}: instance {int(j)}")
        check_panoptic_record(rec, where, report)
    return report


def check_spec(spec: str, *, split: str | None = None, max_examples: int = 5) -> CheckReport:
    """Lint the dataset named by ``spec`` (raw JSON for ``coco:``; loading otherwise)."""
    from instaseg.data.build import build_dataset, parse_spec

    fmt, args = parse_spec(spec)
    if fmt == "coco" and split is None:
        ann, image_dir = args, None
        cut = args.lower().find(".json:")
        if cut >= 0:
            ann, image_dir = args[: cut + 5], args[cut + 6 :] or None
        return check_coco_json(ann, image_dir, max_examples=max_examples)
    if fmt == "coco_panoptic" and split is None:
        from instaseg.data.build import coco_args

        ann, rest = coco_args(args)
        png_dir, _, image_dir = (rest or "").partition(":")
        return check_coco_panoptic(ann, png_dir or None, image_dir or None, max_examples=max_examples)
    return check_dataset(build_dataset(spec, split=split), spec, max_examples=max_examples)
