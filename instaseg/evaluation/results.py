"""Read and validate COCO results files from any toolkit (Detectron2, MMDetection, Ultralytics'
``save_json``, instaseg) against the ground truth they claim to describe.

A results file is a JSON list of ``{"image_id", "category_id", "score", "bbox" [x, y, w, h] and/or
"segmentation" (RLE with str counts, uncompressed RLE or polygons)}``. An ``image_id`` may also be the
image's file-name stem (Ultralytics writes that for non-numeric names). Every problem is a
:class:`~instaseg.errors.DataError` naming the file, the entry and what is wrong.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from instaseg.errors import DataError
from instaseg.structures.masks import to_rle

_MAX_SHOWN = 3


def _fail(path: Path, problem: str) -> DataError:
    return DataError(path, problem)


def load_results(
    path: str | Path, gt: dict[str, Any], *, subset: bool = False
) -> list[dict[str, Any]]:
    """Load COCO results from ``path`` and check them against COCO GT dict ``gt``.

    Returns new normalised entries: ``segmentation`` (if any) as compressed RLE with str counts at the
    image's size, ``bbox`` as given (a missing one stays missing: whether results carry boxes decides
    how COCO measures detection areas, see :func:`instaseg.evaluation.coco.load_detections`), ``score``
    float. Raises DataError for
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
    return validate_results(data, gt, source=path, copy=False, subset=subset)


def validate_results(
    entries: list[Any],
    gt: dict[str, Any],
    *,
    source: str | Path | None = None,
    copy: bool = True,
    subset: bool = False,
) -> list[dict[str, Any]]:
    """Check and normalise in-memory COCO results (see :func:`load_results`). With ``copy=False`` the
    entries are normalised in place (no second copy of a large results file in memory). With
    ``subset`` (``gt`` is a split or the first images of a larger set) results for other images are
    dropped instead of refused."""
    where = Path(source) if source is not None else None
    sizes = {int(im["id"]): [int(im["height"]), int(im["width"])] for im in gt["images"]}
    cats = {int(c["id"]) for c in gt["categories"]}
    by_stem = {Path(str(im.get("file_name", ""))).stem: int(im["id"]) for im in gt["images"]}
    unknown_images: list[Any] = []
    unknown_cats: list[Any] = []
    out: list[dict[str, Any]] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise DataError(where, f"entry {i} is a {type(e).__name__}, expected an object")
        try:
            image_id, cat, score = e["image_id"], e["category_id"], e["score"]
        except KeyError as exc:
            raise DataError(where, f"entry {i} has no {exc.args[0]!r}") from None
        if type(image_id) is not int:
            # Ultralytics' save_json writes the file stem when it is not a number
            image_id = _as_int(image_id) if not isinstance(image_id, str) else by_stem.get(
                image_id, _as_int(image_id)
            )
        if image_id not in sizes:
            unknown_images.append(e["image_id"])
            continue
        if type(cat) is not int:
            cat = _as_int(cat)
        if cat not in cats:
            unknown_cats.append(e["category_id"])
            continue
        if type(score) is not float and (not isinstance(score, int | float) or isinstance(score, bool)):
            raise DataError(where, f"entry {i} has score {score!r}, expected a finite number")
        if not math.isfinite(score):
            raise DataError(where, f"entry {i} has score {score!r}, expected a finite number")
        seg, box = e.get("segmentation"), e.get("bbox")
        if seg is None and box is None:
            raise DataError(where, f"entry {i} has neither 'bbox' nor 'segmentation'")
        entry = e if not copy else {}
        entry.update(image_id=image_id, category_id=cat, score=float(score))
        hw = sizes[image_id]
        if seg is not None:
            # fast path: compressed RLE with str counts at the right size, kept as it is
            if not (type(seg) is dict and seg.get("size") == hw and type(seg.get("counts")) is str):
                seg = _check_segmentation(seg, hw[0], hw[1], i, image_id, where)
                counts = to_rle(seg, hw[0], hw[1])["counts"]
                seg = {"size": hw, "counts": counts if type(counts) is str else counts.decode("ascii")}
            entry["segmentation"] = seg
        if box is not None:
            ok = type(box) is list and len(box) == 4 and all(isinstance(v, int | float) for v in box)
            if not ok or not all(math.isfinite(v) for v in box):
                raise DataError(where, f"entry {i} has bbox {box!r}, expected [x, y, width, height]")
            entry["bbox"] = box
        out.append(entry)
    if subset:
        unknown_images = []
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
