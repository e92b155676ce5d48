"""Evaluate a model + tracker on a video dataset (``instaseg evaluate`` on ``video_shapes``/``ytvis`` data).

Detections are computed once per frame (:func:`detect_videos`) and every tracker runs on the *same*
detections (:func:`track_videos`), so tracker comparisons isolate association. Scores: our YouTube-VIS
AP/AR (:func:`instaseg.evaluation.video.vis_metrics`) and TrackEval's HOTA/CLEAR/Identity
(:func:`instaseg.evaluation.video.trackeval_metrics`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from instaseg.data.video import is_video_dataset
from instaseg.data.ytvis import dataset_to_ytvis, tracks_to_results
from instaseg.errors import DataError
from instaseg.evaluation.video import trackeval_metrics, vis_metrics
from instaseg.predict.temporal_tracker import TrackerConfig
from instaseg.predict.video import FrameDetections, detect_frame, make_tracker, tracked_frame

VIDEO_FORMATS = ("video_shapes", "ytvis")


def is_video_spec(spec: str) -> bool:
    """Whether a dataset spec names a video dataset format."""
    return str(spec).split(":", 1)[0].lower() in VIDEO_FORMATS


def detect_videos(model: Any, dataset: Any, *, min_score: float = 0.1, max_videos: int | None = None,
                  log: Callable[[str], None] | None = None
                  ) -> tuple[list[list[FrameDetections]], float, float]:
    """Per video, per frame detections with ``score >= min_score``; plus (wall, CPU) seconds spent."""
    if not is_video_dataset(dataset):
        raise DataError(None, f"{type(dataset).__name__} is not a video dataset")
    videos = dataset.videos[:max_videos]
    out, wall0, cpu0 = [], time.perf_counter(), time.process_time()
    for k, info in enumerate(videos):
        out.append([detect_frame(model, dataset.load_record(i).image, min_score) for i in info.frames])
        if log is not None and (k + 1) % 10 == 0:
            log(f"detected {k + 1}/{len(videos)} videos")
    return out, time.perf_counter() - wall0, time.process_time() - cpu0


def track_videos(detections: list[list[FrameDetections]], dataset: Any, kind: str,
                 config: TrackerConfig | None = None, mask_thresh: float = 0.5) -> tuple[list[dict], float]:
    """YouTube-VIS results of tracker ``kind`` over precomputed detections; plus the CPU seconds the
    tracker itself took (mask pasting excluded)."""
    results, track_cpu = [], 0.0
    for info, frames in zip(dataset.videos, detections, strict=False):
        tracker = make_tracker(kind, config)
        per_frame = []
        for det in frames:
            t0 = time.process_time()
            index, ids, masks = tracker.step(det)
            track_cpu += time.process_time() - t0
            per_frame.append(tracked_frame(det, index, ids, masks, dataset.category_ids, mask_thresh))
        results += tracks_to_results(info.id, per_frame, len(frames), info.height, info.width)
    return results, track_cpu


def ground_truth(dataset: Any, max_videos: int | None = None) -> dict[str, Any]:
    """The dataset's YouTube-VIS ground truth (first ``max_videos`` videos)."""
    gt = dataset_to_ytvis(dataset)
    if max_videos is not None:
        keep = {v["id"] for v in gt["videos"][:max_videos]}
        gt["videos"] = gt["videos"][:max_videos]
        gt["annotations"] = [a for a in gt["annotations"] if a["video_id"] in keep]
    return gt


def score_results(gt: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Our VIS AP/AR plus TrackEval's HOTA, CLEAR and Identity numbers (and its track mAP, for checking)."""
    ours = vis_metrics(gt, results)
    te = trackeval_metrics(gt, results)
    return {**{k: ours[k] for k in ("AP", "AP50", "AP75", "AR1", "AR10")},
            **{k: te[k] for k in ("HOTA", "DetA", "AssA", "MOTSA", "sMOTSA", "IDSW", "IDF1")},
            "trackeval_AP": te["AP"], "tracks": len(results)}


def evaluate_video(data: str, checkpoint: str | Path, *, trackers: tuple[str, ...] = ("temporal",),
                   split: str | None = None, max_videos: int | None = None,
                   config: TrackerConfig | None = None,
                   log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Load ``checkpoint``, detect every frame of ``data`` once, run each tracker and score it."""
    from instaseg.data.build import build_dataset
    from instaseg.models.checkpoint import load_model

    dataset = build_dataset(data, split=split)
    model, meta = load_model(checkpoint)
    config = config or TrackerConfig(**dict(meta.get("tracker") or {}))
    dets, _, _ = detect_videos(model, dataset, min_score=min(config.low_thresh, config.high_thresh),
                               max_videos=max_videos, log=log)
    gt = ground_truth(dataset, max_videos)
    out = {}
    for kind in trackers:
        results, _ = track_videos(dets, dataset, kind, config)
        out[kind] = score_results(gt, results)
    return out


def run_video_evaluate(data: str, checkpoint: Path | None, predictions: Path | None, output: Path | None,
                       split: str | None, trackers: str, log: Callable[[str], None]) -> dict[str, Any]:
    """``instaseg evaluate`` on a video dataset: a checkpoint (each tracker in ``trackers``, a comma list)
    or a YouTube-VIS results JSON (``predictions``). Prints one table row per tracker; writes
    ``metrics.json`` under ``output`` when given."""
    import json

    from instaseg.data.build import build_dataset
    from instaseg.data.io import read_json
    from instaseg.errors import ConfigError

    kinds = tuple(k.strip() for k in trackers.split(",") if k.strip())
    if (checkpoint is None) == (predictions is None):
        raise ConfigError("give exactly one of --checkpoint and --predictions")
    if predictions is not None:
        results = read_json(predictions)
        if not isinstance(results, list):
            raise DataError(predictions, "not a YouTube-VIS results list")
        gt = ground_truth(build_dataset(data, split=split))
        metrics = {"predictions": score_results(gt, results)}
    else:
        metrics = evaluate_video(data, checkpoint, trackers=kinds, split=split, log=log)
    keys = ("AP", "AP50", "AP75", "AR1", "AR10", "HOTA", "DetA", "AssA", "MOTSA", "sMOTSA", "IDSW", "IDF1")
    print("tracker    " + " ".join(f"{k:>7}" for k in keys))
    for name, m in metrics.items():
        print(f"{name:<10} " + " ".join(f"{m[k]:7d}" if k == "IDSW" else f"{m[k]:7.4f}" for k in keys))
    if output is not None:
        Path(output).mkdir(parents=True, exist_ok=True)
        (Path(output) / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log(f"metrics: {Path(output) / 'metrics.json'}")
    return metrics
