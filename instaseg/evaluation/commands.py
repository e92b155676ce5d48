"""CLI commands of instaseg.evaluation: ``instaseg visualize`` (``instaseg evaluate``, which can run a
model, is in :mod:`instaseg.predict.commands`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from instaseg.errors import ConfigError, DataError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def visualize(
    source: str = typer.Argument(..., help="A dataset spec/path, or a COCO results JSON (then --data)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the PNG files."),
    data: str | None = typer.Option(None, "--data", "-d", help="The dataset a results JSON refers to."),
    split: str | None = typer.Option(None, help="Dataset split (train/val; default: the whole spec)."),
    num: int = typer.Option(8, min=1, help="How many images to draw."),
    score_thresh: float = typer.Option(0.5, "--score-thresh", help="Draw predictions with score >= this."),
) -> None:
    """Draw a dataset's ground truth, or predictions beside ground truth, as PNG figures."""
    from instaseg.evaluation.report import save_sample_figures

    results = None
    if _is_results_file(source):
        if data is None:
            raise ConfigError(f"{source}: a results file needs --data DATASET to draw the images")
        from instaseg.evaluation.results import load_results
        from instaseg.evaluation.summary import resolve_ground_truth

        gt, dataset, notes = resolve_ground_truth(data, split)
        if dataset is None:
            raise DataError(data, "; ".join(notes) or "no images to draw")
        results = load_results(source, gt, subset=split not in (None, "all"))
    else:
        from instaseg.data.build import build_dataset

        dataset = build_dataset(source, split=split)
    names = dict(zip(dataset.category_ids, dataset.class_names, strict=True))
    paths = save_sample_figures(
        dataset, results, names, Path(output), num=num, score_thresh=score_thresh
    )
    _log(f"wrote {len(paths)} figures to {output}")


def _is_results_file(source: str) -> bool:
    p = Path(source)
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    with open(p, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("visualize")(visualize)
