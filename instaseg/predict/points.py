"""The one inference path for point-cloud models (task ``points``): predicting scenes of any size,
validating during training, ``instaseg evaluate`` and ``instaseg predict`` on point clouds.

Large scenes: the points are voxel-downsampled (``downsample`` metres: one point per voxel), the model
runs on the kept points, and every original point takes the instance of the point that stands for its
voxel. Memory is O(N) for the mapping plus the model's cost on the kept points.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from instaseg.data.points.base import PointScene
from instaseg.errors import ConfigError, DataError
from instaseg.evaluation.points_ap import evaluate_point_instances
from instaseg.ops.points import voxel_downsample
from instaseg.structures.points import PointInstances


@dataclass
class PointPredictor:
    """A point model plus its classes; :meth:`predict` works on scenes of any size."""

    model: nn.Module
    class_names: list[str]
    downsample: float | None = 0.02
    stuff_classes: tuple[int, ...] = ()

    @classmethod
    def load(cls, checkpoint: str | Path, *, downsample: float | None = 0.02) -> PointPredictor:
        """From a checkpoint file or run directory of a point model."""
        from instaseg.models import model_task
        from instaseg.models.checkpoint import load_model

        model, meta = load_model(checkpoint)
        name = meta["model_spec"]["name"]
        if model_task(name) != "points":
            raise ConfigError(
                f"{checkpoint}: model {name!r} is not a point-cloud model (task {model_task(name)})"
            )
        stuff = tuple(meta["model_spec"].get("kwargs", {}).get("stuff_classes", ()))
        return cls(model, list(meta["class_names"]), downsample, stuff)

    def predict(self, scene: PointScene) -> tuple[PointInstances, dict[str, Any]]:
        """Instances over all of ``scene``'s points and timing/size info (``points``, ``model_points``,
        ``seconds``)."""
        start = time.perf_counter()
        xyz, rgb = scene.xyz, scene.rgb
        inverse = None
        if self.downsample and len(xyz) > 1:
            keep, inverse = voxel_downsample(xyz, self.downsample)
            xyz, rgb = xyz[keep], rgb[keep]
        points = torch.from_numpy(np.concatenate([xyz, rgb], 1).astype(np.float32))
        self.model.eval()
        pred = self.model.predict(points)
        if inverse is not None:
            pred = pred.take_points(inverse)
        info = {
            "points": len(scene),
            "model_points": len(xyz),
            "seconds": round(time.perf_counter() - start, 4),
        }
        return pred, info


class PointValidator:
    """Point AP of a model on the dataset ``spec`` (``split``): the trainer's ``validator``.

    Returns ``(metrics, [])`` with ``segm`` = class-aware point AP and ``bbox`` = class-agnostic point AP
    (the keys the training hooks log), ``per_class`` and ``task: "points"``.
    """

    def __init__(
        self,
        spec: str,
        split: str | None,
        *,
        max_scenes: int | None = None,
        min_points: int = 30,
        downsample: float | None = None,
    ) -> None:
        from instaseg.data.build import build_dataset

        self.dataset = build_dataset(spec, split=split)
        if getattr(self.dataset, "task", None) != "points":
            raise DataError(spec, "not a point-cloud dataset")
        self.max_scenes, self.min_points, self.downsample = max_scenes, min_points, downsample

    def __call__(
        self, model: nn.Module, device: torch.device, *, amp: bool = False, progress: bool = False
    ) -> tuple[dict[str, Any], list[Any]]:
        was = model.training
        model.eval()
        try:
            return evaluate_point_model(
                model,
                self.dataset,
                max_scenes=self.max_scenes,
                min_points=self.min_points,
                downsample=self.downsample,
            ), []
        finally:
            model.train(was)


def evaluate_point_model(
    model: nn.Module,
    dataset: Any,
    *,
    max_scenes: int | None = None,
    min_points: int = 30,
    downsample: float | None = None,
    keep: Callable[[int, PointScene, PointInstances], None] | None = None,
) -> dict[str, Any]:
    """Class-aware (``segm``) and class-agnostic (``bbox``) point AP of ``model`` on ``dataset``."""
    predictor = PointPredictor(model, list(dataset.class_names), downsample, tuple(dataset.stuff_classes))
    scenes = []
    n = len(dataset) if max_scenes is None else min(max_scenes, len(dataset))
    seconds = 0.0
    for i in range(n):
        scene = dataset.scene(i)
        pred, info = predictor.predict(scene)
        seconds += info["seconds"]
        scenes.append((scene.ground_truth(tuple(dataset.stuff_classes)), pred, scene.semantic < 0))
        if keep is not None:
            keep(i, scene, pred)
    aware = evaluate_point_instances(scenes, list(dataset.class_names), min_points=min_points)
    agnostic = evaluate_point_instances(
        scenes, list(dataset.class_names), min_points=min_points, class_agnostic=True
    )
    pick = ("AP", "AP50", "AP25")
    return {
        "task": "points",
        "segm": {k: aware[k] for k in pick},
        "bbox": {k: agnostic[k] for k in pick},
        "per_class": aware["per_class"],
        "class_agnostic": {k: agnostic[k] for k in pick},
        "num_scenes": n,
        "seconds_per_scene": seconds / max(n, 1),
    }


def scene_colors(pred: PointInstances) -> np.ndarray:
    from instaseg.data.points.io import instance_colors

    return instance_colors(pred.instance_ids)


def evaluate_points_checkpoint(
    checkpoint: str | Path,
    data: str,
    *,
    split: str | None,
    output: Path | None,
    max_scenes: int | None = None,
    min_points: int = 30,
    num_renders: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``instaseg evaluate --checkpoint RUN --data SPEC`` for a point model: metrics, and in ``output``
    ``metrics.json``, renders (ground truth beside prediction) and ``report.html``."""
    from instaseg.data.build import build_dataset
    from instaseg.viz.points import render_views

    predictor = PointPredictor.load(checkpoint, downsample=None)
    dataset = build_dataset(data, split=split)
    if getattr(dataset, "task", None) != "points":
        raise DataError(data, "the checkpoint holds a point-cloud model: --data must be a point dataset")
    renders: list[Path] = []

    def keep(i: int, scene: PointScene, pred: PointInstances) -> None:
        if output is not None and i < num_renders:
            gt = scene.ground_truth(tuple(dataset.stuff_classes))
            renders.append(
                render_views(
                    [
                        ("ground truth", scene.xyz, scene_colors(gt)),
                        ("prediction", scene.xyz, scene_colors(pred)),
                    ],
                    output / f"scene_{i}.png",
                )
            )

    metrics = evaluate_point_model(
        predictor.model, dataset, max_scenes=max_scenes, min_points=min_points, keep=keep
    )
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
        rows = "".join(
            f"<tr><td>{k}</td><td>{100 * v['AP']:.1f}</td><td>{100 * v['AP50']:.1f}</td>"
            f"<td>{100 * v['AP25']:.1f}</td></tr>"
            for k, v in metrics["per_class"].items()
        )
        imgs = "".join(f'<p><img src="{p.name}" style="max-width:100%"></p>' for p in renders)
        (output / "report.html").write_text(
            f"<html><body><h1>instaseg point evaluation</h1><p>{checkpoint} on {data}</p>"
            f"<table border=1><tr><th>class</th><th>AP</th><th>AP50</th><th>AP25</th></tr>{rows}</table>"
            f"<p>mean AP {100 * metrics['segm']['AP']:.1f}, AP50 {100 * metrics['segm']['AP50']:.1f}, "
            f"AP25 {100 * metrics['segm']['AP25']:.1f}</p>{imgs}</body></html>"
        )
        log(f"report: {output / 'report.html'}")
    return metrics


