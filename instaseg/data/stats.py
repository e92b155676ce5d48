"""Dataset statistics and a preview grid (``instaseg data stats``).

Areas are mask pixel areas, split with COCO's thresholds: small < 32^2 <= medium < 96^2 <= large.
Masks come from :func:`instaseg.data._split.load_rles` (straight from the JSON for COCO), so only
the preview decodes images.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.structures.masks import rle_areas

SMALL_AREA = 32**2
LARGE_AREA = 96**2


def compute_stats(dataset: Any, *, source: str = "") -> dict[str, Any]:
    """Counts for ``dataset`` (any :class:`~instaseg.data.base.InstanceDataset`).

    Returns a JSON-ready dict: ``images``, ``instances``, ``images_without_instances``, ``crowd``,
    ``per_class`` {name: count} (every class, zeros included), ``sizes`` {small, medium, large},
    ``instances_per_image`` {min, mean, max}, ``image_height``/``image_width`` {min, max}.
    """
    from tqdm import tqdm

    from instaseg.data._split import load_rles

    names = list(dataset.class_names)
    per_class: Counter = Counter()
    sizes = Counter({"small": 0, "medium": 0, "large": 0})
    heights, widths, counts = [], [], []
    crowd = 0
    for i in tqdm(range(len(dataset)), desc="counting", unit="img", disable=None, leave=False):
        rles, labels, iscrowd, (h, w) = load_rles(dataset, i)
        heights.append(int(h))
        widths.append(int(w))
        counts.append(len(labels))
        crowd += int(np.asarray(iscrowd).sum())
        for label in np.asarray(labels).tolist():
            per_class[names[label] if 0 <= label < len(names) else str(label)] += 1
        for area in rle_areas(rles).tolist():
            key = "small" if area < SMALL_AREA else "medium" if area < LARGE_AREA else "large"
            sizes[key] += 1
    n = len(counts)
    out = {
        "source": source,
        "images": n,
        "instances": int(sum(counts)),
        "images_without_instances": int(sum(1 for c in counts if c == 0)),
        "crowd": crowd,
        "classes": len(names) - 1,
        "per_class": {name: int(per_class.get(name, 0)) for name in names[1:]}
        | {k: v for k, v in per_class.items() if k not in names},
        "sizes": dict(sizes),
        "instances_per_image": {
            "min": int(min(counts)) if n else 0,
            "mean": round(float(np.mean(counts)), 2) if n else 0.0,
            "max": int(max(counts)) if n else 0,
        },
        "image_height": {"min": min(heights) if n else 0, "max": max(heights) if n else 0},
        "image_width": {"min": min(widths) if n else 0, "max": max(widths) if n else 0},
    }
    if hasattr(dataset, "panoptic_categories"):
        out["panoptic"] = panoptic_stats(dataset)
    return out


def format_stats(stats: dict[str, Any]) -> str:
    """A human-readable table of :func:`compute_stats`' result."""
    s = stats
    ipi, hh, ww = s["instances_per_image"], s["image_height"], s["image_width"]
    lines = [
        f"dataset: {s['source']}",
        f"images: {s['images']}  (without instances: {s['images_without_instances']})",
        f"instances: {s['instances']}  (crowd: {s['crowd']}; per image min/mean/max "
        f"{ipi['min']}/{ipi['mean']}/{ipi['max']})",
        f"image size: height {hh['min']}-{hh['max']}, width {ww['min']}-{ww['max']}",
        "sizes (COCO area thresholds 32^2, 96^2): " + ", ".join(f"{k} {v}" for k, v in s["sizes"].items()),
        f"classes: {s['classes']}",
    ]
    per_class = s["per_class"]
    width = max((len(k) for k in per_class), default=5)
    for name, count in sorted(per_class.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {name:<{width}}  {count}")
    if "panoptic" in s:
        lines.append(format_panoptic_stats(s["panoptic"]))
    return "\n".join(lines)


def render_preview(dataset: Any, *, num_images: int = 16, cols: int = 4, cell_size: int = 320) -> np.ndarray:
    """uint8 RGB grid of the first ``num_images`` images with their masks, boxes and class names
    (panoptic datasets: stuff and things coloured, :func:`~instaseg.viz.panoptic.overlay_panoptic`)."""
    from instaseg.data.transforms import boxes_and_areas
    from instaseg.viz.draw import draw_instances, make_grid

    n = min(int(num_images), len(dataset))
    if n <= 0:
        raise ValueError("the dataset has no images to preview")
    import cv2

    tiles = []
    for i in range(n):
        rec = dataset.load_record(i)
        image, masks = rec.image, np.asarray(rec.masks, dtype=bool)
        # Scale to the cell before drawing, so outlines and text have the same size in every cell.
        s = cell_size / max(image.shape[:2])
        if s != 1:
            size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            masks = (
                np.stack(
                    [cv2.resize(m.view(np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in masks]
                ).astype(bool)
                if len(masks)
                else np.zeros((0, size[1], size[0]), bool)
            )
        pan = rec.extra.get("panoptic")
        if pan is not None and hasattr(dataset, "panoptic_categories"):
            from instaseg.structures.panoptic import PanopticResult
            from instaseg.viz.panoptic import overlay_panoptic

            size = (image.shape[1], image.shape[0])
            ids = cv2.resize(pan.id_map.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
            small = PanopticResult(ids, pan.segments)
            tiles.append(overlay_panoptic(image, small, dataset.panoptic_categories))
            continue
        boxes, _ = boxes_and_areas(masks)
        tiles.append(draw_instances(image, masks, boxes, labels=rec.labels, class_names=dataset.class_names))
    return make_grid(tiles, cols=cols, cell_size=cell_size)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 RGB image as PNG (folders created); DataError if it cannot be written."""
    import cv2

    from instaseg.errors import DataError

    out = Path(path)
    if out.suffix.lower() != ".png":
        raise DataError(out, "preview must be a .png file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(out, f"cannot create folder: {exc.strerror or exc}") from None
    if not cv2.imwrite(str(out), np.ascontiguousarray(image[..., ::-1])):
        raise DataError(out, "cannot write PNG")
    return out


def panoptic_stats(dataset: Any) -> dict[str, Any]:
    """Segments per image, thing / stuff / crowd segment counts, the share of thing, stuff and VOID
    pixels, and per class its segment count and pixel share (``dataset.load_panoptic``, no images)."""
    from tqdm import tqdm

    cats = {int(c["id"]): c for c in dataset.panoptic_categories}
    per_class: Counter = Counter()
    px_class: Counter = Counter()
    kinds = Counter({"thing": 0, "stuff": 0, "crowd": 0})
    px = Counter({"thing": 0, "stuff": 0, "void": 0})
    counts = []
    for i in tqdm(range(len(dataset)), desc="counting", unit="img", disable=None, leave=False):
        pan = dataset.load_panoptic(i)
        areas = pan.areas()
        px["void"] += int(pan.id_map.size - sum(areas.values()))
        counts.append(len(pan.segments))
        for s in pan.segments:
            n = areas.get(s.id, 0)
            kinds["crowd" if s.iscrowd else "thing" if s.isthing else "stuff"] += 1
            px["thing" if s.isthing else "stuff"] += n
            name = str(cats.get(s.category_id, {}).get("name", s.category_id))
            per_class[name] += 1
            px_class[name] += n
    total = max(sum(px.values()), 1)
    return {
        "segments": int(sum(counts)),
        "segments_per_image": {"min": min(counts, default=0), "mean": round(float(np.mean(counts)), 2)
                               if counts else 0.0, "max": max(counts, default=0)},
        "segment_kinds": dict(kinds),
        "pixel_share": {k: round(v / total, 4) for k, v in px.items()},
        "thing_classes": sum(1 for c in cats.values() if c["isthing"]),
        "stuff_classes": sum(1 for c in cats.values() if not c["isthing"]),
        "per_class": {n: {"segments": int(per_class[n]), "pixel_share": round(px_class[n] / total, 4)}
                      for n in sorted(per_class, key=lambda n: -px_class[n])},
    }


def format_panoptic_stats(p: dict[str, Any]) -> str:
    spi, share, kinds = p["segments_per_image"], p["pixel_share"], p["segment_kinds"]
    lines = [
        f"panoptic: {p['segments']} segments ({kinds['thing']} things, {kinds['stuff']} stuff, "
        f"{kinds['crowd']} crowd); per image min/mean/max {spi['min']}/{spi['mean']}/{spi['max']}",
        f"pixels: things {share['thing']:.1%}, stuff {share['stuff']:.1%}, VOID {share['void']:.1%}; "
        f"classes: {p['thing_classes']} thing, {p['stuff_classes']} stuff",
    ]
    width = max((len(n) for n in p["per_class"]), default=5)
    for name, v in p["per_class"].items():
        lines.append(f"  {name:<{width}}  {v['segments']:5d} segments  {v['pixel_share']:7.2%} of pixels")
    return "\n".join(lines)
