"""Build any supported dataset from one spec string.

Specs (``FORMAT:ARGS``)::

    coco:ANNOTATIONS.json[:IMAGE_DIR]   COCO instances JSON (IMAGE_DIR guessed when omitted)
    cityscapes:ROOT[:SPLIT]             leftImg8bit/ + gtFine/ *_instanceIds.png
    folder:ROOT                         images/+masks/, PNGImages/+PedMasks/ or <id>/images+<id>/masks
    shapes[:N[:SIZE]]                   synthetic shapes, N training images of SIZE x SIZE (default 1000, 128)
    points_shapes[:N[:POINTS]]          synthetic indoor point-cloud scenes (default 200 scenes, 6000 points)
    points:PATH                         point clouds: a .ply/.npz file, folder, glob, or S3DIS rooms
    video_shapes[:N[:FRAMES[:SIZE]]]    synthetic videos with track ids (default 40 videos, 16 frames, 128)
    ytvis:ANNOTATIONS.json[:FRAMES_DIR] YouTube-VIS videos (frames of every video, with track ids)
    shapes_panoptic[:N[:SIZE]]          the shapes as things on 2-3 textured stuff regions (panoptic)
    coco_panoptic:PANOPTIC.json[:PNG_DIR[:IMAGE_DIR]]   COCO panoptic JSON + PNGs (PNG_DIR default: the
                                        JSON path without .json; split like coco)
    cityscapes_panoptic:ROOT[:SPLIT]    Cityscapes gtFine as panoptic (splits like cityscapes)

A spec without a known ``FORMAT:`` prefix that names an existing path is detected: a ``.json`` file is
COCO, a folder with ``leftImg8bit/`` and ``gtFine/`` is Cityscapes, any other folder is ``folder``.

``split``: ``None`` (or ``"all"``) gives everything the spec names. ``shapes`` generates a disjoint
stream per split (``val``/``test`` have ``N // 5`` images); ``cityscapes`` reads the split's folders
(the spec's SPLIT wins); ``folder`` reads ``ROOT/<split>/`` when that folder exists. Otherwise
(always for ``coco``) ``"train"``/``"val"`` take a deterministic 80/20 split by index (every fifth
image, index % 5 == 4, is ``val``).
Pass ``split`` to a ``coco`` spec only to carve a held-out part from one JSON; a separate val JSON
should be built with ``split=None``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from instaseg.data._split import SplitDataset, split_8020
from instaseg.data.base import InstanceDataset
from instaseg.errors import ConfigError, DataError

SPLITS_8020 = ("train", "val")


def _check_split(split: str | None, allowed: tuple[str, ...], fmt: str) -> str | None:
    if split in (None, "all"):
        return None
    if split not in allowed:
        raise ConfigError(f"{fmt}: unknown split {split!r} (use one of {[*allowed, None]})")
    return split


def _int_arg(value: str, what: str, spec: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"dataset spec {spec!r}: {what} must be an integer, got {value!r}") from None


def _build_shapes(args: str, spec: str, split: str | None, transform: Any, options: dict) -> InstanceDataset:
    from instaseg.data.shapes import ShapesDataset
    from instaseg.data.shapes_panoptic import ShapesPanopticDataset

    cls = ShapesPanopticDataset if spec.strip().lower().startswith("shapes_panoptic") else ShapesDataset
    parts = args.split(":") if args else []
    if len(parts) > 2:
        raise ConfigError(f"dataset spec {spec!r}: expected shapes[:N[:SIZE]]")
    n = _int_arg(parts[0], "N", spec) if parts and parts[0] else 1000
    size = _int_arg(parts[1], "SIZE", spec) if len(parts) > 1 else 128
    split = _check_split(split, ("train", "val", "test"), "shapes") or "train"
    if split != "train":
        n = max(1, n // 5)
    return cls(n, size, split=split, transform=transform, **options)


def _build_video_shapes(
    args: str, spec: str, split: str | None, transform: Any, options: dict
) -> InstanceDataset:
    from instaseg.data.video_shapes import VideoShapesDataset

    parts = args.split(":") if args else []
    if len(parts) > 3:
        raise ConfigError(f"dataset spec {spec!r}: expected video_shapes[:N[:FRAMES[:SIZE]]]")
    names = ("N", "FRAMES", "SIZE")
    vals = [_int_arg(p, names[i], spec) if p else None for i, p in enumerate(parts)]
    vals += [None] * (3 - len(vals))
    n, frames, size = vals[0] or 40, vals[1] or 16, vals[2] or 128
    split = _check_split(split, ("train", "val", "test"), "video_shapes") or "train"
    if split != "train":
        n = max(1, n // 5)
    return VideoShapesDataset(n, frames, size, split=split, transform=transform, **options)


def _build_ytvis(args: str, spec: str, split: str | None, transform: Any, options: dict) -> InstanceDataset:
    _need_path(args, "ytvis", "ytvis:ANNOTATIONS.json[:FRAMES_DIR]")
    from instaseg.data.ytvis import YtvisDataset

    ann, frames_dir = coco_args(args)
    return YtvisDataset(ann, frames_dir, transform=transform, **options)


def _need_path(args: str, fmt: str, usage: str) -> None:
    if not args:
        raise ConfigError(f"dataset spec {fmt!r} needs a path: {usage}")


def coco_args(args: str) -> tuple[str, str | None]:
    """Split the ARGS of ``coco:ANNOTATIONS.json[:IMAGE_DIR]`` into ``(json path, image dir or None)``."""
    cut = args.lower().find(".json:")
    if cut < 0:
        return args, None
    return args[: cut + 5], args[cut + 6 :] or None


def _build_coco(args: str, spec: str, split: str | None, transform: Any, options: dict) -> InstanceDataset:
    _need_path(args, "coco", "coco:ANNOTATIONS.json[:IMAGE_DIR]")
    from instaseg.data.coco import CocoDataset

    ann, image_dir = coco_args(args)
    split = _check_split(split, SPLITS_8020, "coco")
    dataset = CocoDataset(ann, image_dir, transform=None if split else transform, **options)
    return _carve(dataset, split, transform)


def _build_cityscapes(
    args: str, spec: str, split: str | None, transform: Any, options: dict
) -> InstanceDataset:
    _need_path(args, "cityscapes", "cityscapes:ROOT[:SPLIT]")
    from instaseg.data.cityscapes import CityscapesDataset

    root, own_split = _cityscapes_root(args, split)
    return CityscapesDataset(root, own_split, transform=transform, **options)


def _cityscapes_root(args: str, split: str | None) -> tuple[str, str | None]:
    """``(ROOT, SPLIT or None)`` of ``ROOT[:SPLIT]``; the spec's SPLIT wins over ``split``."""
    root, own_split = args, None
    head, sep, tail = args.rpartition(":")
    if sep and tail and "/" not in tail and "\\" not in tail and not Path(args).exists():
        root, own_split = head, tail
    if own_split is None:
        own_split = None if split in (None, "all") else split
    return root, own_split


