"""CLI commands of instaseg.data: ``instaseg data check|stats|convert`` (registered by :func:`register`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

DATASET_HELP = (
    "Dataset spec: coco:ANNOTATIONS.json[:IMAGE_DIR], cityscapes:ROOT[:SPLIT], folder:ROOT, "
    "shapes[:N[:SIZE]], or a path (a .json is COCO, a folder is detected)."
)
SPLIT_HELP = "train / val (80/20 split for coco and folder), or omit for everything."

data_app = typer.Typer(
    name="data",
    help="Inspect, lint and convert datasets (check, stats, convert, pseudo-masks).",
    no_args_is_help=True,
    add_completion=False,
)


def _refuse_labelme(spec: str) -> None:
    """A labelme folder is not a dataset format: say how to convert it instead of a layout error."""
    from instaseg.errors import DataError

    path = Path(spec)
    if path.is_dir() and not (path / "leftImg8bit").is_dir():
        jsons = sorted(path.glob("*.json"))[:20]
        if jsons and any(b'"shapes"' in j.read_bytes()[:200_000] for j in jsons):
            raise DataError(
                path, f"looks like a labelme folder: convert it first: instaseg data convert {path} out.json"
            )


def _is_points(spec: str) -> bool:
    """Whether ``spec`` names point clouds (``points_shapes``, ``points:``, .ply/.npz, S3DIS rooms)."""
    from instaseg.data.build import parse_spec

    try:
        return parse_spec(spec)[0] in ("points", "points_shapes")
    except Exception:  # the image path reports a bad spec with its own message
        return False


@data_app.command("check")
def check_cmd(
    dataset: Annotated[str, typer.Argument(help=DATASET_HELP, show_default=False)],
    split: Annotated[str | None, typer.Option(help=SPLIT_HELP)] = None,
    max_examples: Annotated[int, typer.Option(help="Examples listed per problem kind.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the JSON report to this file.")
    ] = None,
) -> None:
    """Read every image and annotation and report problems with counts and examples.

    Exit code 0: clean; 1: problems found; 2: unusable input (missing or malformed file, bad spec).
    """
    from instaseg.data.check import check_spec

    if _is_points(dataset):
        from instaseg.data.build import build_dataset
        from instaseg.data.points.check import check_points

        report = check_points(build_dataset(dataset, split=split), dataset, max_examples=max_examples)
        typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
        if not report.ok:
            raise typer.Exit(1)
        return
    _refuse_labelme(dataset)
    report = check_spec(dataset, split=split, max_examples=max_examples)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("stats")
def stats_cmd(
    dataset: Annotated[str, typer.Argument(help=DATASET_HELP, show_default=False)],
    split: Annotated[str | None, typer.Option(help=SPLIT_HELP)] = None,
    preview: Annotated[
        Path | None, typer.Option(help="Write a PNG grid of images with their masks drawn.")
    ] = None,
    num_preview: Annotated[int, typer.Option(help="Images in the preview grid.")] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """Count images, instances, classes, object sizes; optionally draw a preview PNG.

    Sizes use COCO's mask-area thresholds (small < 32^2 <= medium < 96^2 <= large).
    """
    from instaseg.data.build import build_dataset
    from instaseg.data.stats import compute_stats, format_stats, render_preview, save_png
    from instaseg.errors import DataError

    if preview is not None and preview.suffix.lower() != ".png":
        raise DataError(preview, "preview must be a .png file")
    if _is_points(dataset):
        from instaseg.data.points.check import format_point_stats, point_stats

        pstats = point_stats(build_dataset(dataset, split=split), dataset)
        typer.echo(json.dumps(pstats, indent=2) if as_json else format_point_stats(pstats))
        return
    _refuse_labelme(dataset)
    ds = build_dataset(dataset, split=split)
    stats = compute_stats(ds, source=dataset if split is None else f"{dataset} (split {split})")
    from instaseg.data.video import format_video_stats, is_video_dataset, video_stats

    if is_video_dataset(ds):
        stats["video"] = video_stats(ds)
    if preview is not None:
        if len(ds) == 0:
            typer.echo("instaseg: no images: preview not written", err=True)
        else:
            stats["preview"] = str(save_png(render_preview(ds, num_images=num_preview), preview))
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
    else:
        typer.echo(format_stats(stats))
        if "video" in stats:
            typer.echo(format_video_stats(stats["video"]))
        if "preview" in stats:
            typer.echo(f"preview: {stats['preview']}")


def _detect_source(source: str) -> str:
    """labelme | via | dataset for ``instaseg data convert``'s SOURCE."""
    from instaseg.data.build import FORMATS
    from instaseg.data.io import read_json
    from instaseg.errors import DataError

    prefix = source.split(":", 1)[0].lower()
    if prefix in FORMATS:
        return "dataset"
    path = Path(source)
    if path.is_dir():
        if (path / "leftImg8bit").is_dir():
            return "dataset"
        return "labelme" if any(path.glob("*.json")) else "dataset"
    if path.is_file() and path.suffix.lower() == ".json":
        data = read_json(path)
        if isinstance(data, dict):
            if "shapes" in data:
                return "labelme"
            if "images" in data or "annotations" in data:
                return "dataset"
            entries = data.get("_via_img_metadata", data)
            if "_via_img_metadata" in data or (
                isinstance(entries, dict)
                and any(isinstance(v, dict) and "regions" in v for v in entries.values())
            ):
                return "via"
        raise DataError(path, "cannot tell the format: not labelme, VIA 2 or COCO JSON (use --from)")
    if not path.exists():
        raise DataError(path, "no such file or folder")
    raise DataError(path, "cannot tell the format (use --from labelme|via|dataset)")


