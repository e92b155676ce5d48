"""CLI commands of instaseg.engine (registered by :func:`register`): ``instaseg train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def train(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML config (default: the CPU default config).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a config key, e.g. --set train.lr=0.01 (repeatable)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Run directory (must be new or empty). Default: runs/train, train2..."
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="Continue a run: its directory or a checkpoint file (uses its config)."
        ),
    ] = None,
) -> None:
    """Train a model. With no options: the default CPU Mask R-CNN on synthetic shapes.

    Works unchanged under torchrun --nproc_per_node N (DistributedDataParallel).
    """
    from instaseg.config import load_config
    from instaseg.engine import distributed as du
    from instaseg.engine.launch import run_training
    from instaseg.errors import ConfigError

    if resume is not None and config is not None:
        raise ConfigError(
            "--config cannot be combined with --resume: a resumed run uses its own config "
            "(change keys with --set)"
        )
    overrides = list(set_ or [])
    if resume is not None:
        result = run_training(resume=resume, output=output, overrides=overrides)
    else:
        cfg = load_config(config, overrides)
        result = run_training(cfg, output=output)
    if not du.is_main_process() or result.metrics is None:
        return
    segm, bbox = result.metrics["segm"], result.metrics["bbox"]
    if result.stop_reason:
        typer.echo(f"stopped early: {result.stop_reason}")
    typer.echo(
        f"held-out mask AP {segm['AP']:.4f} (AP50 {segm['AP50']:.4f}), "
        f"box AP {bbox['AP']:.4f} (AP50 {bbox['AP50']:.4f}) after {result.iterations} iterations"
    )
    typer.echo(f"run directory: {result.run_dir}")
    typer.echo(
        f"  checkpoints/best.pt, checkpoints/last.pt, metrics.json, config.yaml, overlays/ "
        f"(tensorboard --logdir {result.run_dir / 'tensorboard'})"
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("train")(train)
