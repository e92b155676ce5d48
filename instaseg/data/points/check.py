"""``instaseg data stats`` and ``instaseg data check`` on point datasets.

Statistics: scenes, points per scene (min/median/max), instances, points per instance, classes.
Check findings (counted, with examples; no tracebacks): files that fail to load (one-line reason),
empty scenes, NaN/infinite coordinates, instance ids without a class, instances spread over several
classes, labels outside the class list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from instaseg.data.check import ProblemReport
from instaseg.errors import DataError

PROBLEMS: dict[str, str] = {
    "unloadable_scene": "scene fails to load",
    "empty_scene": "scene without points",
    "nonfinite_points": "points with NaN or infinite coordinates",
    "instance_without_class": "instance ids on points without a class (semantic -1)",
    "mixed_class_instance": "instance whose points have several classes",
    "unknown_class": "semantic label outside the class list",
    "no_instances": "scene without any instance",
}


@dataclass
class PointCheckReport(ProblemReport):
    """The point linter's report: :data:`PROBLEMS` over ``scenes`` scenes of ``points`` points."""

    scenes: int = 0
    points: int = 0
    kinds: ClassVar[dict[str, str]] = PROBLEMS

    def sizes(self) -> dict[str, int]:
        return {"scenes": self.scenes, "points": self.points}


def _scene_or_error(dataset: Any, i: int) -> Any:
    try:
        return dataset.scene(i), None
    except DataError as exc:
        return None, str(exc)


def check_points(dataset: Any, source: str, *, max_examples: int = 5) -> PointCheckReport:
    """Lint every scene of a point dataset (read with NaN points kept, so they are counted)."""
    if hasattr(dataset, "nonfinite"):
        dataset.nonfinite = "keep"
    report = PointCheckReport(source, max_examples=max_examples)
    n_classes = len(dataset.class_names)
    stuff = set(getattr(dataset, "stuff_classes", ()))
    for i in range(len(dataset)):
        scene, err = _scene_or_error(dataset, i)
        report.scenes += 1
        if scene is None:
            kind = (
                "empty_scene"
                if err and (err.endswith("no points") or err.endswith("empty file"))
                else "unloadable_scene"
            )
            report.add(kind, err or "?")
            continue
        name = scene.name or f"scene {i}"
        report.points += len(scene)
        if len(scene) == 0:
            report.add("empty_scene", name)
            continue
        bad = int((~np.isfinite(scene.xyz).all(1)).sum())
        if bad:
            report.add("nonfinite_points", f"{name}: {bad} of {len(scene)} points", bad)
        orphan = (scene.instance >= 0) & (scene.semantic < 0)
        if orphan.any():
            ids = np.unique(scene.instance[orphan])
            report.add(
                "instance_without_class",
                f"{name}: instance ids {ids[:5].tolist()} ({int(orphan.sum())} points)",
                len(ids),
            )
        unknown = scene.semantic >= n_classes
        if unknown.any():
            report.add("unknown_class", f"{name}: labels {np.unique(scene.semantic[unknown])[:5].tolist()}")
        has = scene.instance >= 0
        if has.any():
            pairs = np.unique(np.stack([scene.instance[has], scene.semantic[has]], 1), axis=0)
            pairs = pairs[pairs[:, 1] >= 0]
            ids, counts = np.unique(pairs[:, 0], return_counts=True)
            if (counts > 1).any():
                report.add(
                    "mixed_class_instance",
                    f"{name}: instances {ids[counts > 1][:5].tolist()}",
                    int((counts > 1).sum()),
                )
        elif not (set(np.unique(scene.semantic).tolist()) <= stuff | {-1}) or not stuff:
            report.add("no_instances", name)
    return report


def point_stats(dataset: Any, source: str) -> dict[str, Any]:
    """Scene, point, instance and class counts of a point dataset (bad scenes are counted, not raised)."""
    sizes, inst_sizes, failed = [], [], []
    per_class = np.zeros(len(dataset.class_names), np.int64)
    inst_per_class = np.zeros(len(dataset.class_names), np.int64)
    stuff = tuple(getattr(dataset, "stuff_classes", ()))
    for i in range(len(dataset)):
        scene, err = _scene_or_error(dataset, i)
        if scene is None:
            failed.append(err)
            continue
        sizes.append(len(scene))
        sem = scene.semantic[(scene.semantic >= 0) & (scene.semantic < len(per_class))]
        per_class += np.bincount(sem, minlength=len(per_class))
        gt = scene.ground_truth(stuff)
        inst_sizes.extend(gt.sizes().tolist())
        inst_per_class += np.bincount(gt.labels, minlength=len(per_class))[: len(per_class)]

    def summary(values: list[int]) -> dict[str, float]:
        if not values:
            return {"min": 0, "median": 0, "max": 0, "mean": 0}
        a = np.asarray(values)
        return {
            "min": int(a.min()),
            "median": float(np.median(a)),
            "max": int(a.max()),
            "mean": round(float(a.mean()), 1),
        }

    return {
        "source": source,
        "task": "points",
        "scenes": len(sizes),
        "failed_scenes": len(failed),
        "failures": failed[:5],
        "points": int(sum(sizes)),
        "points_per_scene": summary(sizes),
        "instances": len(inst_sizes),
        "points_per_instance": summary(inst_sizes),
        "classes": {
            name: {"points": int(per_class[c]), "instances": int(inst_per_class[c]), "stuff": c in stuff}
            for c, name in enumerate(dataset.class_names)
        },
    }


def format_point_stats(stats: dict[str, Any]) -> str:
    """The statistics as text."""
    p, q = stats["points_per_scene"], stats["points_per_instance"]
    lines = [
        f"{stats['source']}: {stats['scenes']} scenes, {stats['points']} points, "
        f"{stats['instances']} instances",
        f"points per scene: min {p['min']}, median {p['median']}, max {p['max']}",
        f"points per instance: min {q['min']}, median {q['median']}, max {q['max']}",
    ]
    if stats["failed_scenes"]:
        lines.append(f"{stats['failed_scenes']} scenes failed to load, e.g. {stats['failures'][0]}")
    lines.append(f"{'class':<14} {'points':>9} {'instances':>9}")
    for name, v in stats["classes"].items():
        lines.append(f"{name:<14} {v['points']:9d} {v['instances']:9d}" + ("  (stuff)" if v["stuff"] else ""))
    return "\n".join(lines)
