"""``instaseg annotate``: the browser annotation tool's command (registered by :func:`register`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from instaseg.errors import CheckpointError, ConfigError

IMAGE_TASKS = ("instance", "panoptic")


def load_prelabel_model(checkpoint: Path, *, device: str, score_thresh: float) -> Any:
    """A :class:`~instaseg.predict.predictor.Predictor` for ``checkpoint`` (run directory, ``.pt`` or
    ``.onnx``); CheckpointError (one line) for a model that does not segment instances in images."""
    from instaseg.predict.predictor import load

    if Path(checkpoint).suffix.lower() != ".onnx":
        from instaseg.models.checkpoint import load_checkpoint
        from instaseg.models.registry import model_task

        spec = load_checkpoint(checkpoint).get("model_spec")
        name = spec.get("name") if isinstance(spec, dict) else None
        try:
            task = model_task(str(name))
        except ConfigError:
            task = None
        if task not in IMAGE_TASKS:
            hint = " (pass it as --click-checkpoint)" if task == "interactive" else ""
            raise CheckpointError(
                f"{checkpoint}: not an image instance-segmentation model (model {name!r} does "
                f"{task or 'an unknown task'}){hint}; --checkpoint pre-labels with an instance model"
            )
    return load(checkpoint, device=device, score_thresh=score_thresh)


def annotate(
    images: Path = typer.Argument(..., help="Folder of images to label."),
    output: Path = typer.Option(..., "--output", "-o", help="COCO JSON to write (and resume from)."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", "-c", help="Run directory or checkpoint of an instance model: pre-labels."
    ),
    classes: str | None = typer.Option(
        None, "--classes", help="Comma-separated class names (default: the model's, or the file's)."
    ),
    click_checkpoint: Path | None = typer.Option(
        None, "--click-checkpoint", help="Run directory of a trained click model (configs/interactive.yaml)."
    ),
    sam_checkpoint: Path | None = typer.Option(
        None, "--sam-checkpoint", help="SAM checkpoint for clicks (needs segment-anything)."
    ),
    sam_model_type: str | None = typer.Option(None, "--sam-model-type", help="vit_b | vit_l | vit_h."),
    mask_format: str = typer.Option("rle", "--format", help="rle | polygon: segmentations in the COCO file."),
    score_thresh: float = typer.Option(0.5, "--score-thresh", help="Pre-labels with score >= this."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 ..."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(8765, "--port"),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch."),
) -> None:
    """Label a folder in the browser: model pre-labels, click to add or fix objects, COCO saved as you go.

    Images marked done go to --output (COCO, read by `instaseg train` as coco:OUTPUT:IMAGES); all work
    is also kept in OUTPUT's .annotate.json state file, from which a restarted tool resumes."""
    import logging

    import uvicorn

    from instaseg.predict.interactive import build_interactive
    from instaseg.serve.annotate import AnnotationSession, build_annotate_app
    from instaseg.serve.annotate_store import list_images
    from instaseg.serve.commands import _set_threads

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    _set_threads(threads)
    list_images(images)  # an empty or missing folder fails before any model is loaded
    predictor = None
    if checkpoint is not None:
        predictor = load_prelabel_model(checkpoint, device=device, score_thresh=score_thresh)
    interactive = build_interactive(sam_checkpoint, sam_model_type=sam_model_type, device=device,
                                    model_checkpoint=click_checkpoint)
    log = logging.getLogger("instaseg.annotate")
    session = AnnotationSession(images, output, predictor=predictor, interactive=interactive, classes=classes,
                                mask_format=mask_format,
                                log=lambda m: (typer.echo(f"instaseg: {m}", err=True), log.info(m)))
    try:
        app = build_annotate_app(session)
        summary = session.summary()
        shown = f"[{host}]" if ":" in host else host
        typer.echo(f"instaseg: {summary['progress']} in {images}; model {summary['model'] or 'none'}, "
                   f"clicks: {summary['backend']}; saving to {output}")
        typer.echo(f"instaseg: annotate at http://{shown}:{port}/  (Ctrl+C to stop; work is saved as you go)")
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        session.close()


def register(app: typer.Typer) -> None:
    """Add ``annotate`` to the root app."""
    app.command("annotate")(annotate)
