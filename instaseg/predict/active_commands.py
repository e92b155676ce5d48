"""``instaseg active select``: pick the pool images worth labelling next (see :mod:`.active`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

active_app = typer.Typer(name="active", help="Active learning: choose which images to label next.",
                         no_args_is_help=True, add_completion=False)


@active_app.command("select")
def select_cmd(
    checkpoint: Annotated[str, typer.Option(help="Checkpoint file or run directory.")],
    pool: Annotated[Path, typer.Option(help="Folder of unlabelled images.")],
    budget: Annotated[int, typer.Option(help="How many images to choose.")],
    output: Annotated[Path, typer.Option(help="JSON to write: the chosen images with their scores.")] = Path(
        "selection.json"),
    labelled: Annotated[Path | None, typer.Option(
        help="Folder of the images labelled already: the diversity bonus keeps away from them.")] = None,
    diversity_weight: Annotated[float, typer.Option(help="Weight of the diversity bonus.")] = 0.5,
    typicality_weight: Annotated[float, typer.Option(
        help="Weight of the typicality bonus (closeness to the pool's other images).")] = 0.5,
    richness_weight: Annotated[float, typer.Option(
        help="Weight of the bonus for images with more expected objects (sum of detection scores); "
             "0 where labelling is paid per object.")] = 1.0,
    score_thresh: Annotated[float, typer.Option(help="Detections scored from this score.")] = 0.05,
    force: Annotated[
        bool, typer.Option("--overwrite", "--force", help="Replace OUTPUT if it exists.")
    ] = False,
) -> None:
    """Rank the pool by uncertainty, flip disagreement, typicality, richness and diversity; write the
    chosen list."""
    import numpy as np

    from instaseg.errors import ConfigError, DataError
    from instaseg.fileio import atomic_open
    from instaseg.predict import active
    from instaseg.predict.predictor import load

    if budget < 1:
        raise ConfigError(f"--budget must be >= 1, got {budget}")
    if output.exists() and not force:
        raise DataError(output, "already exists (pass --overwrite to replace it)")
    files, skipped = active.list_pool(pool)
    if skipped:
        typer.echo(f"skipped {len(skipped)} non-image files in {pool} (e.g. {skipped[0]})", err=True)
    if not files:
        raise DataError(pool, "no images in the pool")
    if budget > len(files):
        typer.echo(f"--budget {budget} is more than the pool's {len(files)} images: choosing all", err=True)
    known: list[Path] = []
    if labelled is not None:
        known, _ = active.list_pool(labelled, "--labelled")
        if not known:
            raise DataError(labelled, "no images in the labelled folder")
    predictor = load(checkpoint, score_thresh=score_thresh)
    scores, embeddings = [], []
    for f in files:
        s, e = active.score_image(predictor, f)
        scores.append(s)
        embeddings.append(e)
    picks = active.select(scores, np.stack(embeddings), budget, diversity_weight=diversity_weight,
                          typicality_weight=typicality_weight, richness_weight=richness_weight,
                          labelled=active.embed_files(predictor, known) if known else None)
    with atomic_open(output, "w") as fh:
        json.dump(active.to_json(picks, skipped=skipped, pool=str(pool), budget=budget), fh, indent=2)
    for p in picks:
        typer.echo(f"{p.rank:4d}  {p.informativeness:.3f}  {Path(p.file).name}")
    typer.echo(f"wrote {output} ({len(picks)} images)")


@active_app.command("prelabel")
def prelabel_cmd(
    checkpoint: Annotated[str, typer.Option(help="Checkpoint file or run directory.")],
    images: Annotated[Path, typer.Option(help="A selection JSON (active select) or a folder of images.")],
    output: Annotated[Path, typer.Option(help="Folder to write the pre-labels to.")],
    fmt: Annotated[str, typer.Option("--format", help="labelme | coco | labelstudio | cvat")] = "labelme",
    score_thresh: Annotated[float, typer.Option(help="Keep detections from this score.")] = 0.5,
    force: Annotated[
        bool, typer.Option("--overwrite", "--force", help="Replace existing files.")
    ] = False,
) -> None:
    """Write the model's predictions as editable annotations (correct instead of drawing)."""
    import numpy as np

    from instaseg.data.io import read_image, read_json
    from instaseg.errors import ConfigError, DataError
    from instaseg.predict import active, prelabel
    from instaseg.predict.predictor import load

    if fmt not in prelabel.FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(prelabel.FORMATS)}, got {fmt!r}")
    if images.is_dir():
        files, skipped = active.list_pool(images)
        if skipped:
            typer.echo(f"skipped {len(skipped)} non-image files in {images} (e.g. {skipped[0]})", err=True)
    else:
        data = read_json(images)
        if not isinstance(data, dict) or not isinstance(data.get("selected"), list):
            raise DataError(images, "not a selection JSON (no 'selected' list): pass a folder or the "
                                    "output of instaseg active select")
        files = [Path(s["file"]) for s in data["selected"]]
    if not files:
        raise DataError(images, "no images to pre-label")
    predictor = load(checkpoint, score_thresh=score_thresh)
    items = []
    for f in files:
        image = read_image(f)
        inst = predictor.predict(image)
        masks = np.asarray(inst.to_dense_masks(), dtype=bool)
        items.append(prelabel.Prelabel(f, image.shape[0], image.shape[1], masks,
                                       predictor.class_names_of(inst), inst.scores.tolist()))
    output.mkdir(parents=True, exist_ok=True)
    written = prelabel.write_prelabels(items, output, fmt, predictor.class_names,
                                       model_version=predictor.name, force=force)
    n = sum(len(it.names) for it in items)
    typer.echo(f"wrote {len(written)} {fmt} file(s) to {output}: {n} instances in {len(items)} images")


def register(app: typer.Typer) -> None:
    """Add ``instaseg active`` to the root app (idempotent)."""
    if any(group.typer_instance is active_app for group in app.registered_groups):
        return
    app.add_typer(active_app, name="active")