def _build_folder(args: str, spec: str, split: str | None, transform: Any, options: dict) -> InstanceDataset:
    _need_path(args, "folder", "folder:ROOT")
    from instaseg.data.folder import FolderDataset

    split = _check_split(split, SPLITS_8020, "folder")
    if split is not None and (Path(args) / split).is_dir():  # ROOT/train/, ROOT/val/: the split's own folder
        return FolderDataset(Path(args) / split, transform=transform, **options)
    dataset = FolderDataset(args, transform=None if split else transform, **options)
    return _carve(dataset, split, transform)


def _build_coco_panoptic(
    args: str, spec: str, split: str | None, transform: Any, options: dict
) -> InstanceDataset:
    _need_path(args, "coco_panoptic", "coco_panoptic:PANOPTIC.json[:PNG_DIR[:IMAGE_DIR]]")
    from instaseg.data.coco_panoptic import CocoPanopticDataset

    ann, rest = coco_args(args)
    png_dir, _, image_dir = (rest or "").partition(":")
    split = _check_split(split, SPLITS_8020, "coco_panoptic")
    dataset = CocoPanopticDataset(ann, png_dir or None, image_dir or None,
                                  transform=None if split else transform, **options)
    return _carve(dataset, split, transform)


def _build_cityscapes_panoptic(
    args: str, spec: str, split: str | None, transform: Any, options: dict
) -> InstanceDataset:
    _need_path(args, "cityscapes_panoptic", "cityscapes_panoptic:ROOT[:SPLIT]")
    from instaseg.data.cityscapes_panoptic import CityscapesPanopticDataset

    root, own_split = _cityscapes_root(args, split)
    return CityscapesPanopticDataset(root, own_split, transform=transform, **options)


def _carve(dataset: InstanceDataset, split: str | None, transform: Any) -> InstanceDataset:
    if split is None:
        return dataset
    return SplitDataset(dataset, split_8020(len(dataset), split), split=split, transform=transform)


