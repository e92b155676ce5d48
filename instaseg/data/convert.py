"""Convert annotations to COCO instances JSON: labelme folders and any dataset spec (VIA: :mod:`.via`).

Every converter returns a :class:`Conversion`: the COCO dict, images that must be written beside it
(labelme ``imageData`` without an image file, synthetic datasets) and counted warnings. Image
``file_name`` entries are relative to the folder of the output JSON, so ``coco:OUT.json`` finds them
without an IMAGE_DIR. :func:`write_conversion` writes atomically and never overwrites unless asked.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.errors import DataError
from instaseg.fileio import atomic_open
from instaseg.structures.masks import encode_masks, merge_rles, polygons_to_rles, rle_areas, rle_boxes

LABELME_SPECIAL = ("__ignore__", "_background_")
CIRCLE_POINTS = 64


@dataclass
class Conversion:
    """A COCO dict plus what else the conversion produced."""

    coco: dict[str, Any]
    images_to_write: dict[Path, bytes] = field(default_factory=dict)
    warnings: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def warn(self, kind: str, example: str) -> None:
        self.warnings[kind] += 1
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < 3:
            self.examples[kind].append(example)

    def summary(self) -> str:
        c = self.coco
        lines = [
            f"{len(c['images'])} images, {len(c['annotations'])} instances, {len(c['categories'])} classes"
        ]
        for kind, n in sorted(self.warnings.items()):
            lines.append(f"warning: {n} {kind} (e.g. {'; '.join(self.examples.get(kind, []))})")
        return "\n".join(lines)


# ---------------------------------------------------------------- geometry helpers


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float, theta: float = 0.0) -> list[float]:
    """Flat polygon approximating an ellipse (``theta`` radians, counter-clockwise)."""
    t = np.linspace(0.0, 2.0 * math.pi, CIRCLE_POINTS, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(theta), math.sin(theta)
    pts = np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)
    return [round(float(v), 2) for v in pts.reshape(-1)]


def rect_polygon(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    x1, x2 = sorted((float(x1), float(x2)))
    y1, y2 = sorted((float(y1), float(y2)))
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def _instance(parts: list[Any], height: int, width: int) -> tuple[Any, float, list[float]] | None:
    """``(segmentation, area, bbox)`` for one instance made of polygon parts (flat lists) and/or
    full-size bool masks; polygons stay polygons, any mask part makes the result an RLE."""
    polys = [p for p in parts if isinstance(p, list)]
    masks = [p for p in parts if isinstance(p, np.ndarray)]
    rles = polygons_to_rles(polys, height, width)
    rles += [encode_masks(m[None])[0] for m in masks]
    if not rles:
        return None
    rle = merge_rles(rles) if len(rles) > 1 else rles[0]
    area = float(rle_areas([rle])[0])
    bbox = [float(v) for v in rle_boxes([rle])[0]]
    if masks:
        seg: Any = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    else:
        seg = polys
    return seg, area, bbox



def polygon_coco(
    conv: Conversion,
    pending: list[tuple[Any, ...]],
    names: list[str],
    images: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    """The COCO dict of an annotation-tool import: ``pending`` holds ``(image_id, class name, polygon
    parts, h, w, where)`` per instance; empty masks are skipped with a warning on ``conv``."""
    cat_id = {n: k + 1 for k, n in enumerate(names)}
    annotations = []
    for image_id, name, parts, h, w, where in pending:
        inst = _instance(parts, h, w)
        if inst is None or inst[1] <= 0:
            conv.warn("instances with an empty mask skipped", where)
            continue
        seg, area, bbox = inst
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat_id[name],
                "segmentation": seg,
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
            }
        )
    return {
        "info": {"description": description},
        "images": images,
        "annotations": annotations,
        "categories": _categories(names),
    }

def _categories(names: list[str]) -> list[dict[str, Any]]:
    return [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(names)]


def read_labels_file(path: str | Path) -> list[str]:
    """Class names, one a line (labelme's ``labels.txt``); ``__ignore__``/``_background_`` dropped, so
    ids 1..C follow the file order as labelme's own exporter numbers them."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(p, "labels file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(p, f"cannot read labels file: {exc}") from None
    names = [ln.strip() for ln in lines if ln.strip() and ln.strip() not in LABELME_SPECIAL]
    if not names:
        raise DataError(p, "labels file lists no class names")
    if len(set(names)) != len(names):
        dup = sorted(n for n, k in Counter(names).items() if k > 1)
        raise DataError(p, f"labels file repeats class names {dup}")
    return names


def relative_path(path: Path, out_dir: Path) -> str:
    """``path`` relative to ``out_dir`` when it is nearby (moves with the JSON), else absolute."""
    rel = Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()
    return path.resolve().as_posix() if rel.startswith("../../") else rel


def _image_hw_from_bytes(data: bytes, where: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(where, f"imageData is not a readable image: {exc}") from None
    return h, w


# ---------------------------------------------------------------- labelme


def _labelme_shape_parts(shape: dict, where: str, height: int, width: int, conv: Conversion) -> Any:
    """One labelme shape as a flat polygon or a full-size mask; None (with a warning) if unusable."""
    kind = shape.get("shape_type") or "polygon"
    pts = shape.get("points") or []
    try:
        xy = [(float(p[0]), float(p[1])) for p in pts]
    except (TypeError, ValueError, IndexError):
        conv.warn("shapes with malformed points skipped", where)
        return None
    if kind == "polygon":
        if len(xy) < 3:
            conv.warn("polygons with fewer than 3 points skipped", where)
            return None
        return [round(v, 2) for p in xy for v in p]
    if kind == "rectangle" and len(xy) >= 2:
        return rect_polygon(xy[0][0], xy[0][1], xy[1][0], xy[1][1])
    if kind == "circle" and len(xy) >= 2:
        r = math.dist(xy[0], xy[1])
        return ellipse_polygon(xy[0][0], xy[0][1], r, r)
    if kind == "mask" and shape.get("mask") and len(xy) >= 2:
        from PIL import Image

        try:
            small = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"]))).convert("L")) > 0
        except Exception as exc:  # any decode failure of the embedded PNG is a data problem
            conv.warn("mask shapes with unreadable data skipped", f"{where}: {exc}")
            return None
        full = np.zeros((height, width), dtype=bool)
        x0, y0 = max(0, int(round(xy[0][0]))), max(0, int(round(xy[0][1])))
        crop = small[: max(0, height - y0), : max(0, width - x0)]
        full[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return full
    conv.warn(f"'{kind}' shapes skipped (no area)", where)
    return None


def labelme_to_coco(
    source: str | Path,
    *,
    output_dir: str | Path,
    labels: list[str] | None = None,
    ignore_labels: tuple[str, ...] = ("__ignore__",),
) -> Conversion:
    """Convert a labelme folder (or one labelme JSON) to COCO.

    Shapes with the same ``label`` and non-null ``group_id`` are parts of one instance; polygon,
    rectangle, circle and mask shapes are kept, lines and points are skipped with a warning. Images
    come from ``imagePath`` (relative to the JSON) or, when that file is missing, the embedded
    ``imageData`` (then written to ``<output_dir>/images/``). ``labels`` fixes the class list and order
    (ids 1..C; a label outside it is an error); otherwise the sorted label names are used. Labels in
    ``ignore_labels`` are dropped, as labelme's own exporter does.
    """
    src = Path(source)
    out_dir = Path(output_dir)
    if src.is_dir():
        files = sorted(src.glob("*.json"))
        if not files:
            raise DataError(src, "no labelme .json files in this folder")
    elif src.is_file():
        files = [src]
    else:
        raise DataError(src, "no such labelme folder or file")
    from instaseg.data.io import image_size, read_json

    conv = Conversion(coco={})
    images: list[dict[str, Any]] = []
    pending: list[tuple[int, str, list[Any], int, int, str]] = []  # image_id, label, parts, h, w, where
    seen_labels: set[str] = set()
    for path in files:
        data = read_json(path)
        if not isinstance(data, dict) or "shapes" not in data:
            raise DataError(path, "not a labelme file (no 'shapes' key)")
        if not isinstance(data["shapes"], list):
            raise DataError(path, "'shapes' must be a list")
        image_path = data.get("imagePath")
        image_file = (path.parent / image_path) if image_path else None
        if image_file is not None and image_file.is_file():
            h, w = image_size(image_file)
            file_name = relative_path(image_file, out_dir)
        elif data.get("imageData"):
            try:
                raw = base64.b64decode(data["imageData"])
            except (ValueError, TypeError):
                raise DataError(path, "imageData is not valid base64") from None
            h, w = _image_hw_from_bytes(raw, path)
            ext = Path(image_path).suffix if image_path else ".png"
            target = out_dir / "images" / f"{path.stem}{ext or '.png'}"
            conv.images_to_write[target] = raw
            file_name = relative_path(target, out_dir)
        else:
            raise DataError(path, f"image {image_path!r} not found and no imageData embedded")
        jh, jw = data.get("imageHeight"), data.get("imageWidth")
        if isinstance(jh, int) and isinstance(jw, int) and (jh, jw) != (h, w):
            raise DataError(path, f"imageHeight/imageWidth say {jw}x{jh} but the image is {w}x{h}")
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})

        groups: dict[Any, list[Any]] = {}
        order: list[tuple[Any, str]] = []
        for k, shape in enumerate(data["shapes"]):
            where = f"{path.name} shape {k}"
            if not isinstance(shape, dict) or "label" not in shape:
                raise DataError(path, f"shape {k} has no 'label'")
            label = str(shape["label"])
            if label in ignore_labels:
                conv.warn(f"shapes labelled {label!r} ignored", where)
                continue
            part = _labelme_shape_parts(shape, where, h, w, conv)
            if part is None:
                continue
            gid = shape.get("group_id")
            key = (label, gid) if gid is not None else (label, f"#{k}")
            if key not in groups:
                groups[key] = []
                order.append((key, where))
            groups[key].append(part)
        for key, where in order:
            pending.append((image_id, key[0], groups[key], h, w, where))
            seen_labels.add(key[0])

    if labels is not None:
        unknown = sorted(seen_labels - set(labels))
        if unknown:
            raise DataError(src, f"labels {unknown} are not in the labels file")
        names = list(labels)
    else:
        names = sorted(seen_labels)
    conv.coco = polygon_coco(conv, pending, names, images, f"converted from labelme: {src}")
    return conv


# ---------------------------------------------------------------- dataset specs


def _source_file(dataset: Any, index: int) -> Path | None:
    """The image file behind ``dataset[index]`` if it exists on disk (None for synthetic data)."""
    while hasattr(dataset, "base") and hasattr(dataset, "indices"):  # split views
        dataset, index = dataset.base, dataset.indices[index]
    if hasattr(dataset, "image_path"):
        p = Path(dataset.image_path(index))
        return p if p.is_file() else None
    p = Path(dataset.load_record(index).file_name)
    return p if p.is_file() else None


def spec_to_coco(spec: str, *, output_dir: str | Path, split: str | None = None) -> Conversion:
    """Any dataset spec (``coco:``, ``cityscapes:``, ``folder:``, ``shapes``) as COCO, via
    :func:`instaseg.data.coco.dataset_to_coco` (RLE masks, original category ids). Image files are
    referenced where they exist; images without a file (``shapes``) are written as PNGs to
    ``<output_dir>/images/``."""
    import cv2

    from instaseg.data.build import build_dataset
    from instaseg.data.coco import dataset_to_coco

    dataset = build_dataset(spec, split=split)
    out_dir = Path(output_dir)
    conv = Conversion(coco=dataset_to_coco(dataset, description=f"converted from {spec}"))
    for k, img in enumerate(conv.coco["images"]):
        src = _source_file(dataset, k)
        if src is not None:
            img["file_name"] = relative_path(src, out_dir)
            continue
        target = out_dir / "images" / f"{Path(img['file_name']).stem}.png"
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(dataset.load_record(k).image[..., ::-1]))
        if not ok:
            raise DataError(target, "cannot encode image as PNG")
        conv.images_to_write[target] = buf.tobytes()
        img["file_name"] = relative_path(target, out_dir)
    return conv


# ---------------------------------------------------------------- writing


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def write_conversion(conv: Conversion, output: str | Path, *, overwrite: bool = False) -> Path:
    """Write the COCO JSON (and any images it needs) atomically. Refuses (DataError, nothing
    written) when the JSON or one of the images exists, unless ``overwrite``."""
    import json

    out = Path(output)
    if out.suffix.lower() != ".json":
        raise DataError(out, "output must be a .json file")
    if out.is_dir():
        raise DataError(out, "output is a folder, expected a .json file path")
    if not overwrite:
        clash = [p for p in [out, *conv.images_to_write] if p.exists()]
        if clash:
            raise DataError(clash[0], "already exists (pass --overwrite to replace it)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for p, data in conv.images_to_write.items():
            p.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(p, data)
        _atomic_write(out, json.dumps(conv.coco).encode("utf-8"))
    except OSError as exc:
        raise DataError(out, f"cannot write: {exc.strerror or exc}") from None
    return out
