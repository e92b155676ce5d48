"""Interactive segmentation measured in clicks: any backend, any instance dataset, one protocol.

:func:`parse_backend` reads ``grabcut``, ``model RUN`` or ``sam CKPT`` (``:`` works as the separator
too); :func:`evaluate_backend` runs :func:`instaseg.evaluation.clicks.run_protocol` on every object of
a dataset and summarises it (:func:`instaseg.evaluation.clicks.summarize`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.errors import ConfigError, DataError
from instaseg.evaluation.clicks import ObjectRun, format_table, plot_curves, run_protocol, summarize

BACKENDS = ("grabcut", "model", "sam")


def parse_backend(text: str) -> tuple[str, str | None]:
    """``"grabcut"`` -> ``("grabcut", None)``; ``"model RUN"`` / ``"model:RUN"`` -> ``("model", "RUN")``;
    ``"sam CKPT"`` likewise. ConfigError (one line) for anything else."""
    text = text.strip()
    kind, _, arg = text.replace(":", " ", 1).partition(" ")
    arg = arg.strip() or None
    if kind not in BACKENDS:
        raise ConfigError(f"--backend {text!r}: expected 'grabcut', 'model RUN' or 'sam CKPT'")
    if kind == "grabcut" and arg is not None:
        raise ConfigError(f"--backend {text!r}: grabcut takes no argument")
    if kind != "grabcut" and arg is None:
        what = "run directory" if kind == "model" else "checkpoint"
        raise ConfigError(f"--backend {text!r}: {kind} needs a {what}")
    return kind, arg


def build_backend(text: str, *, device: str = "cpu") -> Any:
    """The :class:`~instaseg.predict.interactive.InteractiveSegmenter` that ``--backend text`` names."""
    from instaseg.predict.interactive import ClickSegmenter, ModelSegmenter, SamSegmenter

    kind, arg = parse_backend(text)
    if kind == "grabcut":
        return ClickSegmenter()
    if kind == "model":
        return ModelSegmenter(str(arg), device=device)
    return SamSegmenter(str(arg), device=device)


def iter_objects(dataset: Any, *, min_area: int = 25, max_objects: int | None = None,
                 max_per_image: int | None = None) -> Any:
    """Yield ``(image uint8 (H, W, 3), gt (H, W) bool, image index)`` for every non-crowd instance of at
    least ``min_area`` pixels, in dataset order (at most ``max_per_image`` per image, the largest first,
    and ``max_objects`` in all). Images that cannot be read are skipped with a warning."""
    count = 0
    for i in range(len(dataset)):
        try:
            rec = dataset.load_record(i)
        except DataError as exc:
            print(f"warning: skipped unreadable image: {exc}")
            continue
        areas = rec.masks.reshape(len(rec.masks), -1).sum(1) if len(rec.masks) else np.zeros(0)
        order = [int(k) for k in np.argsort(-areas, kind="stable")
                 if areas[k] >= min_area and not int(rec.iscrowd[k])]
        for k in order[:max_per_image]:
            yield rec.image, rec.masks[k].astype(bool), i
            count += 1
            if max_objects is not None and count >= max_objects:
                return


def evaluate_backend(
    segmenter: Any,
    dataset: Any,
    *,
    max_clicks: int = 20,
    min_area: int = 25,
    max_objects: int | None = None,
    max_per_image: int | None = None,
    stop_iou: float | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[ObjectRun]]:
    """Run the click protocol with ``segmenter`` on the objects of ``dataset`` (see :func:`iter_objects`).

    Returns ``(summary, runs)``; ``summary`` is :func:`~instaseg.evaluation.clicks.summarize`'s dict plus
    ``cpu_seconds``/``wall_seconds`` of the whole evaluation. DataError when there is no object.
    """
    runs: list[ObjectRun] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for image, gt, _ in iter_objects(dataset, min_area=min_area, max_objects=max_objects,
                                     max_per_image=max_per_image):

        def predict(points: np.ndarray, labels: np.ndarray, prev: np.ndarray | None,
                    image: np.ndarray = image) -> np.ndarray:
            return segmenter.segment(image, points, labels, prev_mask=prev)[0][0]

        runs.append(run_protocol(predict, gt, max_clicks=max_clicks, stop_iou=stop_iou))
        if log is not None and len(runs) % 10 == 0:
            last = np.mean([r.ious[-1] for r in runs])
            log(f"  {len(runs)} objects, mean IoU at the last click {last:.3f}")
    if not runs:
        raise DataError(None, f"no objects of at least {min_area} pixels to evaluate in this dataset")
    out = summarize(runs, max_clicks=max_clicks)
    out["cpu_seconds"] = time.process_time() - cpu0
    out["wall_seconds"] = time.perf_counter() - wall0
    out["stop_iou"] = stop_iou
    return out, runs


def write_results(results: dict[str, dict[str, Any]], output: str | Path, *, title: str = "",
                  runs: dict[str, list[ObjectRun]] | None = None) -> tuple[Path, Path]:
    """Write ``interactive.json`` (summaries, and per-object IoU curves when ``runs`` is given) and
    ``miou_vs_clicks.png`` into ``output``; returns both paths."""
    from instaseg.fileio import atomic_open

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"backends": results}
    if runs:
        payload["objects"] = {name: [{"ious": [round(v, 4) for v in r.ious], "seconds": r.seconds,
                                      "clicks": [list(c) for c in r.clicks]} for r in rs]
                              for name, rs in runs.items()}
    json_path = out / "interactive.json"
    with atomic_open(json_path, "w") as f:
        f.write(json.dumps(payload, indent=1))
    png = out / "miou_vs_clicks.png"
    plot_curves(results, str(png), title=title)
    return json_path, png


__all__ = ["BACKENDS", "build_backend", "evaluate_backend", "format_table", "iter_objects", "parse_backend",
           "write_results"]
