"""``instaseg evaluate-interactive``: the click protocol on a dataset, for one or more backends."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate_interactive(
    backend: list[str] = typer.Option(
        ..., "--backend", "-b",
        help="'grabcut', 'model RUN' (a trained click model) or 'sam CKPT'; repeat to compare.",
    ),
    data: str = typer.Option(..., "--data", "-d", help="Dataset spec or path (any instance dataset)."),
    split: str | None = typer.Option(None, help="Dataset split (train/val; default: the whole spec)."),
    max_clicks: int = typer.Option(20, "--max-clicks", min=1, help="Clicks per object at most."),
    max_objects: int | None = typer.Option(None, "--max-objects", min=1, help="Evaluate N objects at most."),
    max_per_image: int | None = typer.Option(
        None, "--max-per-image", min=1, help="At most N objects per image (the largest)."
    ),
    min_area: int = typer.Option(25, "--min-area", min=1, help="Skip objects smaller than this (pixels)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write interactive.json and miou_vs_clicks.png here."
    ),
    device: str = typer.Option("cpu", help="Device for model/sam backends."),
) -> None:
    """Interactive segmentation measured in clicks: NoC@85/90, mIoU after k clicks, failures, s/click."""
    from instaseg.data.build import build_dataset
    from instaseg.predict.interactive_eval import build_backend, evaluate_backend, format_table, write_results

    backends = [(name, build_backend(name, device=device)) for name in backend]  # errors before any work
    dataset = build_dataset(data, split=split)
    results, runs = {}, {}
    for name, segmenter in backends:
        typer.echo(f"{name}: clicking on {data}" + (f" ({split})" if split else ""))
        results[name], runs[name] = evaluate_backend(
            segmenter, dataset, max_clicks=max_clicks, min_area=min_area, max_objects=max_objects,
            max_per_image=max_per_image, log=typer.echo,
        )
    typer.echo(format_table(results))
    if output is not None:
        json_path, png = write_results(results, output, title=f"{data}", runs=runs)
        typer.echo(f"wrote {json_path} and {png}")


def register(app: typer.Typer) -> None:
    """Add this command to the root app."""
    app.command("evaluate-interactive")(evaluate_interactive)
