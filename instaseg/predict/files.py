"""``instaseg predict``: run a :class:`~instaseg.predict.predictor.Predictor` over an image, a folder,
a glob or a video, writing overlay images (or an overlay video) and a COCO results JSON with RLE masks.

COCO results (``results.json``): one entry per instance with ``image_id``, ``category_id`` (the
dataset's original id), ``segmentation`` (compressed RLE), ``bbox`` (XYWH), ``score``, plus
``file_name``; video entries also carry ``frame`` and ``track_id`` (stable across frames, from
:class:`~instaseg.predict.tracker.MaskIoUTracker`). ``image_id`` is the file name's number when every
input's stem is a distinct number (COCO's ``000000000139.jpg`` -> 139), otherwise the image's index
in the sorted input; for a video it is the frame index.
"""

from __future__ import annotations

import glob
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from instaseg.data.io import read_image
from instaseg.errors import ConfigError, DataError
from instaseg.fileio import atomic_open
from instaseg.predict.dataset import instances_to_results
from instaseg.predict.predictor import Predictor
from instaseg.predict.tracker import MaskIoUTracker
from instaseg.structures.instances import Instances
from instaseg.structures.masks import rle_decode
from instaseg.viz.draw import draw_instances, instance_colors

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
RESULTS_NAME = "results.json"


@dataclass
class PredictSummary:
    """What a predict run did (printed by the CLI)."""

    images: int = 0  # images and video frames processed
    frames: int = 0  # of which video frames
    instances: int = 0
    skipped: int = 0
    results_path: Path | None = None


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTS


def list_sources(source: str) -> list[Path]:
    """Expand SOURCE (an image or video file, a folder of images, or a glob) into sorted paths.

    Raises :class:`DataError` naming SOURCE when it matches nothing usable."""
    path = Path(source)
    if any(ch in source for ch in "*?[") and not path.exists():
        found = sorted(Path(p) for p in glob.glob(source, recursive=True))
        files = [p for p in found if p.is_file() and (p.suffix.lower() in IMAGE_EXTS or is_video(p))]
        if not files:
            raise DataError(source, "the glob matches no image or video files")
        return files
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise DataError(path, f"no image files ({', '.join(sorted(IMAGE_EXTS))}) in this folder")
        return files
    if not path.exists():
        raise DataError(path, "no such file, folder or glob match")
    return [path]


def image_ids(paths: list[Path]) -> list[int]:
    """COCO image ids: the numbers in the file names when every stem is a distinct number (COCO's
    ``000000000139.jpg`` -> 139), else the positions in the sorted input."""
    stems = [p.stem for p in paths]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(len(paths)))


DENSE_OVERLAY_BYTES = 1 << 28  # above this K x H x W, masks are drawn one at a time


def draw_overlay(image: np.ndarray, inst: Instances, names: list[str]) -> np.ndarray:
    """Overlay of ``inst`` on ``image``, one caption per instance in ``names``. Memory stays at one
    ``H x W`` mask at a time for many instances on a large image (tiled predictions)."""
    h, w = inst.image_size
    boxes, scores, labels = inst.boxes.numpy(), inst.scores.numpy(), np.arange(len(names))
    if inst.mask_kind is not None and len(inst) * h * w > DENSE_OVERLAY_BYTES:
        out = image.copy()
        colors = instance_colors(len(inst))
        for k, rle in enumerate(inst.to_rles()):
            m = rle_decode(rle)
            out[m] = (out[m] * 0.5 + colors[k] * 0.5).astype(np.uint8)
        # One name per instance, so labels index into ``names`` directly.
        return draw_instances(out, None, boxes=boxes, labels=labels, scores=scores, class_names=names)
    if inst.mask_kind is not None:
        masks = inst.to_dense_masks()
    else:
        masks = np.zeros((len(inst), h, w), bool)
    return draw_instances(image, masks, boxes=boxes, labels=labels, scores=scores, class_names=names)



def _results(inst: Instances, predictor: Predictor, image_id: int, file_name: str) -> list[dict[str, Any]]:
    """COCO results rows of one image (:func:`~instaseg.predict.dataset.instances_to_results`, rounded
    for a compact JSON, with the file name)."""
    rows = instances_to_results(inst, image_id, predictor.category_ids, predictor.mask_thresh)
    for row in rows:
        row["bbox"] = [round(v, 2) for v in row["bbox"]]
        row["score"] = round(row["score"], 5)
        row["file_name"] = file_name
    return rows