@data_app.command("convert")
def convert_cmd(
    source: Annotated[
        str,
        typer.Argument(
            help="A labelme folder (or one labelme .json), a VIA 2 project/export .json, or a dataset spec.",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Argument(help="COCO JSON to write.", show_default=False)],
    source_format: Annotated[str, typer.Option("--from", help="auto | labelme | via | dataset")] = "auto",
    labels: Annotated[
        Path | None,
        typer.Option(help="Class names, one a line (labelme labels.txt): fixes the class order and ids."),
    ] = None,
    class_attribute: Annotated[
        str | None, typer.Option(help="VIA region attribute holding the class (default: class).")
    ] = None,
    class_name: Annotated[
        str | None,
        typer.Option(help="VIA: the one class of a single-class project (every region gets it)."),
    ] = None,
    image_dir: Annotated[
        Path | None, typer.Option(help="VIA: folder of the images (default: the JSON's).")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Dataset specs: " + SPLIT_HELP)] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", "--force", help="Replace OUTPUT if it exists.")
    ] = False,
) -> None:
    """Convert labelme JSON, VIA 2 JSON or any dataset spec to a COCO instances JSON.

    Image paths in the output are relative to OUTPUT's folder, so `coco:OUTPUT` loads it as is.
    """
    from instaseg.data.convert import labelme_to_coco, read_labels_file, spec_to_coco, write_conversion
    from instaseg.data.via import via_to_coco
    from instaseg.errors import ConfigError, DataError

    kind = _detect_source(source) if source_format == "auto" else source_format
    if kind not in ("labelme", "via", "dataset"):
        raise ConfigError(f"--from must be auto, labelme, via or dataset, got {source_format!r}")
    if output.exists() and not overwrite:
        raise DataError(output, "already exists (pass --overwrite to replace it)")
    names = read_labels_file(labels) if labels is not None else None
    out_dir = output.parent
    if kind == "labelme":
        conv = labelme_to_coco(source, output_dir=out_dir, labels=names)
    elif kind == "via":
        conv = via_to_coco(
            source,
            output_dir=out_dir,
            image_dir=image_dir,
            class_attribute=class_attribute,
            class_name=class_name,
            labels=names,
        )
    else:
        if names is not None:
            raise ConfigError("--labels applies to labelme and VIA sources only")
        conv = spec_to_coco(source, output_dir=out_dir, split=split)
    write_conversion(conv, output, overwrite=overwrite)
    typer.echo(f"wrote {output} ({kind}): {conv.summary()}")
    if conv.images_to_write:
        typer.echo(f"wrote {len(conv.images_to_write)} images to {out_dir / 'images'}")
    typer.echo(f"use it as: coco:{output}")


