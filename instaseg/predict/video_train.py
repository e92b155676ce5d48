"""``instaseg train`` for video models (``-c configs/video.yaml``): detector on frames, then association.

Stage 1 runs the ordinary image engine on the frames of the video dataset with ``video.detector`` as
the model (a video dataset is also an image dataset of frames). Stage 2 loads that detector into the
video model (``model.name``), freezes it and trains the embedding head on frame pairs
(:func:`instaseg.engine.video.train_association`). The result, ``checkpoints/video.pt`` in the run
directory, carries the ``video.tracker`` rules; it is scored on ``video.eval_videos`` val videos.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from instaseg.config import Config


@dataclass
class VideoTrainResult:
    run_dir: Path
    checkpoint: Path
    detector_metrics: dict[str, Any] | None
    metrics: dict[str, Any]


def tracker_config(rules: dict[str, Any] | None) -> Any:
    """A :class:`TrackerConfig` from config/checkpoint ``rules`` (ConfigError naming an unknown key)."""
    from dataclasses import fields

    from instaseg.errors import ConfigError
    from instaseg.predict.temporal_tracker import TrackerConfig

    rules = dict(rules or {})
    known = {f.name for f in fields(TrackerConfig)}
    unknown = sorted(set(rules) - known)
    if unknown:
        raise ConfigError(f"video.tracker: unknown key(s) {unknown}; keys: {', '.join(sorted(known))}")
    return TrackerConfig(**rules)


def train_video(cfg: Config, *, output: str | Path | None = None,
                log: Callable[[str], None] = print) -> VideoTrainResult:
    """Run both stages (see the module docstring)."""
    import torch

    from instaseg.data.build import build_dataset
    from instaseg.engine.video import save_video_checkpoint, train_association
    from instaseg.models import get_model
    from instaseg.predict.validation import train as train_detector
    from instaseg.predict.video_eval import evaluate_video

    rules = tracker_config(cfg.video.tracker)  # fail fast on a bad key
    det_cfg = replace(cfg, model=replace(cfg.model, name=cfg.video.detector))
    stage1 = train_detector(det_cfg, output=output)
    run_dir = Path(stage1.run_dir)
    det_ckpt = run_dir / "checkpoints" / "best.pt"
    if not det_ckpt.is_file():
        det_ckpt = run_dir / "checkpoints" / "last.pt"
    meta = torch.load(det_ckpt, map_location="cpu", weights_only=False)
    kwargs = {**dict(meta["model_spec"].get("kwargs", {})), **dict(cfg.model.kwargs)}
    model = get_model(cfg.model.name, weights=str(det_ckpt), **kwargs)
    train = build_dataset(cfg.data.train, split=cfg.data.train_split)
    log(f"association head: {cfg.video.assoc_iters} iterations of {cfg.video.assoc_batch} frame pairs")
    train_association(model, train, iters=cfg.video.assoc_iters, batch_size=cfg.video.assoc_batch,
                      lr=cfg.video.assoc_lr, max_gap=cfg.video.max_gap, seed=cfg.train.seed, log=log)
    ckpt = save_video_checkpoint(model, run_dir / "checkpoints" / "video.pt", class_names=meta["class_names"],
                                 category_ids=meta["category_ids"], model_kwargs=kwargs,
                                 extra={"tracker": dict(cfg.video.tracker)})
    metrics = evaluate_video(cfg.data.val, ckpt, trackers=("temporal", "iou"), split=cfg.data.val_split,
                             max_videos=cfg.video.eval_videos, config=rules, log=log)
    (run_dir / "video_metrics.json").write_text(json.dumps(metrics, indent=2))
    return VideoTrainResult(run_dir, ckpt, stage1.metrics, metrics)
