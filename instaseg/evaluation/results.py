"""Read and validate COCO results files from any toolkit (Detectron2, MMDetection, Ultralytics'
``save_json``, instaseg) against the ground truth they claim to describe.

A results file is a JSON list of ``{"image_id", "category_id", "score", "bbox" [x, y, w, h] and/or
"segmentation" (RLE with str counts, uncompressed RLE or polygons)}``. Every problem is a
:class:`~instaseg.errors.DataError` naming the file, the entry and what is wrong.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from instaseg.errors import DataError

_MAX_SHOWN = 3


def _fail(path: Path, problem: str) -> DataError:
    return DataError(path, problem)


def load_results(path: str | Path, gt: dict[str, Any]) -> list[dict[str, Any]]:
    """Load COCO results from ``path`` and check them against COCO GT dict ``gt``.

    Returns new normalised entries: ``segmentation`` (if any) as compressed RLE with str counts at the
    image's size, ``bbox`` (derived from the mask when missing), ``score`` float. Raises DataError for
    malformed JSON, a non-list document, entries missing fields, image or category ids that are not in
    ``gt``, masks of the wrong size, or non-finite numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "results file not found" if not path.exists() else "is a folder, expected JSON")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise _fail(path, "not UTF-8 text: not a JSON results file?") from None
    except json.JSONDecodeError as exc:
        raise _fail(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]  # a COCO-style dict wrapping the results
    if not isinstance(data, list):
        raise _fail(path, f"expected a JSON list of COCO results, got a {type(data).__name__}")
    return validate_results(data, gt, source=path)


def validate_results(
    entries: list[Any], gt: dict[str, Any], *, source: str | Path | None = None
) -> list[dict[str, Any]]:
    """Check and normalise in-memory COCO results (see :func:`load_results`)."""
    from pycocotools import mask as mask_utils

    from instaseg.evaluation.matching import to_rle

    where = Path(source) if source is not None else None
    sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in gt["images"]}
    cats = {int(c["id"]) for c in gt["categories"]}
    unknown_images: list[Any] = []
    unknown_cats: list[Any] = []
    out: list[dict[str, Any]] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise DataError(where, f"entry {i} is a {type(e).__name__}, expected an object")
        for key in ("image_id", "category_id", "score"):
            if key not in e:
                raise DataError(where, f"entry {i} has no {key!r}")
        if "bbox" not in e and "segmentation" not in e:
            raise DataError(where, f"entry {i} has neither 'bbox' nor 'segmentation'")
        image_id, cat = _as_int(e["image_id"]), _as_int(e["category_id"])
        if image_id is None or image_id not in sizes:
            unknown_images.append(e["image_id"])
            continue
        if cat is None or cat not in cats:
            unknown_cats.append(e["category_id"])
            continue
        score = e["score"]
        if not isinstance(score, int | float) or not math.isfinite(score):
            raise DataError(where, f"entry {i} has score {score!r}, expected a finite number")
        h, w = sizes[image_id]
        entry: dict[str, Any] = {"image_id": image_id, "category_id": cat, "score": float(score)}
        rle = None
        if e.get("segmentation") is not None:
            rle = _check_segmentation(e["segmentation"], h, w, i, image_id, where)
            coded = to_rle(rle, h, w)
            entry["segmentation"] = {"size": [h, w], "counts": coded["counts"].decode("ascii")}
        if e.get("bbox") is not None:
            box = e["bbox"]
            ok = isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)
            if not ok or not all(math.isfinite(v) for v in box):
                raise DataError(where, f"entry {i} has bbox {box!r}, expected [x, y, width, height]")
            entry["bbox"] = [float(v) for v in box]
        elif rle is not None:
            entry["bbox"] = [float(v) for v in mask_utils.toBbox(to_rle(rle, h, w))]
        out.append(entry)
    for kind, bad, known in (("image", unknown_images, sizes), ("category", unknown_cats, cats)):
        if bad:
            shown = ", ".join(map(repr, sorted(set(map(str, bad)))[:_MAX_SHOWN]))
            raise DataError(
                where,
                f"{len(bad)} results have {kind} ids not in the dataset (e.g. {shown}; the dataset has "
                f"{len(known)} {kind}s{_range_hint(known)})",
            )
    return out


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _range_hint(ids: Any) -> str:
    ids = sorted(ids)
    return f", ids {ids[0]}..{ids[-1]}" if ids else ""


def _check_segmentation(seg: Any, h: int, w: int, i: int, image_id: int, where: Path | None) -> Any:
    if isinstance(seg, list):
        polys = [p for p in seg if isinstance(p, list) and len(p) >= 6]
        if not polys or not all(isinstance(v, int | float) for p in polys for v in p):
            raise DataError(where, f"entry {i}: segmentation polygons must be lists of >= 3 x, y points")
        return polys
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise DataError(where, f"entry {i}: segmentation must be an RLE {{size, counts}} or polygons")
    size = seg["size"]
    if not isinstance(size, list) or [_as_int(v) for v in size] != [h, w]:
        raise DataError(
            where, f"entry {i}: segmentation size {size!r} differs from image {image_id} ({h}x{w})"
        )
    counts = seg["counts"]
    if not isinstance(counts, str | list):
        raise DataError(where, f"entry {i}: RLE counts must be a string or a list of ints")
    return {"size": [h, w], "counts": counts}
