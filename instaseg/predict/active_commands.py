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
    diversity_weight: Annotated[float, typer.Option(help="Weight of the diversity bonus.")] = 0.5,
    score_thresh: Annotated[float, typer.Option(help="Detections scored from this score.")] = 0.05,
    force: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Rank the pool by uncertainty, flip disagreement and diversity; write the chosen list."""
    import numpy as np

    from instaseg.errors import ConfigError, DataError
    from instaseg.fileio import atomic_open
    from instaseg.predict import active
    from instaseg.predict.predictor import load

    if budget < 1:
        raise ConfigError(f"--budget must be >= 1, got {budget}")
    if output.exists() and not force:
        raise DataError(output, "already exists (pass --force to replace it)")
    files, skipped = active.list_pool(pool)
    if skipped:
        typer.echo(f"skipped {len(skipped)} non-image files in {pool} (e.g. {skipped[0]})", err=True)
    if not files:
        raise DataError(pool, "no images in the pool")
    if budget > len(files):
        typer.echo(f"--budget {budget} is more than the pool's {len(files)} images: choosing all", err=True)
    predictor = load(checkpoint, score_thresh=score_thresh)
    scores, embeddings = [], []
    for f in files:
        s, e = active.score_image(predictor, f)
        scores.append(s)
        embeddings.append(e)
    picks = active.select(scores, np.stack(embeddings), budget, diversity_weight=diversity_weight)
    with atomic_open(output, "w") as fh:
        json.dump(active.to_json(picks, skipped=skipped, pool=str(pool), budget=budget), fh, indent=2)
    for p in picks:
        typer.echo(f"{p.rank:4d}  {p.informativeness:.3f}  {Path(p.file).name}")
    typer.echo(f"wrote {output} ({len(picks)} images)")


def register(app: typer.Typer) -> None:
    """Add ``instaseg active`` to the root app (idempotent)."""
    if any(group.typer_instance is active_app for group in app.registered_groups):
        return
    app.add_typer(active_app, name="active")
