"""VIA 2 projects (and VIA 1/2 region exports) to COCO instances JSON: polygons, rects, circles,
ellipses; the class from a region attribute, or one class named by ``class_name`` (or after the
folder) when the project has no region attribute. Returns a :class:`~instaseg.data.convert.Conversion`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instaseg.data.convert import Conversion, ellipse_polygon, polygon_coco, rect_polygon, relative_path
from instaseg.errors import DataError


def _via_entries(data: Any, path: Path) -> list[dict[str, Any]]:
    """The per-image entries of a VIA 2 project (``_via_img_metadata``) or VIA 1/2 region export."""
    if not isinstance(data, dict):
        raise DataError(path, "not a VIA JSON (expected an object)")
    if "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
    elif "project" in data and "file" in data and "metadata" in data:
        raise DataError(path, "VIA 3 projects are not supported: export annotations as VIA 2 JSON")
    if not isinstance(data, dict):
        raise DataError(path, "'_via_img_metadata' must be an object")
    entries = []
    for key, entry in data.items():
        if not isinstance(entry, dict) or "filename" not in entry or "regions" not in entry:
            raise DataError(path, f"entry {key!r} has no 'filename'/'regions': not a VIA 2 JSON")
        entries.append(entry)
    return entries


def _via_class(attrs: Any, attribute: str, where: str, path: Path) -> str:
    value = attrs.get(attribute) if isinstance(attrs, dict) else None
    if isinstance(value, dict):  # checkbox attributes: {"cat": true, "dog": false}
        chosen = [k for k, v in value.items() if v]
        if len(chosen) != 1:
            raise DataError(
                path, f"{where}: region attribute {attribute!r} must select one class, got {chosen}"
            )
        value = chosen[0]
    if value is None or str(value).strip() == "":
        have = sorted(attrs) if isinstance(attrs, dict) else []
        raise DataError(
            path,
            f"{where}: no region attribute {attribute!r} (it has {have}; choose with --class-attribute, "
            "or name the one class with --class-name)",
        )
    return str(value).strip()


def _any_region_attribute(entries: list[dict[str, Any]]) -> bool:
    """Whether any region carries any attribute (a project without any is single-class)."""
    for entry in entries:
        regions = entry.get("regions")
        regions = list(regions.values()) if isinstance(regions, dict) else list(regions or [])
        for region in regions:
            attrs = region.get("region_attributes") if isinstance(region, dict) else None
            if isinstance(attrs, dict) and attrs:
                return True
    return False


def _via_polygon(shape: Any, where: str, conv: Conversion) -> list[float] | None:
    if not isinstance(shape, dict):
        conv.warn("regions without shape_attributes skipped", where)
        return None
    name = shape.get("name")
    try:
        if name == "polygon":
            xs, ys = shape["all_points_x"], shape["all_points_y"]
            if len(xs) != len(ys) or len(xs) < 3:
                conv.warn("polygons with fewer than 3 points skipped", where)
                return None
            return [round(float(v), 2) for xy in zip(xs, ys, strict=True) for v in xy]
        if name == "rect":
            x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
            return rect_polygon(x, y, x + w, y + h)
        if name == "circle":
            r = float(shape["r"])
            return ellipse_polygon(float(shape["cx"]), float(shape["cy"]), r, r)
        if name == "ellipse":
            return ellipse_polygon(
                float(shape["cx"]),
                float(shape["cy"]),
                float(shape["rx"]),
                float(shape["ry"]),
                float(shape.get("theta", 0.0)),
            )
    except (KeyError, TypeError, ValueError) as exc:
        conv.warn("regions with malformed shape_attributes skipped", f"{where}: {exc!r}")
        return None
    conv.warn(f"'{name}' regions skipped (no area)", where)
    return None


def via_to_coco(
    source: str | Path,
    *,
    output_dir: str | Path,
    image_dir: str | Path | None = None,
    class_attribute: str | None = None,
    class_name: str | None = None,
    labels: list[str] | None = None,
) -> Conversion:
    """Convert a VIA 2 project or export JSON to COCO; every region is one instance.

    Region shapes polygon / rect / circle / ellipse are kept (circles and ellipses as 64-point
    polygons); the class name is the region attribute ``class_attribute`` (default ``"class"``; text,
    dropdown, radio or a checkbox with one class ticked). ``class_name`` names the one class of a
    single-class project instead (every region gets it). With neither given and no region carrying an
    attribute at all, the project is taken as single-class and the class is named after the JSON's
    folder (the summary says so). VIA does not store image sizes, so images are read (header only)
    from ``image_dir`` (default: the JSON's folder).
    """
    from instaseg.data.io import image_size, read_json

    path = Path(source)
    entries = _via_entries(read_json(path), path)
    root = Path(image_dir) if image_dir is not None else path.parent
    if not root.is_dir():
        raise DataError(root, "image folder not found")
    out_dir = Path(output_dir)
    conv = Conversion(coco={})
    if class_name is not None and not class_name.strip():
        raise DataError(path, "--class-name must not be empty")
    if class_name is None and class_attribute is None and not _any_region_attribute(entries):
        class_name = path.resolve().parent.name or "object"
        conv.warn(f"single-class project (regions have no attributes): class {class_name!r}", path.name)
    attribute = class_attribute or "class"
    images, pending = [], []
    for entry in entries:
        image_file = root / str(entry["filename"])
        if not image_file.is_file():
            raise DataError(image_file, f"image named in {path.name} not found")
        h, w = image_size(image_file)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": relative_path(image_file, out_dir), "height": h,
                       "width": w})
        regions = entry["regions"]
        regions = list(regions.values()) if isinstance(regions, dict) else list(regions or [])
        for k, region in enumerate(regions):
            where = f"{entry['filename']} region {k}"
            if not isinstance(region, dict):
                raise DataError(path, f"{where} is not an object")
            poly = _via_polygon(region.get("shape_attributes"), where, conv)
            if poly is None:
                continue
            if class_name is not None:
                name = class_name.strip()
            else:
                name = _via_class(region.get("region_attributes"), attribute, where, path)
            pending.append((image_id, name, [poly], h, w, where))
    names = sorted({p[1] for p in pending}) if labels is None else list(labels)
    unknown = sorted({p[1] for p in pending} - set(names))
    if unknown:
        raise DataError(path, f"classes {unknown} are not in the labels file")
    conv.coco = polygon_coco(conv, pending, names, images, f"converted from VIA: {path}")
    return conv


