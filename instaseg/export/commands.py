"""CLI commands of instaseg.export (registered by :func:`register`): ``instaseg export``."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from instaseg.errors import ConfigError

FORMATS = ("onnx", "torchscript")


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``"480x640"``, ``"480,640"`` (H, W) or ``"512"`` (square) -> (H, W); ConfigError otherwise."""
    if text is None:
        return None
    parts = [p for p in re.split(r"[x,\s]+", text.strip().lower()) if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 32 or max(values) > 4096:
        raise ConfigError(
            f"--image-size {text!r}: expected H x W (or one side), each in 32..4096, e.g. 480x640"
        )
    return values[0], values[1]


def export_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Checkpoint file or run directory."),
    output: Path = typer.Option(..., "--output", "-o", help="File to write (e.g. model.onnx)."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (16..20)."),
    image_size: str = typer.Option(
        None, "--image-size", help="Example image traced, H x W (e.g. 480x640); any size runs afterwards."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", "--force", help="Replace OUTPUT if it exists."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Compare the export with PyTorch."),
) -> None:
    """Export a trained model to ONNX (or TorchScript) with dynamic image size and its class names."""
    fmt = format.lower()
    if fmt not in FORMATS:
        raise ConfigError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    size = parse_image_size(image_size)
    from instaseg.export.onnx_export import check_output_path, export_onnx
    from instaseg.export.torchscript_export import export_torchscript
    from instaseg.models.checkpoint import load_model

    check_output_path(output, overwrite)  # fail before the (slow) model load
    model, meta = load_model(checkpoint)
    if getattr(model, "task", None) == "points":
        _export_points(model, meta, output, fmt, opset, overwrite, verify)
        return
    if hasattr(model, "forward_crops"):  # a click model: its crop network, not a detector graph
        _export_click(model, output, meta, fmt=fmt, opset=opset, overwrite=overwrite, verify=verify)
        return
    if fmt == "onnx":
        result = export_onnx(model, output, meta=meta, opset=opset, image_size=size, overwrite=overwrite,
                             verify=verify)
    else:
        result = export_torchscript(model, output, meta=meta, image_size=size, overwrite=overwrite,
                                    verify=verify)
    name = result.metadata.get("instaseg.model_name", "?")
    n_classes = len(meta.get("class_names") or []) - 1
    what = f"opset {result.opset}" if fmt == "onnx" else "torchscript"
    classes = f"{n_classes} class{'' if n_classes == 1 else 'es'}"
    typer.echo(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, {what}, {name}, {classes})")
    failed = False
    for check in result.checks:
        h, w = check["size"]
        counts = f"{check['torch']} detections (torch) vs {check.get('onnx', check.get('torchscript'))}"
        gaps = ""
        if "max_box_diff" in check:
            gaps = (
                f", max box diff {check['max_box_diff']:.2g} px,"
                f" max score diff {check['max_score_diff']:.2g}"
            )
        status = "ok" if check["ok"] else "MISMATCH"
        typer.echo(f"verify {h}x{w}: {status}: {counts}{gaps}")
        failed |= not check["ok"]
    if failed:
        typer.echo("instaseg: warning: the export differs from PyTorch beyond tolerance", err=True)
        raise typer.Exit(1)


def _export_points(model: object, meta: dict, output: Path, fmt: str, opset: int, overwrite: bool,
                   verify: bool) -> None:
    """A point-cloud model: its network to ONNX (voxelisation and clustering stay in NumPy)."""
    from instaseg.export.points_onnx import export_points_onnx

    if fmt != "onnx":
        raise ConfigError("point-cloud models export to ONNX only (--format onnx)")
    result = export_points_onnx(model, output, meta=meta, opset=opset, overwrite=overwrite, verify=verify)
    typer.echo(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, opset {result.opset}, point network)")
    failed = False
    for c in result.checks:
        status = "ok" if c["ok"] else "MISMATCH"
        typer.echo(f"verify {c['size'][0]} points: {status}: {c['torch']} instances (torch) vs {c['onnx']} "
                   f"(onnx), "
                   f"max logit diff {c['max_logit_diff']:.2g}, max offset diff {c['max_offset_diff']:.2g}")
        failed |= not c["ok"]
    if failed:
        typer.echo("instaseg: warning: the export differs from PyTorch beyond tolerance", err=True)
        raise typer.Exit(1)


def _export_click(model: object, output: Path, meta: dict, *, fmt: str, opset: int, overwrite: bool,
                  verify: bool) -> None:
    from instaseg.export.click_onnx import export_click_onnx

    if fmt != "onnx":
        raise ConfigError(f"--format {fmt}: click models export to onnx only")
    result = export_click_onnx(model, output, meta=meta, opset=opset, overwrite=overwrite, verify=verify)  # type: ignore[arg-type]
    typer.echo(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, opset {result.opset}, click model)")
    for check in result.checks:
        typer.echo(f"verify batch {check['batch']}: {'ok' if check['ok'] else 'MISMATCH'}: "
                   f"max abs diff {check['max_abs_diff']:.2g}")
    if not all(c["ok"] for c in result.checks):
        typer.echo("instaseg: warning: the export differs from PyTorch beyond tolerance", err=True)
        raise typer.Exit(1)


def init_pipeline_command(
    directory: Path = typer.Argument(..., help="Folder of the pipeline (created; usually a git repository)."),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Training dataset spec (data.train; validation: its val split)."
    ),
    val: str | None = typer.Option(None, "--val", help="Validation dataset spec (data.val)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Start from this YAML config."),
    set_: list[str] | None = typer.Option(None, "--set", "-s", help="Override a config key (repeatable)."),
    force: bool = typer.Option(False, "--overwrite", "--force",
                               help="Replace an existing dvc.yaml / params.yaml."),
) -> None:
    """Write a DVC pipeline (check -> train -> evaluate -> export) for a dataset; then `dvc repro`."""
    from instaseg.config import embedded_default, load_config
    from instaseg.export.pipeline import init_pipeline

    overrides = list(set_ or [])
    if data is not None and val is None:  # one dataset: its deterministic 80/20 train/val split
        overrides += [f"data.train={data}", f"data.val={data}", "data.train_split=train",
                      "data.val_split=val"]
    elif data is not None:  # two datasets: each used whole
        overrides += [f"data.train={data}", f"data.val={val}", "data.train_split=null",
                      "data.val_split=null"]
    elif val is not None:
        overrides += [f"data.val={val}", "data.val_split=null"]
    # no --config: the embedded default, budget included, as `instaseg train` runs it
    cfg = load_config(config, overrides) if config is not None else embedded_default(overrides)
    for path in init_pipeline(cfg, directory, force=force):
        typer.echo(f"wrote {path}")
    typer.echo(f"next: cd {directory} && dvc repro   (then: dvc metrics show, dvc plots show)")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("export")(export_command)
    app.command("init-pipeline")(init_pipeline_command)