def _build_points_shapes(args: str, spec: str, split: str | None, transform: Any, options: dict) -> Any:
    from instaseg.data.points.synthetic import SyntheticPointScenes

    parts = args.split(":") if args else []
    if len(parts) > 2:
        raise ConfigError(f"dataset spec {spec!r}: expected points_shapes[:N[:POINTS]]")
    n = _int_arg(parts[0], "N", spec) if parts and parts[0] else 200
    points = _int_arg(parts[1], "POINTS", spec) if len(parts) > 1 else 6000
    split = _check_split(split, ("train", "val", "test"), "points_shapes") or "train"
    if split != "train":
        n = max(1, n // 5)
    return SyntheticPointScenes(n, points, split=split, transform=transform, **options)


def _build_points(args: str, spec: str, split: str | None, transform: Any, options: dict) -> Any:
    _need_path(args, "points", "points:FILE|FOLDER|GLOB")
    from instaseg.data.points.files import PointFileDataset, list_point_files

    paths = list_point_files(args)
    split = _check_split(split, SPLITS_8020, "points")
    if split is not None and len(paths) > 1:
        paths = [paths[i] for i in split_8020(len(paths), split)]
    return PointFileDataset(paths, transform=transform, **options)


Builder = Callable[[str, str, "str | None", Any, dict], InstanceDataset]

FORMATS: dict[str, tuple[Builder, str]] = {
    "coco": (_build_coco, "coco:ANNOTATIONS.json[:IMAGE_DIR]  COCO instances JSON"),
    "cityscapes": (_build_cityscapes, "cityscapes:ROOT[:SPLIT]  Cityscapes gtFine instanceIds"),
    "folder": (_build_folder, "folder:ROOT  images/+masks/, PNGImages/+PedMasks/, <id>/images+masks/"),
    "shapes": (_build_shapes, "shapes[:N[:SIZE]]  synthetic shapes, generated on the fly"),
    "points_shapes": (_build_points_shapes, "points_shapes[:N[:POINTS]]  synthetic indoor point scenes"),
    "points": (_build_points, "points:FILE|FOLDER|GLOB  point clouds (.ply, .npz, S3DIS rooms)"),
    "video_shapes": (_build_video_shapes,
                     "video_shapes[:N[:FRAMES[:SIZE]]]  synthetic videos with track ids"),
    "ytvis": (_build_ytvis, "ytvis:ANNOTATIONS.json[:FRAMES_DIR]  YouTube-VIS videos"),
    "shapes_panoptic": (_build_shapes, "shapes_panoptic[:N[:SIZE]]  shapes on stuff regions (panoptic)"),
    "coco_panoptic": (_build_coco_panoptic,
                      "coco_panoptic:PANOPTIC.json[:PNG_DIR[:IMAGE_DIR]]  COCO panoptic JSON + PNGs"),
    "cityscapes_panoptic": (_build_cityscapes_panoptic,
                            "cityscapes_panoptic:ROOT[:SPLIT]  Cityscapes gtFine as panoptic"),
}


def list_formats() -> list[str]:
    """Names of the supported dataset formats (the ``FORMAT`` in ``FORMAT:ARGS`` specs)."""
    return list(FORMATS)


def format_help() -> str:
    """One line per format: its spec syntax and what it reads."""
    return "\n".join(usage for _, usage in FORMATS.values())


def detect_format(path: str | Path) -> str:
    """Guess the format of an existing path: ``.json`` file -> coco, Cityscapes layout, else folder."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".ply", ".npz"):
        return "points"
    if p.is_dir() and ((p / "Annotations").is_dir() or any(p.glob("*.ply")) or any(p.glob("*.npz"))):
        return "points"
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "coco"
        raise DataError(p, "cannot tell the dataset format of this file (expected a COCO .json)")
    if (p / "leftImg8bit").is_dir() and (p / "gtFine").is_dir():
        return "cityscapes"
    return "folder"


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a dataset spec into ``(format, args)``; raise ConfigError for an unknown format."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"empty dataset spec {spec!r}: use one of {list_formats()}")
    spec = spec.strip()
    fmt, sep, args = spec.partition(":")
    if fmt.lower() in FORMATS:
        return fmt.lower(), args
    if Path(spec).exists():
        return detect_format(spec), spec
    if sep and len(fmt) > 1:
        raise ConfigError(f"unknown dataset format {fmt!r} in {spec!r} (known: {', '.join(FORMATS)})")
    raise DataError(
        spec, f"no such file or folder, and not a FORMAT:ARGS spec (formats: {', '.join(FORMATS)})"
    )


def build_dataset(
    spec: str, *, split: str | None = None, transform: Any = None, **options: Any
) -> InstanceDataset:
    """Build the dataset named by ``spec`` (see the module docstring for the formats and splits).

    ``transform`` maps a :class:`~instaseg.data.base.Record` to ``(image, target)``; ``options`` go to
    the format's dataset class (e.g. ``on_error="skip"`` for COCO, ``seed=1`` for shapes).
    """
    fmt, args = parse_spec(spec)
    builder, _ = FORMATS[fmt]
    return builder(args, spec, split, transform, options)
