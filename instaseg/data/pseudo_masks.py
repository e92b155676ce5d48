"""Pseudo-masks from boxes: turn box-only annotations into a COCO file with masks.

Three methods: ``"grabcut"`` (OpenCV GrabCut initialised by each box, run on a crop around it),
``"ellipse"`` (the ellipse inscribed in the box: a shape prior for blob-like objects such as cell
nuclei) and ``"box"`` (the filled box). GrabCut "collapses" when it keeps too little of the box (or
nearly all of it, i.e. it found no background); then the ``fallback`` shape (the filled box by
default, or the inscribed ellipse) is used instead and the fallback is counted. Boxes are XYXY pixels
throughout. Explicit cases, each counted in :class:`PseudoMaskReport`:

- crowd boxes (``iscrowd=1``): kept as crowd regions with the filled box as their mask (training and
  evaluation ignore crowd regions, so GrabCut would buy nothing);
- tiny boxes (either side < ``min_side`` px): the fallback shape (GrabCut needs a background border);
- boxes reaching outside the image are clipped; boxes with no area after clipping are skipped;
- images without boxes are kept, with no annotations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.errors import DataError

METHODS = ("grabcut", "ellipse", "box")
FALLBACKS = ("box", "ellipse")
CORE_SHAPES = ("ellipse", "rect", "band")


@dataclass
class BoxAnnotation:
    """One box of a box-only source: ``box`` XYXY pixels, original ``category_id``, ``iscrowd``."""

    box: tuple[float, float, float, float]
    category_id: int
    iscrowd: int = 0


@dataclass
class BoxImage:
    """One image of a box-only source: its COCO image entry fields, its file and its boxes."""

    id: int
    path: Path | None
    height: int
    width: int
    boxes: list[BoxAnnotation] = field(default_factory=list)
    image: np.ndarray | None = None  # uint8 (H, W, 3) RGB when there is no file (synthetic data)


@dataclass
class PseudoMaskReport:
    """Counts of what :func:`pseudo_mask_dataset` did (every skip and fallback is counted)."""

    method: str
    fallback: str = "box"  # the shape for collapsed GrabCut results and tiny boxes
    images: int = 0
    instances: int = 0
    grabcut: int = 0  # GrabCut masks kept
    collapsed: int = 0  # GrabCut collapsed: filled box used instead
    tiny: int = 0  # box too small for GrabCut: filled box
    crowd: int = 0  # crowd boxes: filled box, still iscrowd=1
    clipped: int = 0  # boxes reaching outside the image, clipped
    skipped_empty: int = 0  # boxes with no area (after clipping): skipped
    images_without_boxes: int = 0
    seconds: float = 0.0
    mean_iou: float | None = None  # against true masks (``compare_masks``)
    compared: int = 0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def format(self) -> str:
        parts = [f"{self.method}: {self.instances} instances in {self.images} images"]
        shape = "box fill" if self.fallback == "box" else self.fallback
        if self.method == "grabcut":
            parts.append(f"grabcut {self.grabcut}, collapsed -> {shape} {self.collapsed}")
            parts.append(f"tiny -> {shape} {self.tiny}")
        parts.append(f"crowd {self.crowd}, clipped {self.clipped}, "
                     f"skipped empty {self.skipped_empty}, images without boxes {self.images_without_boxes}")
        if self.mean_iou is not None:
            parts.append(f"mean IoU vs true masks {self.mean_iou:.3f} over {self.compared} instances")
        parts.append(f"{self.seconds:.1f} s")
        return "; ".join(parts)


def box_fill_mask(box: tuple[float, float, float, float] | np.ndarray, height: int, width: int) -> np.ndarray:
    """The filled box as a bool (H, W) mask; ``box`` XYXY pixels (pixel k covers [k, k+1))."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mask = np.zeros((height, width), dtype=bool)
    c1, r1 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
    c2, r2 = min(int(np.ceil(x2)), width), min(int(np.ceil(y2)), height)
    mask[r1:r2, c1:c2] = True
    return mask