def _write_json_atomic(obj: Any, path: Path) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f)


def _unique(path: Path, used: set[Path]) -> Path:
    """``path`` or ``stem_2.ext``, ``stem_3.ext``... when two inputs share a stem."""
    candidate, n = path, 2
    while candidate in used:
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
        n += 1
    used.add(candidate)
    return candidate


def iter_video_frames(path: Path, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray, float]]:
    """Frames of a video in order as ``(index, RGB uint8 (H, W, 3), fps)``. DataError if unreadable."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(path, "cannot open video (unsupported codec or not a video file)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
    index = 0
    try:
        while max_frames is None or index < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), fps
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise DataError(path, "video has no readable frames")


def output_file(out_dir: Path, name: str, *, overwrite: bool) -> Path:
    """``out_dir / name``, the results file of a prediction run, after checking that ``out_dir`` is a
    folder (or absent) and that the file is not there already unless ``overwrite``: a user's earlier
    results are never replaced by accident."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--output {out_dir}: exists and is not a folder")
    path = out_dir / name
    if path.exists() and not overwrite:
        raise ConfigError(f"{path}: already exists; choose another --output or pass --overwrite")
    return path


def run_predict(
    predictor: Predictor,
    source: str,
    output: str | Path,
    *,
    overwrite: bool = False,
    save_overlays: bool = True,
    max_frames: int | None = None,
    log: Callable[[str], None] | None = None,
    tile: dict[str, Any] | None = None,
) -> PredictSummary:
    """Predict on every input of ``source`` and write overlays and ``results.json`` under ``output``.

    Unreadable images are reported (one line each through ``log``) and skipped. Refuses to replace an
    existing ``results.json`` unless ``overwrite``. ``tile``: options of
    :meth:`~instaseg.predict.predictor.Predictor.predict_tiled` to predict images tile by tile."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_dir = Path(output)
    results_path = output_file(out_dir, RESULTS_NAME, overwrite=overwrite)
    sources = list_sources(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary(results_path=results_path)
    results: list[dict[str, Any]] = []
    used: set[Path] = set()
    ids = image_ids(sources)
    for index, path in enumerate(sources):
        if is_video(path):
            try:
                _predict_video(predictor, path, out_dir, results, summary, save_overlays, max_frames, used)
            except DataError as exc:
                summary.skipped += 1
                log(f"instaseg: skipped {exc}")
            continue
        try:
            image = read_image(path)
        except DataError as exc:
            summary.skipped += 1
            log(f"instaseg: skipped {exc}")
            continue
        inst = predictor.predict_tiled(image, **tile) if tile else predictor.predict(image)
        inst = inst.with_rles(predictor.mask_thresh)
        results.extend(_results(inst, predictor, ids[index], path.name))
        summary.images += 1
        summary.instances += len(inst)
        if save_overlays:
            target = _unique(out_dir / f"{path.stem}.jpg", used)
            overlay = draw_overlay(image, inst, predictor.class_names_of(inst))
            cv2.imwrite(str(target), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    if summary.images == 0:
        raise DataError(source, f"no image could be read ({summary.skipped} skipped)")
    _write_json_atomic(results, results_path)
    return summary


def _predict_video(
    predictor: Predictor,
    path: Path,
    out_dir: Path,
    results: list[dict[str, Any]],
    summary: PredictSummary,
    save_overlays: bool,
    max_frames: int | None,
    used: set[Path],
) -> None:
    tracker = MaskIoUTracker()
    writer = None
    try:
        for frame_index, frame, fps in iter_video_frames(path, max_frames):
            inst = tracker.track(predictor.predict(frame).with_rles(predictor.mask_thresh))
            for row in _results(inst, predictor, frame_index, path.name):
                results.append({**row, "frame": frame_index})
            summary.images += 1
            summary.frames += 1
            summary.instances += len(inst)
            if save_overlays:
                if writer is None:
                    h, w = frame.shape[:2]
                    target = _unique(out_dir / f"{path.stem}_overlay.mp4", used)
                    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    if not writer.isOpened():
                        raise DataError(target, "OpenCV cannot write an mp4 video here")
                names = [f"#{t} {n}" for t, n in zip(inst.track_ids.tolist(), predictor.class_names_of(inst),
                                                     strict=True)]  # type: ignore[union-attr]
                writer.write(cv2.cvtColor(draw_overlay(frame, inst, names), cv2.COLOR_RGB2BGR))
    finally:
        if writer is not None:
            writer.release()
