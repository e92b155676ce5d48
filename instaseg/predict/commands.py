"""CLI commands that run a model, built on the Predictor: ``instaseg train`` (validated through it) and
``instaseg evaluate``. They sit above both ``engine`` and ``predict`` and only parse options; the work is
in :mod:`instaseg.predict.validation` and :mod:`instaseg.predict.evaluate`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from instaseg.errors import ConfigError
from instaseg.predict import active_commands


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


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
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="Self-configure for this dataset spec (no --config): model, size, schedule and "
            "iterations chosen from the data and this machine's speed to fit --time.",
        ),
    ] = None,
    val: Annotated[
        str | None, typer.Option("--val", help="With --data: validation spec (default: its 80/20 split).")
    ] = None,
    time_min: Annotated[
        float | None,
        typer.Option(
            "--time", min=0.5, help="Time budget in minutes (train.max_time_min; with --data default 15)."
        ),
    ] = None,
) -> None:
    """Train a model. With no options: the default CPU Mask R-CNN on synthetic shapes (9.5 minutes).

    `instaseg train --data SPEC --time 15` configures itself from the data. Works unchanged under
    torchrun --nproc_per_node N (DistributedDataParallel).
    """
    from instaseg.config import embedded_default, load_config
    from instaseg.engine import distributed as du
    from instaseg.engine.autoconfig import plan_training, write_plan
    from instaseg.models import model_task
    from instaseg.predict.validation import train as run_training

    if resume is not None and config is not None:
        raise ConfigError(
            "--config cannot be combined with --resume: a resumed run uses its own config "
            "(change keys with --set)"
        )
    overrides = list(set_ or [])
    if data is not None and (config is not None or resume is not None):
        raise ConfigError("--data configures the run itself: it cannot be combined with --config or --resume")
    if val is not None and data is None:
        raise ConfigError("--val goes with --data")
    if time_min is not None and data is None:
        overrides.append(f"train.max_time_min={time_min}")
    plan = None
    if resume is not None:
        result = run_training(resume=resume, output=output, overrides=overrides)
    elif data is not None:
        plan = plan_training(data, minutes=time_min or 15.0, val=val, overrides=overrides, log=typer.echo)
        result = run_training(plan.config, output=output)
    else:
        cfg = load_config(config, overrides) if config is not None else embedded_default(overrides)
        if model_task(cfg.model.name) == "video":  # detector on frames, then the association head
            from instaseg.predict.video_train import train_video

            video = train_video(cfg, output=output, log=typer.echo)
            if du.is_main_process():
                t = video.metrics["temporal"]
                typer.echo(f"held-out video: VIS AP {t['AP']:.4f}, HOTA {t['HOTA']:.4f}, "
                           f"ID switches {t['IDSW']} (IoU tracker {video.metrics['iou']['IDSW']})")
                typer.echo(f"run directory: {video.run_dir}; video model: {video.checkpoint}")
            return
        result = run_training(cfg, output=output)
    if plan is not None and du.is_main_process():
        write_plan(plan, result.run_dir, result.metrics, log=typer.echo)
    if du.is_main_process() and result.metrics is None:  # e.g. a click model: evaluate-interactive scores it
        typer.echo(f"run directory: {result.run_dir} (checkpoints/last.pt)")
    if not du.is_main_process() or result.metrics is None:
        return
    if result.stop_reason:
        typer.echo(f"stopped early: {result.stop_reason}")
    if result.metrics.get("task") == "points":
        segm, bbox = result.metrics["segm"], result.metrics["bbox"]
        typer.echo(f"held-out point AP {segm['AP']:.4f} (AP50 {segm['AP50']:.4f}, AP25 {segm['AP25']:.4f}), "
                   f"class-agnostic AP {bbox['AP']:.4f} after {result.iterations} iterations")
        typer.echo(f"run directory: {result.run_dir}")
        return
    if "segm" in result.metrics:
        segm, bbox = result.metrics["segm"], result.metrics["bbox"]
        typer.echo(
            f"held-out mask AP {segm['AP']:.4f} (AP50 {segm['AP50']:.4f}), "
            f"box AP {bbox['AP']:.4f} (AP50 {bbox['AP50']:.4f}) after {result.iterations} iterations"
        )
    if "panoptic" in result.metrics:  # panoptic models: PQ (All / Things / Stuff)
        pq = result.metrics["panoptic"]
        typer.echo(f"held-out PQ {pq['All']['pq']:.4f} (things {pq['Things']['pq']:.4f}, stuff "
                   f"{pq['Stuff']['pq']:.4f}) after {result.iterations} iterations")
    typer.echo(f"run directory: {result.run_dir}")
    typer.echo(
        f"  checkpoints/best.pt, checkpoints/last.pt, metrics.json, config.yaml, overlays/ "
        f"(tensorboard --logdir {result.run_dir / 'tensorboard'})"
    )


def evaluate(
    data: str | None = typer.Option(
        None, "--data", "-d", help="Dataset spec or path (e.g. coco:val.json, shapes:50)."
    ),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", "-c", help="Run directory or checkpoint file."
    ),
    predictions: Path | None = typer.Option(None, "--predictions", "-p", help="COCO results JSON to score."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write metrics.json, pictures, report.html."
    ),
    split: str | None = typer.Option(None, help="Dataset split (train/val; default: the whole spec)."),
    batch_size: int | None = typer.Option(
        None, min=1, help="Images per forward pass (--checkpoint; default: the run's eval.batch_size)."
    ),
    device: str = typer.Option("cpu", help="Device for --checkpoint (cpu, cuda, cuda:1)."),
    score_thresh: float | None = typer.Option(
        None,
        "--score-thresh",
        help="Keep detections with score >= this (--checkpoint; default: the run's eval.score_thresh).",
    ),
    max_images: int | None = typer.Option(None, min=1, help="Evaluate only the first N images."),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Test-time flips (--checkpoint; default: the run's eval.tta)."
    ),
    refine: bool | None = typer.Option(
        None, "--refine/--no-refine",
        help="Edge-refined masks, rescored by quality (--checkpoint; default: the run's eval.refine_masks).",
    ),
    iou_types: str = typer.Option("segm,bbox", help="Comma list of segm, bbox."),
    analysis: bool = typer.Option(True, help="Also compute PQ, error analysis and the dashboard data."),
    num_samples: int = typer.Option(6, min=0, help="Sample pictures in the report."),
    figures: bool = typer.Option(True, help="Draw the dashboard and samples (else only JSON + HTML)."),
    metrics_file: Path | None = typer.Option(
        None, "--metrics-file", help="Write the headline metrics (segm, bbox, PQ) as JSON (DVC metrics)."
    ),
    plots_dir: Path | None = typer.Option(
        None, "--plots-dir", help="Write pr_curve.csv and per_class_ap.json here (DVC plots)."
    ),
    tracker: str = typer.Option(
        "temporal", help="Video datasets: comma list of trackers to score (temporal, bytetrack, iou)."),
    panoptic_gt: str | None = typer.Option(
        None, "--panoptic-gt", help="COCO panoptic GT JSON:PNG_DIR[:IMAGE_DIR] (with --panoptic-pred)."
    ),
    panoptic_pred: str | None = typer.Option(
        None, "--panoptic-pred", help="COCO panoptic predictions JSON:PNG_DIR to score against --panoptic-gt."
    ),
) -> None:
    """Score a trained model (--checkpoint) or a COCO results file (--predictions) on a dataset, or
    COCO panoptic predictions (--panoptic-pred) against --panoptic-gt (PQ as panopticapi).

    On a video dataset (video_shapes, ytvis): YouTube-VIS AP/AR, HOTA, CLEAR, IDF1 per tracker."""
    from instaseg.evaluation.summary import format_table
    from instaseg.predict import evaluate as E
    from instaseg.predict.video_eval import is_video_spec, run_video_evaluate

    if data is not None and is_video_spec(data):
        run_video_evaluate(data, checkpoint, predictions, output, split, tracker, _log)
        return

    if panoptic_gt is not None or panoptic_pred is not None:
        _evaluate_panoptic(panoptic_gt, panoptic_pred, output, figures=figures, num_samples=num_samples)
        return
    if data is None:
        raise ConfigError("evaluate needs --data DATASET (or --panoptic-gt and --panoptic-pred)")

    if checkpoint is not None and _is_point_checkpoint(checkpoint):
        from instaseg.evaluation.points_ap import format_points_table
        from instaseg.predict.points import evaluate_points_checkpoint

        metrics = evaluate_points_checkpoint(
            checkpoint, data, split=split, output=output, max_scenes=max_images,
            num_renders=num_samples if figures else 0, log=_log,
        )
        print(format_points_table({**metrics["segm"], "per_class": metrics["per_class"]}))
        return

    kinds = E.parse_iou_types(iou_types)
    result = E.evaluate(
        data, checkpoint=checkpoint, predictions=predictions, split=split, batch_size=batch_size,
        device=device, score_thresh=score_thresh, max_images=max_images, iou_types=kinds,
        analysis=analysis, need_images=output is not None and figures and num_samples > 0, log=_log,
        num_samples=num_samples, tta=tta, refine=refine,
    )
    print(format_table(result.report.metrics))
    if result.panoptic is not None:
        print(result.panoptic.table())
    if output is not None:
        source = predictions if predictions is not None else checkpoint
        written = E.write_evaluation(
            output, result, title=f"instaseg evaluation: {source} on {data}",
            write_results=checkpoint is not None, figures=figures, num_samples=num_samples,
        )
        _log(f"report: {written['html']} ({len(written) - 2} files, metrics in {written['metrics']})")
    if metrics_file is not None or plots_dir is not None:
        for path in E.write_pipeline_outputs(result, metrics_file=metrics_file, plots_dir=plots_dir):
            _log(f"wrote {path}")


def _is_point_checkpoint(checkpoint: Path) -> bool:
    from instaseg.models import model_task
    from instaseg.models.checkpoint import load_checkpoint

    spec = load_checkpoint(checkpoint).get("model_spec") or {}
    return isinstance(spec, dict) and model_task(str(spec.get("name"))) == "points"


def _evaluate_panoptic(
    gt: str | None, pred: str | None, output: Path | None, *, figures: bool, num_samples: int
) -> None:
    from instaseg.evaluation.panoptic_report import evaluate_panoptic_files, write_panoptic_report

    if gt is None or pred is None:
        raise ConfigError("--panoptic-gt and --panoptic-pred go together (each PANOPTIC.json:PNG_DIR)")
    ev = evaluate_panoptic_files(gt, pred)
    print(ev.table())
    if output is not None:
        title = f"instaseg panoptic evaluation: {pred} against {gt}"
        written = write_panoptic_report(output, ev, title=title, figures=figures, num_samples=num_samples)
        _log(f"report: {written['html']} (metrics in {written['metrics']})")


def models(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    params: bool = typer.Option(True, "--params/--no-params", help="Build each model to count parameters."),
    num_classes: int = typer.Option(None, "--num-classes", help="Count parameters for this many classes "
                                    "(with background); default: each builder's default."),
) -> None:
    """List the registered models with a one-line description and parameter count."""
    import json

    # here, not at the top: importing instaseg.models builds every model module (torch), and
    # `instaseg --help` should not wait for that
    from instaseg.models.registry import model_table

    rows = model_table(count_params=params, num_classes=num_classes)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        count = f"{r['params'] / 1e6:6.1f}M" if r["params"] is not None else "      -"
        typer.echo(f"{r['name']:<{width}}  {count}  {r['description']}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    from instaseg.predict import interactive_commands

    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("models")(models)
    active_commands.register(app)
    interactive_commands.register(app)
