"""CLI commands of instaseg.evaluation: ``instaseg evaluate`` and ``instaseg visualize``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from instaseg.errors import ConfigError, DataError, InstasegError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def resolve_ground_truth(
    spec: str, split: str | None, *, need_images: bool = True
) -> tuple[dict[str, Any], Any, list[str]]:
    """``(COCO GT dict, dataset or None, notes)`` for a dataset spec. A COCO JSON (without a split) is
    used as is, so the numbers match what pycocotools gives on that file (its ``area`` fields decide
    small/medium/large); its images are only needed for the sample pictures (``need_images``). Other
    formats are converted with :func:`instaseg.data.coco.dataset_to_coco`."""
    from instaseg.data.build import build_dataset, parse_spec
    from instaseg.data.coco import dataset_to_coco
    from instaseg.evaluation.coco import load_coco_gt

    fmt, args = parse_spec(spec)
    notes: list[str] = []
    if fmt == "coco" and split in (None, "all"):
        cut = args.lower().find(".json:")
        gt = load_coco_gt(args[: cut + 5] if cut >= 0 else args)
        if not need_images:
            return gt, None, notes
        try:
            dataset = build_dataset(spec)
        except InstasegError as exc:
            dataset = None
            notes.append(f"no sample pictures: {exc}")
        return gt, dataset, notes
    dataset = build_dataset(spec, split=split)
    return dataset_to_coco(dataset), dataset, notes


def _subset_gt(gt: dict[str, Any], image_ids: set[int]) -> dict[str, Any]:
    return {
        **gt,
        "images": [im for im in gt["images"] if int(im["id"]) in image_ids],
        "annotations": [a for a in gt["annotations"] if int(a["image_id"]) in image_ids],
    }


def _run_dir_of(checkpoint: Path) -> Path | None:
    if checkpoint.is_dir():
        return checkpoint
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


def evaluate(
    data: str = typer.Option(
        ..., "--data", "-d", help="Dataset spec or path (e.g. coco:val.json, shapes:50)."
    ),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", "-c", help="Run directory or checkpoint file."
    ),
    predictions: Path | None = typer.Option(None, "--predictions", "-p", help="COCO results JSON to score."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write metrics.json, pictures, report.html."
    ),
    split: str | None = typer.Option(None, help="Dataset split (train/val; default: the whole spec)."),
    batch_size: int = typer.Option(2, min=1, help="Images per forward pass (--checkpoint)."),
    device: str = typer.Option("cpu", help="Device for --checkpoint (cpu, cuda, cuda:1)."),
    score_threshold: float = typer.Option(0.05, help="Drop detections below this score (--checkpoint)."),
    max_images: int | None = typer.Option(None, min=1, help="Evaluate only the first N images."),
    iou_types: str = typer.Option("segm,bbox", help="Comma list of segm, bbox."),
    analysis: bool = typer.Option(True, help="Also compute PQ, error analysis and the dashboard data."),
    num_samples: int = typer.Option(6, min=0, help="Sample pictures in the report."),
    figures: bool = typer.Option(True, help="Draw the dashboard and samples (else only JSON + HTML)."),
) -> None:
    """Score a trained model (--checkpoint) or a COCO results file (--predictions) on a dataset."""
    import json

    from instaseg.evaluation.coco import IOU_TYPES, STAT_NAMES, evaluate_results
    from instaseg.evaluation.results import load_results
    from instaseg.evaluation.runner import EvalReport, format_table, full_report

    if (checkpoint is None) == (predictions is None):
        raise ConfigError("evaluate needs exactly one of --checkpoint RUN_OR_FILE or --predictions FILE")
    kinds = tuple(k.strip() for k in iou_types.split(",") if k.strip())
    if not kinds or any(k not in IOU_TYPES for k in kinds):
        raise ConfigError(f"--iou-types {iou_types!r}: use a comma list of {', '.join(IOU_TYPES)}")
    need_images = checkpoint is not None or (output is not None and figures and num_samples > 0)
    gt, dataset, notes = resolve_ground_truth(data, split, need_images=need_images)
    if max_images is not None:
        from instaseg.evaluation.runner import FirstImages

        if dataset is not None:
            dataset = FirstImages(dataset, max_images)
            keep = {int(dataset.image_info(i)["id"]) for i in range(len(dataset))}
        else:
            keep = {int(im["id"]) for im in gt["images"][:max_images]}
        gt = _subset_gt(gt, keep)
    run_dir = None
    if predictions is not None:
        results = load_results(predictions, gt, subset=max_images is not None or split not in (None, "all"))
        _log(f"{predictions}: {len(results)} results on {len(gt['images'])} images")
    else:
        from instaseg.engine.checkpoint import load_model
        from instaseg.evaluation.runner import map_labels, predict_dataset

        if dataset is None:
            raise DataError(data, "--checkpoint needs the dataset's images: " + "; ".join(notes))
        model, meta = load_model(checkpoint, device=device)
        mapping = map_labels(meta, dataset, str(checkpoint))
        _log(f"{meta['path']}: {meta['model_spec']['name']} on {len(dataset)} images ({device})")
        results = predict_dataset(
            model,
            dataset,
            label_to_category=mapping,
            gt=gt,
            batch_size=batch_size,
            device=device,
            score_threshold=score_threshold,
            progress=sys.stderr.isatty(),
        )
        results = [r for r in results if r["category_id"] >= 0]
        run_dir = _run_dir_of(Path(checkpoint))
    if analysis and set(kinds) == set(IOU_TYPES):
        report = full_report(gt, results)
    else:
        metrics, evals = evaluate_results(gt, results, iou_types=kinds, return_evals=True)
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}
        for kind in IOU_TYPES:
            metrics.setdefault(kind, {n: -1.0 for n in STAT_NAMES})
        ordered = {k: metrics[k] for k in ("segm", "bbox", "per_class")}
        report = EvalReport(
            metrics={**ordered, "pq": {}}, gt=gt, results=results, evals=evals, class_names=names
        )
    print(format_table(report.metrics))
    if output is not None:
        from instaseg.evaluation.report import write_report

        out = Path(output)
        if checkpoint is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(json.dumps(results))
        source = predictions if predictions is not None else checkpoint
        written = write_report(
            out,
            report,
            dataset=dataset,
            run_dir=run_dir,
            notes=notes,
            figures=figures,
            title=f"instaseg evaluation: {source} on {data}",
            num_samples=num_samples,
        )
        _log(f"report: {written['html']} ({len(written) - 2} files, metrics in {written['metrics']})")


def visualize(
    source: str = typer.Argument(..., help="A dataset spec/path, or a COCO results JSON (then --data)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the PNG files."),
    data: str | None = typer.Option(None, "--data", "-d", help="The dataset a results JSON refers to."),
    split: str | None = typer.Option(None, help="Dataset split (train/val; default: the whole spec)."),
    num: int = typer.Option(8, min=1, help="How many images to draw."),
    score_threshold: float = typer.Option(0.5, help="Draw predictions with at least this score."),
) -> None:
    """Draw a dataset's ground truth, or predictions beside ground truth, as PNG figures."""
    from instaseg.evaluation.report import save_sample_figures

    results = None
    if _is_results_file(source):
        if data is None:
            raise ConfigError(f"{source}: a results file needs --data DATASET to draw the images")
        from instaseg.evaluation.results import load_results

        gt, dataset, notes = resolve_ground_truth(data, split)
        if dataset is None:
            raise DataError(data, "; ".join(notes) or "no images to draw")
        results = load_results(source, gt, subset=split not in (None, "all"))
    else:
        from instaseg.data.build import build_dataset

        dataset = build_dataset(source, split=split)
    names = dict(zip(dataset.category_ids, dataset.class_names, strict=True))
    paths = save_sample_figures(
        dataset, results, names, Path(output), num=num, score_threshold=score_threshold
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
    app.command("evaluate")(evaluate)
    app.command("visualize")(visualize)