@data_app.command("pseudo-masks")
def pseudo_masks_cmd(
    dataset: Annotated[
        str, typer.Argument(help=DATASET_HELP + " Only its boxes are used.", show_default=False)
    ],
    output: Annotated[Path, typer.Argument(help="COCO JSON to write.", show_default=False)],
    method: Annotated[
        str, typer.Option(help="grabcut (GrabCut in each box), ellipse (the ellipse inscribed in each box: "
                               "blob-like objects such as cells) or box (filled box).")
    ] = "grabcut",
    fallback: Annotated[
        str, typer.Option(help="Shape for collapsed GrabCut results and tiny boxes: box (filled) or ellipse.")
    ] = "box",
    compare_to: Annotated[
        str | None, typer.Option(help="Dataset with the true masks: report the pseudo-masks' mean IoU.")
    ] = None,
    split: Annotated[str | None, typer.Option(help=SPLIT_HELP)] = None,
    min_side: Annotated[
        float, typer.Option(help="GrabCut: boxes with a side below this (px) get the --fallback shape.")
    ] = 8.0,
    iterations: Annotated[int, typer.Option(help="GrabCut iterations.")] = 5,
    core: Annotated[
        str | None,
        typer.Option(help="GrabCut: a central core of each box is definite object, given as LO,HI "
                          "fractions of the box (e.g. 0.4,0.6); its colours seed the object model and "
                          "GrabCut cannot cut it away. Default: no core (OpenCV's rectangle mode)."),
    ] = None,
    core_shape: Annotated[
        str, typer.Option(help="Shape of --core: band (vertical band LO..HI across, 0.1..0.9 down; "
                               "upright objects such as people), ellipse (inscribed in LO..HI) or rect.")
    ] = "band",
    force: Annotated[
        bool, typer.Option("--overwrite", "--force", help="Replace OUTPUT if it exists.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Masks from boxes: write a COCO file whose masks come from GrabCut (or the inscribed ellipse, or
    the filled box).

    GrabCut results that collapse and tiny boxes get the --fallback shape (counted); crowd boxes get
    the filled box; boxes outside the image are clipped, empty ones skipped (counted).
    """
    from instaseg.data.convert import Conversion, write_conversion
    from instaseg.data.pseudo_masks import (
        CORE_SHAPES,
        FALLBACKS,
        METHODS,
        compare_masks,
        load_box_source,
        pseudo_mask_dataset,
    )
    from instaseg.errors import ConfigError, DataError

    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if fallback not in FALLBACKS:
        raise ConfigError(f"--fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    if core_shape not in CORE_SHAPES:
        raise ConfigError(f"--core-shape must be one of {', '.join(CORE_SHAPES)}, got {core_shape!r}")
    core_range = _parse_core(core)
    if output.suffix.lower() != ".json":
        raise DataError(output, "output must be a .json file")
    if output.exists() and not force:
        raise DataError(output, "already exists (pass --overwrite to replace it)")
    _refuse_labelme(dataset)
    images, categories = load_box_source(dataset, split=split)
    coco, masks, report = pseudo_mask_dataset(
        images, categories, method=method, output_dir=output.parent.resolve(), min_side=min_side,
        iterations=iterations, core=core_range, core_shape=core_shape, fallback=fallback,
    )
    if compare_to is not None:
        report.mean_iou, report.compared = compare_masks(masks, compare_to, split=split)
    conv = Conversion(coco=coco)
    for im in images:  # synthetic images have no file: write them beside the JSON
        if im.image is not None:
            conv.images_to_write[output.parent / "images" / f"{im.id}.png"] = _png_bytes(im.image, output)
    write_conversion(conv, output, overwrite=force)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
    typer.echo(f"wrote {output}; use it as: coco:{output}")


def _parse_core(text: str | None) -> tuple[float, float] | None:
    """``--core LO,HI`` as two box fractions with 0 <= LO < HI <= 1 (one-line error otherwise)."""
    from instaseg.errors import ConfigError

    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--core must be LO,HI (two box fractions, e.g. 0.4,0.6), got {text!r}") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"--core needs 0 <= LO < HI <= 1, got {text!r}")
    return lo, hi


def _png_bytes(image: object, where: Path) -> bytes:
    import cv2
    import numpy as np

    from instaseg.errors import DataError

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(np.asarray(image)[..., ::-1]))
    if not ok:
        raise DataError(where, "cannot encode an image as PNG")
    return buf.tobytes()


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app (idempotent: ``main()`` may run many times)."""
    if any(group.typer_instance is data_app for group in app.registered_groups):
        return
    app.add_typer(data_app, name="data")