def ellipse_mask(box: tuple[float, float, float, float] | np.ndarray, height: int, width: int) -> np.ndarray:
    """The ellipse inscribed in ``box`` (XYXY pixels) as a bool (H, W) mask: the pixels whose centres
    lie inside it; the box's centre pixel always (so a box a pixel wide is not empty)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mask = np.zeros((height, width), dtype=bool)
    c1, r1 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
    c2, r2 = min(int(np.ceil(x2)), width), min(int(np.ceil(y2)), height)
    if c2 <= c1 or r2 <= r1:
        return mask
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rx, ry = max((x2 - x1) / 2, 1e-6), max((y2 - y1) / 2, 1e-6)
    ys, xs = np.mgrid[r1:r2, c1:c2] + 0.5
    mask[r1:r2, c1:c2] = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0
    mask[min(max(int(cy), r1), r2 - 1), min(max(int(cx), c1), c2 - 1)] = True
    return mask


def core_seed(
    height: int, width: int, core: tuple[float, float] | None, shape: str = "ellipse",
) -> np.ndarray:
    """The definite-object seed of a ``height x width`` box: bool (height, width).

    ``core`` ``(lo, hi)``: fractions of the box's width and height bounding the seed (e.g.
    ``(0.2, 0.8)``); ``None`` or an empty range gives no seed. ``shape`` ``"rect"`` fills that
    rectangle, ``"ellipse"`` the ellipse inscribed in it (an object reaches its box's sides, but rarely
    its corners), ``"band"`` a vertical band: the range across, the whole box's middle 0.1..0.9 down
    (upright objects such as people fill their box's centre column from head to feet).
    """
    seed = np.zeros((height, width), dtype=bool)
    if core is None or not core[0] < core[1]:
        return seed
    lo, hi = core
    if shape not in CORE_SHAPES:
        raise ValueError(f"unknown core shape {shape!r} (use one of {', '.join(CORE_SHAPES)})")
    ys = (np.arange(height) + 0.5)[:, None] / height
    xs = (np.arange(width) + 0.5)[None, :] / width
    if shape == "ellipse":
        c, r = (lo + hi) / 2, (hi - lo) / 2
        seed = ((xs - c) / r) ** 2 + ((ys - c) / r) ** 2 <= 1.0
    elif shape == "band":
        seed = (xs >= lo) & (xs <= hi) & (ys >= 0.1) & (ys <= 0.9)
    else:
        seed = (xs >= lo) & (xs <= hi) & (ys >= lo) & (ys <= hi)
    return np.broadcast_to(seed, (height, width)).copy()


def grabcut_mask(
    image: np.ndarray,
    box: tuple[float, float, float, float] | np.ndarray,
    *,
    iterations: int = 5,
    margin: float = 0.25,
    min_fill: float = 0.15,
    max_fill: float = 0.98,
    core: tuple[float, float] | None = None,
    core_shape: str = "ellipse",
    seed: int = 0,
) -> tuple[np.ndarray, bool]:
    """GrabCut inside ``box`` on ``image``: ``(mask bool (H, W), collapsed)``.

    ``image`` uint8 (H, W, 3) RGB; ``box`` XYXY pixels inside the image. GrabCut runs on a crop of the
    box grown by ``margin`` of its size on each side (the border outside the box seeds the background
    model). With ``core`` (see :func:`core_seed`) the central seed of the box is definite object:
    GrabCut may not cut it away and its colours seed the object model; without it every pixel of
    the box starts as "probably object" (OpenCV's rectangle mode). The mask keeps the largest
    connected component inside the box. ``collapsed`` is True (and the mask is the filled box) when
    the result covers less than ``min_fill`` or more than ``max_fill`` of the box. A kept mask is made
    to reach all four sides of the box (:func:`touch_box_sides`).
    """
    import cv2

    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    fill = box_fill_mask(box, h, w)
    bw, bh = x2 - x1, y2 - y1
    cx1, cy1 = max(int(x1 - margin * bw), 0), max(int(y1 - margin * bh), 0)
    cx2, cy2 = min(int(np.ceil(x2 + margin * bw)), w), min(int(np.ceil(y2 + margin * bh)), h)
    crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2, ::-1])  # OpenCV wants BGR
    inside = fill[cy1:cy2, cx1:cx2]
    gc = np.where(inside, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    rows, cols = np.nonzero(inside.any(1))[0], np.nonzero(inside.any(0))[0]
    if len(rows) and len(cols):
        r1, c1 = rows[0], cols[0]
        sub = core_seed(rows[-1] + 1 - r1, cols[-1] + 1 - c1, core, core_shape)
        gc[r1:r1 + sub.shape[0], c1:c1 + sub.shape[1]][sub] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)  # GrabCut's GMM init uses k-means with OpenCV's global RNG
    try:
        cv2.grabCut(crop, gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return fill, True  # e.g. no background pixels at all (box covers the whole crop)
    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    mask = np.zeros((h, w), dtype=bool)
    mask[cy1:cy2, cx1:cx2] = fg
    mask &= fill
    mask = _largest_component(mask)
    ratio = mask.sum() / max(fill.sum(), 1)
    if ratio < min_fill or ratio > max_fill:
        return fill, True
    return touch_box_sides(mask, fill), False


def touch_box_sides(mask: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """``mask`` bool (H, W), non-empty, inside the filled box ``fill`` (H, W), extended by 1-px lines
    from its outermost pixels to every side of the box it does not reach.

    A box is tight: the object touches all four of its sides. Training derives each instance's box
    from its mask, so a GrabCut mask that misses the feet or a hand would otherwise shrink the box the
    detector learns (box AP 0.27 vs 0.40 with true masks on Penn-Fudan, BENCHMARKS.md). The lines
    change the mask's IoU by a few pixels."""
    rows, cols = np.nonzero(fill.any(1))[0], np.nonzero(fill.any(0))[0]
    r1, r2, c1, c2 = rows[0], rows[-1], cols[0], cols[-1]
    out = mask.copy()
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.argmin(), ys.argmax(), xs.argmin(), xs.argmax()
    out[r1:ys[top], xs[top]] = True
    out[ys[bottom] + 1:r2 + 1, xs[bottom]] = True
    out[ys[left], c1:xs[left]] = True
    out[ys[right], xs[right] + 1:c2 + 1] = True
    return out


def merge_model_mask(
    pseudo: np.ndarray, probs: np.ndarray, box: tuple[float, float, float, float] | np.ndarray, *,
    weight: float = 0.75,
) -> np.ndarray:
    """Self-training's relabel: a pseudo-mask revised by a model's mask for the same box.

    ``pseudo`` bool (H, W); ``probs`` float (M, M), the model's probabilities over ``box`` (XYXY
    pixels, e.g. a Mask R-CNN head's 28 x 28 grid). A pixel of the box is object when
    ``weight * p + (1 - weight) * pseudo >= 0.5``: with ``weight`` above 0.5 the model overrides the
    pseudo-mask only where it is confident (p >= 0.5 / weight to add a pixel, p < 1 - 0.5 / weight to
    remove one), which keeps GrabCut's sharp edges where the still-training model is unsure. Keeps the
    largest component and reaches the box's sides (:func:`touch_box_sides`); returns ``pseudo``
    unchanged when the result would be empty.
    """
    from instaseg.structures.paste import paste_masks_dense

    h, w = pseudo.shape
    if not 0.5 < weight <= 1.0:
        raise ValueError(f"weight must be in (0.5, 1], got {weight}")
    box_arr = np.asarray(box, dtype=np.float32)[None]
    add = paste_masks_dense(probs[None], box_arr, h, w, threshold=0.5 / weight)[0]
    keep = paste_masks_dense(probs[None], box_arr, h, w, threshold=(weight - 0.5) / weight)[0]
    fill = box_fill_mask(box, h, w)
    mask = ((pseudo & keep) | add) & fill
    if not mask.any():
        return pseudo
    return touch_box_sides(_largest_component(mask), fill)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def _clip_box(box: tuple[float, ...], height: int, width: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
            min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def pseudo_mask_image(
    image: np.ndarray, boxes: list[BoxAnnotation], *, method: str, report: PseudoMaskReport,
    min_side: float = 8.0, iterations: int = 5, core: tuple[float, float] | None = None,
    core_shape: str = "ellipse", fallback: str = "box",
) -> list[tuple[BoxAnnotation, np.ndarray]]:
    """Pseudo-masks for one image: ``[(clipped box annotation, mask bool (H, W))]``, boxes with no
    area dropped; every case counted in ``report``. ``iterations``, ``core`` and ``core_shape`` go
    to :func:`grabcut_mask`; ``fallback`` (``"box"`` or ``"ellipse"``) is the shape of collapsed
    GrabCut results and tiny boxes."""
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown fallback {fallback!r} (use one of {', '.join(FALLBACKS)})")
    shape = ellipse_mask if fallback == "ellipse" else box_fill_mask
    h, w = image.shape[:2]
    out = []
    for ann in boxes:
        box = _clip_box(ann.box, h, w)
        if box != tuple(float(v) for v in ann.box):
            report.clipped += 1
        if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
            report.skipped_empty += 1
            continue
        ann = BoxAnnotation(box, ann.category_id, ann.iscrowd)
        report.instances += 1
        if ann.iscrowd:
            report.crowd += 1
            mask = box_fill_mask(box, h, w)
        elif method == "box":
            mask = box_fill_mask(box, h, w)
        elif method == "ellipse":
            mask = ellipse_mask(box, h, w)
        elif min(box[2] - box[0], box[3] - box[1]) < min_side:
            report.tiny += 1
            mask = shape(box, h, w)
        else:
            mask, collapsed = grabcut_mask(image, box, iterations=iterations, core=core,
                                            core_shape=core_shape)
            if collapsed:
                mask = shape(box, h, w)
            report.collapsed += int(collapsed)
            report.grabcut += int(not collapsed)
        out.append((ann, mask))
    return out


def load_box_source(spec: str, *, split: str | None = None) -> tuple[list[BoxImage], list[dict[str, Any]]]:
    """The images and boxes of ``spec`` and its COCO categories, without reading any mask.

    A COCO JSON (``coco:`` spec or ``.json`` path) is read directly: each annotation's ``bbox``
    ``[x, y, w, h]`` (``segmentation`` may be absent: box-only files are the point). Any other spec is
    built as a dataset and its boxes are its masks' extents (the masks are then discarded).
    """
    from instaseg.data.build import parse_spec

    fmt, args = parse_spec(spec)
    if fmt == "coco" and split is None:
        return _load_coco_boxes(args)
    return _load_dataset_boxes(spec, split)


def _load_coco_boxes(args: str) -> tuple[list[BoxImage], list[dict[str, Any]]]:
    from instaseg.data.build import coco_args
    from instaseg.data.coco import guess_image_dir
    from instaseg.data.io import image_size, read_json

    ann_file, image_dir = coco_args(args)
    path = Path(ann_file)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(path, "not a COCO instances JSON (no 'images' list)")
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise DataError(path, "no 'categories'")
    root = Path(image_dir) if image_dir else guess_image_dir(path, [str(im.get("file_name", "")) for im in
                                                                     data["images"]])
    images: dict[Any, BoxImage] = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DataError(path, f"images[{k}]: needs 'id' and 'file_name'")
        file = root / str(im["file_name"])
        hw = (im.get("height"), im.get("width"))
        if not all(isinstance(v, int) for v in hw):
            hw = image_size(file)
        images[im["id"]] = BoxImage(int(im["id"]), file, int(hw[0]), int(hw[1]))
    for k, ann in enumerate(data.get("annotations", [])):
        where = f"annotations[{k}]"
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            raise DataError(path, f"{where}: needs 'image_id' and 'category_id'")
        if ann["image_id"] not in images:
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise DataError(path, f"{where}: 'bbox' must be [x, y, w, h] numbers, got {bbox!r}")
        x, y, bw, bh = (float(v) for v in bbox)
        images[ann["image_id"]].boxes.append(
            BoxAnnotation((x, y, x + bw, y + bh), int(ann["category_id"]), int(bool(ann.get("iscrowd", 0)))))
    categories = [
        {"id": int(c["id"]), "name": str(c["name"]), "supercategory": str(c.get("supercategory", ""))}
        for c in cats
    ]
    return list(images.values()), categories


def _load_dataset_boxes(spec: str, split: str | None) -> tuple[list[BoxImage], list[dict[str, Any]]]:
    import torch

    from instaseg.data._split import load_annotations
    from instaseg.data.build import build_dataset
    from instaseg.data.convert import _source_file as source_file
    from instaseg.structures import masks_to_boxes

    ds = build_dataset(spec, split=split)
    out = []
    for i in range(len(ds)):
        file = source_file(ds, i)
        info = ds.image_info(i)
        masks, labels, crowd = load_annotations(ds, i)
        h, w = int(info["height"]), int(info["width"])
        boxes = masks_to_boxes(torch.from_numpy(masks.reshape(-1, h, w))).tolist()
        anns = [BoxAnnotation(tuple(b), int(ds.category_ids[int(lab)]), int(c))  # type: ignore[arg-type]
                for b, lab, c in zip(boxes, labels.tolist(), crowd.tolist(), strict=True)]
        image = None if file else ds.load_record(i).image
        out.append(BoxImage(int(info["id"]), file, h, w, anns, image))
    categories = [{"id": int(cid), "name": str(name), "supercategory": ""}
                  for cid, name in zip(ds.category_ids[1:], ds.class_names[1:], strict=True)]
    return out, categories


def pseudo_mask_dataset(
    images: list[BoxImage], categories: list[dict[str, Any]], *, method: str = "grabcut",
    output_dir: str | Path = ".", min_side: float = 8.0, iterations: int = 5,
    core: tuple[float, float] | None = None, core_shape: str = "ellipse", fallback: str = "box",
) -> tuple[dict[str, Any], dict[int, list[np.ndarray]], PseudoMaskReport]:
    """Pseudo-mask every box: ``(COCO dict, {image id: [mask (H, W)] in annotation order}, report)``.

    Image ``file_name`` entries are relative to ``output_dir`` (where the COCO file will be written).
    Masks are RLE-encoded in the COCO dict; the returned masks are for :func:`compare_masks`.
    """
    import os

    from instaseg.data.io import read_image
    from instaseg.structures import encode_masks

    if method not in METHODS:
        raise DataError(None, f"unknown pseudo-mask method {method!r} (use one of {', '.join(METHODS)})")
    if fallback not in FALLBACKS:
        raise DataError(None, f"unknown fallback {fallback!r} (use one of {', '.join(FALLBACKS)})")
    report = PseudoMaskReport(method=method, fallback=fallback)
    start = time.perf_counter()
    coco_images, annotations, masks_by_image = [], [], {}
    for im in images:
        report.images += 1
        if not im.boxes:
            report.images_without_boxes += 1
        name = os.path.relpath(im.path, output_dir) if im.path is not None else f"images/{im.id}.png"
        coco_images.append({"id": im.id, "file_name": Path(name).as_posix(), "height": im.height,
                            "width": im.width})
        if not im.boxes:
            masks_by_image[im.id] = []
            continue
        image = im.image if im.image is not None else read_image(im.path)  # type: ignore[arg-type]
        if image.shape[:2] != (im.height, im.width):
            raise DataError(im.path, f"image is {image.shape[1]}x{image.shape[0]}, the annotations say "
                                     f"{im.width}x{im.height}")
        pairs = pseudo_mask_image(image, im.boxes, method=method, report=report, min_side=min_side,
                                  iterations=iterations, core=core, core_shape=core_shape,
                                  fallback=fallback)
        masks = [m for _, m in pairs]
        masks_by_image[im.id] = masks
        rles = encode_masks(np.stack(masks)) if masks else []
        for (ann, mask), rle in zip(pairs, rles, strict=True):
            counts = rle["counts"]
            x1, y1, x2, y2 = ann.box
            annotations.append({
                "id": len(annotations) + 1, "image_id": im.id, "category_id": ann.category_id,
                "segmentation": {"size": [im.height, im.width],
                                 "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts},
                "area": float(mask.sum()), "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": ann.iscrowd,
            })
    report.seconds = time.perf_counter() - start
    coco = {"info": {"description": f"instaseg pseudo-masks ({method})"}, "images": coco_images,
            "annotations": annotations, "categories": categories}
    return coco, masks_by_image, report


def compare_masks(
    masks_by_image: dict[int, list[np.ndarray]], truth_spec: str, *, split: str | None = None
) -> tuple[float, int]:
    """Mean mask IoU of pseudo-masks against the true masks of ``truth_spec``: ``(mean IoU, count)``.

    Images are matched by image id; each non-crowd true instance is matched to the pseudo-mask of
    highest box IoU in its image (IoU 0 when the image has none). Masks are bool (H, W).
    """
    import torch

    from instaseg.data._split import load_annotations
    from instaseg.data.build import build_dataset
    from instaseg.structures import box_iou, masks_to_boxes

    ds = build_dataset(truth_spec, split=split)
    ious: list[float] = []
    for i in range(len(ds)):
        info = ds.image_info(i)
        if int(info["id"]) not in masks_by_image:
            continue
        truth, _, crowd = load_annotations(ds, i)
        truth = truth[crowd == 0]
        pred = masks_by_image[int(info["id"])]
        if not len(truth):
            continue
        if not pred:
            ious.extend([0.0] * len(truth))
            continue
        t = torch.from_numpy(truth.astype(bool))
        p = torch.from_numpy(np.stack(pred))
        if p.shape[1:] != t.shape[1:]:
            raise DataError(truth_spec, f"image id {info['id']}: true masks are {tuple(t.shape[1:])}, "
                                        f"pseudo-masks {tuple(p.shape[1:])}")
        best = box_iou(masks_to_boxes(t), masks_to_boxes(p)).argmax(1)
        for k, j in enumerate(best.tolist()):
            inter = (t[k] & p[j]).sum().item()
            union = (t[k] | p[j]).sum().item()
            ious.append(inter / union if union else 0.0)
    if not ious:
        raise DataError(truth_spec, "no image ids in common with the pseudo-masked dataset")
    return float(np.mean(ious)), len(ious)