def is_point_source(source: str) -> bool:
    """Whether a predict SOURCE names point clouds (.ply/.npz, or a folder/glob of them)."""
    from instaseg.data.points.io import POINT_SUFFIXES

    if source.lower().endswith(POINT_SUFFIXES):
        return True
    p = Path(source)
    return p.is_dir() and (
        any(f.suffix.lower() in POINT_SUFFIXES for f in p.iterdir()) or (p / "Annotations").is_dir()
    )


def run_point_predict(
    checkpoint: str | Path,
    source: str,
    output: Path,
    *,
    downsample: float | None = 0.02,
    renders: bool = True,
    viewer: bool = False,
    max_points: int | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """``instaseg predict`` on point clouds: per scene ``<name>.ply`` (instance colours), ``<name>.json``
    (instances with point indices), ``<name>.png`` (renders, input colours beside instances) and
    optionally ``<name>.html`` (viewer). Returns one summary per scene."""
    from instaseg.data.points.files import list_point_files
    from instaseg.data.points.io import MAX_POINTS, read_points, write_results
    from instaseg.viz.points import render_views, write_viewer

    predictor = PointPredictor.load(checkpoint, downsample=downsample)
    output.mkdir(parents=True, exist_ok=True)
    summaries = []
    for path in list_point_files(source):
        kw = {} if path.is_dir() else {"max_points": max_points or MAX_POINTS}
        scene = read_points(path, **kw)
        pred, info = predictor.predict(scene)
        name = scene.name or path.stem
        write_results(output, name, scene.xyz, pred, predictor.class_names, extra={"timing": info})
        if renders:
            render_views(
                [("input", scene.xyz, scene.rgb), ("instances", scene.xyz, scene_colors(pred))],
                output / f"{name}.png",
            )
        if viewer:
            write_viewer(output / f"{name}.html", scene.xyz, scene_colors(pred), title=name)
        dropped = scene.extra.get("nonfinite", 0)
        log(
            f"{path}: {len(pred)} instances, {info['points']} points ({info['model_points']} "
            "through the model) "
            f"in {info['seconds']:.2f} s" + (f"; {dropped} NaN/inf points dropped" if dropped else "")
        )
        summaries.append({"file": str(path), "instances": len(pred), **info})
    return summaries
