"""CLI commands of instaseg.serve: ``predict``, ``serve``, ``demo`` and ``gradio`` (registered by
:func:`register`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from instaseg.errors import ConfigError

_CHECKPOINT = typer.Option(
    None, "--checkpoint", "-c", help="Checkpoint file or run directory (torch backend)."
)
_BACKEND = typer.Option("torch", "--backend", help="torch | onnxruntime.")
_MODEL = typer.Option(None, "--model", help="Exported model file (.onnx) for --backend onnxruntime.")
_DEVICE = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 ...")
_SCORE = typer.Option(0.5, "--score-thresh", help="Keep instances with score >= this.")
_MAXDET = typer.Option(100, "--max-detections", help="Keep at most this many instances per image.")
_CLASSES = typer.Option(None, "--classes", help="Comma-separated class names or label ids to keep.")
_THREADS = typer.Option(
    None, "--threads", help="CPU threads for torch (default: torch's choice; 1 helps on busy machines)."
)


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _predictor(
    checkpoint: Path | None, backend: str, model: Path | None, device: str, score: float, maxdet: int,
    classes: str | None, tta: bool = False, refine: bool = False,
) -> Any:
    from instaseg.ops.refine import MaskRefinement
    from instaseg.predict.predictor import Predictor

    return Predictor.load(
        checkpoint=checkpoint, backend=backend, model=model, device=device, score_thresh=score,
        max_detections=maxdet, classes=classes, tta=tta, refine=MaskRefinement() if refine else None,
    )


def predict(
    source: str = typer.Argument(..., help="An image, a folder of images, a glob ('imgs/*.jpg') or a video."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for overlays and results.json."),
    checkpoint: Path | None = _CHECKPOINT,
    backend: str = _BACKEND,
    model: Path | None = _MODEL,
    device: str = _DEVICE,
    score_thresh: float = _SCORE,
    max_detections: int = _MAXDET,
    classes: str | None = _CLASSES,
    max_frames: int | None = typer.Option(None, "--max-frames", help="Video: stop after this many frames."),
    no_overlays: bool = typer.Option(False, "--no-overlays", help="Only write results.json."),
    overwrite: bool = typer.Option(False, "--overwrite", "--force", help="Replace an existing results.json."),
    threads: int | None = _THREADS,
    tta: bool = typer.Option(
        False, "--tta", help="Test-time flips: also run each mirror image and fuse both views (2x time)."
    ),
    refine: bool = typer.Option(
        False, "--refine", help="Refine masks along image edges, rescored by quality (box-relative masks)."
    ),
    tracker: str | None = typer.Option(
        None, "--tracker", help="Video: temporal, bytetrack or iou; writes overlay.mp4, YouTube-VIS "
        "results.json and MOTS tracks.txt (default: temporal for video models, a folder = frames)."),
    tile: int | None = typer.Option(
        None, "--tile", help="Predict large images on overlapping tiles of this many pixels (e.g. 640)."
    ),
    overlap: float = typer.Option(0.2, "--overlap", help="With --tile: tile overlap, a fraction of --tile."),
    tile_global: bool = typer.Option(
        False, "--tile-global", help="With --tile: add a whole-image pass for objects bigger than a tile."
    ),
    engine: str = typer.Option(
        "local", "--engine", help="local | ray (Ray Data actor pool; --output: a .parquet/.jsonl file)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray: auto, ray://HOST:10001 or HOST:6379 (default: RAY_ADDRESS or local)."
    ),
    workers: int = typer.Option(2, "--workers", help="Ray: actors, each loading the model once."),
    batch_size: int = typer.Option(8, "--batch-size", help="Ray: images per batch sent to an actor."),
    overlays: Path | None = typer.Option(None, "--overlays", help="Ray: also write overlay images here."),
    path_column: str = typer.Option("path", "--path-column", help="Ray: image column of a Parquet SOURCE."),
    connect_timeout: float = typer.Option(
        10.0, "--connect-timeout", help="Ray: give up on an unreachable --address after this many seconds."
    ),
) -> None:
    """Segment images or a video: overlay images (or an overlay video) and COCO results with RLE masks.

    --engine ray runs over many images (a folder, glob, .txt list of paths/URIs or a Parquet of paths)
    on a Ray Data actor pool and writes one row per image to --output results.parquet|.jsonl."""
    import time

    from instaseg.predict.files import run_predict
    from instaseg.predict.video import run_video, wants_video_pipeline

    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {max_frames}")
    tiling = None
    if tile is not None:
        from instaseg.predict.predictor import check_tiling

        check_tiling(tile, overlap)
        tiling = {"tile": tile, "overlap": overlap, "global_pass": tile_global}
    if engine == "ray":
        if tta or refine:
            raise ConfigError("--tta and --refine run with --engine local")
        _predict_ray(
            source, output, checkpoint=checkpoint, backend=backend, model=model, device=device,
            score_thresh=score_thresh, max_detections=max_detections, classes=classes, threads=threads,
            tiling=tiling, address=address, workers=workers, batch_size=batch_size, overlays=overlays,
            path_column=path_column, connect_timeout=connect_timeout, overwrite=overwrite,
        )
        return
    if engine != "local":
        raise ConfigError(f"--engine must be local or ray, got {engine!r}")
    _set_threads(threads)
    from instaseg.predict.points import is_point_source, run_point_predict

    if is_point_source(source):  # point clouds: PLY + JSON + PNG per scene (docs/points.md)
        if checkpoint is None:
            raise ConfigError("point clouds need --checkpoint (a point model's run directory or checkpoint)")
        run_point_predict(checkpoint, source, output, renders=not no_overlays, viewer=not no_overlays,
                          log=typer.echo)
        return
    predictor = _predictor(checkpoint, backend, model, device, score_thresh, max_detections, classes, tta,
                           refine)
    kind = wants_video_pipeline(predictor, source, tracker)
    if kind is not None:
        if refine:
            raise ConfigError(f"{source}: --refine is for still images (the video trackers smooth the "
                              "model's own masks)")
        run_video(predictor, source, output, tracker=kind, overlay=not no_overlays, max_frames=max_frames,
                  log=lambda m: typer.echo(m, err=True))
        return
    start = time.perf_counter()
    if predictor.is_panoptic:  # COCO panoptic PNG + JSON, semantic maps, panoptic overlays
        from instaseg.predict.panoptic_files import run_predict_panoptic

        if tiling is not None:
            raise ConfigError("--tile is for instance models; a panoptic model predicts whole images")
        summary = run_predict_panoptic(predictor, source, output, overwrite=overwrite,
                                       save_overlays=not no_overlays)
    else:
        summary = run_predict(predictor, source, output, overwrite=overwrite, save_overlays=not no_overlays,
                              max_frames=max_frames, tile=tiling)
    seconds = time.perf_counter() - start
    skipped = f", {summary.skipped} skipped" if summary.skipped else ""
    stills = summary.images - summary.frames
    parts = ([f"{stills} images"] if stills or not summary.frames else []) + (
        [f"{summary.frames} video frames"] if summary.frames else []
    )
    typer.echo(
        f"{', '.join(parts)}, {summary.instances} instances{skipped} in {seconds:.1f} s -> "
        f"{summary.results_path}"
    )


def _predict_ray(source: str, output: Path, *, checkpoint: Path | None, backend: str, model: Path | None,
                 device: str, score_thresh: float, max_detections: int, classes: str | None,
                 threads: int | None, tiling: dict[str, Any] | None, address: str | None, workers: int,
                 batch_size: int, overlays: Path | None, path_column: str, connect_timeout: float,
                 overwrite: bool) -> None:
    """``instaseg predict --engine ray``: check the inputs and the model here, then run the actor pool."""
    import functools

    from instaseg.predict.predictor import Predictor
    from instaseg.predict.ray_batch import RayOptions, collect_inputs, run_ray_predict

    opts = RayOptions(
        address=address, workers=workers, batch_size=batch_size, threads=threads or 1,
        gpus_per_worker=1.0 if device.startswith("cuda") else 0.0, connect_timeout=connect_timeout,
        path_column=path_column, overlays=overlays, tile=tiling,
    )
    collect_inputs(source, path_column=path_column)  # bad inputs fail before Ray starts
    load = functools.partial(
        Predictor.load, checkpoint=checkpoint, backend=backend, model=model, device=device,
        score_thresh=score_thresh, max_detections=max_detections, classes=classes,
    )
    if address is None and not _env_address():
        load()  # a bad checkpoint fails here with one line, not once per actor
    summary = run_ray_predict(load, source, output, opts, overwrite=overwrite)
    failed = f" ({summary.errors} failed)" if summary.errors else ""
    typer.echo(
        f"{summary.images} images{failed}, {summary.instances} instances in {summary.seconds:.1f} s "
        f"(Ray actors: {workers}) -> {summary.output}"
    )


def _env_address() -> str | None:
    import os

    return os.environ.get("RAY_ADDRESS") or None


def _serve(
    *, checkpoint: Path | None, backend: str, model: Path | None, device: str, score_thresh: float,
    max_detections: int, sam_checkpoint: Path | None, sam_model_type: str | None, host: str, port: int,
    max_upload_mb: float, max_megapixels: float, max_queue: int, threads: int | None, demo: bool,
    click_model: Path | None = None, refine: bool = False,
) -> None:
    import uvicorn

    from instaseg.serve.app import ServiceLimits, create_app
    from instaseg.serve.interactive import build_interactive

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    if max_upload_mb <= 0 or max_megapixels <= 0:
        raise ConfigError("--max-upload-mb and --max-megapixels must be > 0")
    if max_queue < 0:
        raise ConfigError(f"--max-queue must be >= 0, got {max_queue}")
    _set_threads(threads)
    interactive = build_interactive(sam_checkpoint, sam_model_type=sam_model_type, device=device,
                                    model_checkpoint=click_model)
    predictor = _predictor(checkpoint, backend, model, device, score_thresh, max_detections, None,
                           refine=refine)
    limits = ServiceLimits(
        max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=int(max_megapixels * 1_000_000),
        max_queue=max_queue,
    )
    app = create_app(predictor, interactive, limits)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"instaseg: model {predictor.name}, clicks: {interactive.name}")
    if demo:
        typer.echo(f"instaseg: demo at http://{shown}:{port}/  (API docs at /docs; Ctrl+C to stop)")
    else:
        typer.echo(f"instaseg: serving on http://{shown}:{port}  (API docs at /docs; Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _service_command(*, demo: bool, doc: str) -> Callable[..., None]:
    """One command function with the options shared by ``serve`` and ``demo`` (they differ only in
    what they print and in their help text)."""

    def command(
        checkpoint: Path | None = _CHECKPOINT,
        backend: str = _BACKEND,
        model: Path | None = _MODEL,
        device: str = _DEVICE,
        score_thresh: float = _SCORE,
        max_detections: int = _MAXDET,
        sam_checkpoint: Path | None = typer.Option(
            None, "--sam-checkpoint", help="SAM checkpoint for click prompts (needs segment-anything)."
        ),
        sam_model_type: str | None = typer.Option(None, "--sam-model-type", help="vit_b | vit_l | vit_h."),
        click_model: Path | None = typer.Option(
            None, "--click-model",
            help="Run directory of a trained click model (configs/interactive.yaml) for click prompts.",
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
        port: int = typer.Option(8000, "--port"),
        max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest accepted upload."),
        max_megapixels: float = typer.Option(40.0, "--max-megapixels", help="Largest accepted image."),
        max_queue: int = typer.Option(
            8, "--max-queue",
            help="Requests that may wait behind the one being processed; more get 503 with Retry-After.",
        ),
        threads: int | None = _THREADS,
        refine: bool = typer.Option(
            False, "--refine",
            help="Refine masks along image edges, rescored by quality (box-relative masks)."
        ),
    ) -> None:
        _serve(
            checkpoint=checkpoint, backend=backend, model=model, device=device,
            score_thresh=score_thresh, max_detections=max_detections, sam_checkpoint=sam_checkpoint,
            sam_model_type=sam_model_type, host=host, port=port, max_upload_mb=max_upload_mb,
            max_megapixels=max_megapixels, max_queue=max_queue, threads=threads, demo=demo,
            click_model=click_model, refine=refine,
        )

    command.__doc__ = doc
    command.__name__ = "demo" if demo else "serve"
    return command


serve = _service_command(
    demo=False, doc="HTTP service: POST /segment, POST /segment_interactive, GET /health, GET /models, /docs."
)
demo = _service_command(
    demo=True,
    doc="Browser demo: upload an image, see its instances, click to segment an object (open the URL).",
)


def gradio(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", "-c", help="Run directory, checkpoint or .onnx file of an image model."
    ),
    click_checkpoint: Path | None = typer.Option(
        None, "--click-checkpoint", "--click-model",
        help="Run directory of a trained click model (configs/interactive.yaml); default: offline GrabCut.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(7860, "--port"),
    device: str = _DEVICE,
    score_thresh: float = _SCORE,
    max_detections: int = _MAXDET,
    max_megapixels: float = typer.Option(40.0, "--max-megapixels", help="Largest accepted image."),
    threads: int | None = _THREADS,
) -> None:
    """Gradio app: upload an image, see its instances, click to segment an object, download COCO JSON.

    Runs offline: no share link, no analytics, nothing loaded from a CDN (needs the app extra)."""
    import importlib.util
    import os

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    if max_megapixels <= 0:
        raise ConfigError(f"--max-megapixels must be > 0, got {max_megapixels}")
    if importlib.util.find_spec("gradio") is None:
        raise ConfigError("instaseg gradio needs the gradio package: pip install 'instaseg[app]'")
    _set_threads(threads)
    from instaseg.serve.gradio_app import load_image_predictor
    from instaseg.serve.interactive import build_interactive

    predictor = load_image_predictor(checkpoint, device=device, score_thresh=score_thresh,
                                     max_detections=max_detections)
    segmenter = build_interactive(device=device, model_checkpoint=click_checkpoint)
    # Set before gradio is imported: some of its modules read it at import time.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from instaseg.serve.gradio_app import build_app

    app = build_app(predictor, segmenter, max_pixels=int(max_megapixels * 1_000_000))
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"instaseg: model {predictor.name}, clicks: {segmenter.name}")
    typer.echo(f"instaseg: Gradio app at http://{shown}:{port}/  (Ctrl+C to stop)")
    app.launch(server_name=host, server_port=port, share=False, ssr_mode=False, inbrowser=False, quiet=True,
               show_error=False)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("predict")(predict)
    app.command("serve")(serve)
    app.command("demo")(demo)
    app.command("gradio")(gradio)
