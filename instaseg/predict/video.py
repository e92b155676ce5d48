"""Video prediction: stream frames, detect, track, write an overlay MP4, YouTube-VIS results and MOTS text.

:func:`iter_frames` reads a video file or a folder of frames one frame at a time (the video is never
held in memory); a frame that cannot be decoded is yielded as ``None`` (skipped, counted and reported).
:func:`detect_frame` runs the predictor's model once per frame and keeps every detection down to the
tracker's low threshold (ByteTrack needs the low-score ones). :func:`make_tracker` builds one of the three
trackers over the *same* detections: ``temporal`` (Kalman + two-stage + embeddings + mask smoothing),
``bytetrack`` (the same code as plain ByteTrack) and ``iou`` (the greedy mask-IoU baseline).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from instaseg.data.ytvis import tracks_to_results, write_mots
from instaseg.errors import DataError
from instaseg.ops.lowres import lowres_inference
from instaseg.predict.temporal_tracker import TemporalTracker, TrackerConfig
from instaseg.predict.tracker import MaskIoUTracker
from instaseg.structures.paste import paste_masks_to_rles
from instaseg.viz.draw import instance_colors

TRACKERS = ("temporal", "bytetrack", "iou")
FRAME_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class FrameDetections:
    """One frame's detections in NumPy: ``boxes`` (K, 4) XYXY, ``scores`` (K,), ``labels`` (K,),
    ``mask_lowres`` (K, M, M) box-relative probabilities, ``embeddings`` (K, D) or None, ``size`` (H, W)."""

    size: tuple[int, int]
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    mask_lowres: np.ndarray
    embeddings: np.ndarray | None = None


def iter_frames(source: str | Path, max_frames: int | None = None
                ) -> Iterator[tuple[int, np.ndarray | None, float, str]]:
    """``(index, RGB uint8 frame or None if unreadable, fps, name)`` for each frame of a video file or of
    a folder of images (sorted by name), streamed. DataError when nothing can be opened."""
    from instaseg.data.io import read_image

    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_EXTS)
        if not files:
            raise DataError(path, "folder holds no frame images")
        for i, f in enumerate(files[:max_frames]):
            try:
                yield i, read_image(f), 25.0, f.name
            except DataError:
                yield i, None, 25.0, f.name
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(path, "cannot open video (unsupported codec or not a video file)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    index, failures = 0, 0
    try:
        while max_frames is None or index < max_frames:
            ok, frame = cap.read()
            if not ok:
                # a corrupt frame mid-stream: skip it while frames remain, stop at the end
                if index < total and failures < 25:
                    failures += 1
                    yield index, None, fps, f"{path.name}#{index}"
                    index += 1
                    continue
                break
            failures = 0
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), fps, f"{path.name}#{index}"
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise DataError(path, "video has no readable frames")


def detect_frame(model: Any, frame: np.ndarray | torch.Tensor, min_score: float) -> FrameDetections:
    """Run ``model`` (eval mode, the instaseg contract) on one frame; keep detections with
    ``score >= min_score``."""
    image = frame if isinstance(frame, torch.Tensor) else torch.from_numpy(
        np.ascontiguousarray(frame)).permute(2, 0, 1).float().div_(255.0)
    with torch.inference_mode():
        det = lowres_inference(model, [image])[0]
    keep = det["scores"] >= min_score
    emb = det.get("embeddings")
    return FrameDetections(
        (int(image.shape[-2]), int(image.shape[-1])), det["boxes"][keep].numpy().astype(np.float64),
        det["scores"][keep].numpy().astype(np.float64), det["labels"][keep].numpy(),
        det["mask_lowres"][keep].float().numpy(), None if emb is None else emb[keep].float().numpy())


@dataclass
class TrackerStep:
    """A tracker over :class:`FrameDetections`: ``step(det)`` returns ``(index, track_ids, mask_lowres)``
    of the detections kept in that frame (``mask_lowres`` smoothed by the temporal tracker)."""

    kind: str
    config: TrackerConfig
    _impl: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in TRACKERS:
            raise ValueError(f"unknown tracker {self.kind!r} (use one of {', '.join(TRACKERS)})")
        if self.kind == "iou":
            self._impl = MaskIoUTracker()
        else:
            cfg = self.config if self.kind == "temporal" else TrackerConfig.bytetrack(
                high_thresh=self.config.high_thresh, low_thresh=self.config.low_thresh,
                new_track_thresh=self.config.new_track_thresh)
            self._impl = TemporalTracker(cfg)

    def step(self, det: FrameDetections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.kind == "iou":  # the baseline sees the confident detections only, as `predict` gives it
            idx = np.nonzero(det.scores >= self.config.high_thresh)[0]
            rles = paste_masks_to_rles(det.mask_lowres[idx], det.boxes[idx], *det.size)
            ids = self._impl.update(rles, det.labels[idx].tolist())
            return idx, np.asarray(ids, dtype=np.int64), det.mask_lowres[idx]
        out = self._impl.update(det.boxes, det.scores, det.labels, det.embeddings, det.mask_lowres)
        return out.index, out.track_ids, out.mask_lowres


def wants_video_pipeline(predictor: Any, source: str | Path, tracker: str | None) -> str | None:
    """The tracker to run :func:`run_video` with, or None for the image path: a video file or frame
    folder goes through the video pipeline when ``tracker`` is given or the model is a video model."""
    from instaseg.models.registry import model_task
    from instaseg.predict.files import is_video

    path = Path(source)
    try:
        video_model = model_task(predictor.name) == "video"
    except Exception:  # an exported model whose name is not registered: an image model
        video_model = False
    if tracker is None and not video_model:
        return None
    if not (path.is_dir() or (path.is_file() and is_video(path))):
        if tracker is not None:
            raise DataError(path, "--tracker needs a video file or a folder of frames")
        return None
    kind = tracker or "temporal"
    if kind not in TRACKERS:
        from instaseg.errors import ConfigError

        raise ConfigError(f"--tracker must be one of {', '.join(TRACKERS)}, got {kind!r}")
    return kind


def make_tracker(kind: str = "temporal", config: TrackerConfig | None = None) -> TrackerStep:
    """A fresh tracker of ``kind`` (one of :data:`TRACKERS`) for one video."""
    return TrackerStep(kind, config or TrackerConfig())


def tracked_frame(det: FrameDetections, index: np.ndarray, ids: np.ndarray, masks: np.ndarray,
                  category_ids: list[int], mask_thresh: float = 0.5) -> list[tuple[int, int, float, dict]]:
    """``(track_id, category_id, score, compressed RLE)`` of a frame's tracked detections."""
    if not len(index):
        return []
    rles = paste_masks_to_rles(masks, det.boxes[index], *det.size, threshold=mask_thresh)
    return [(int(t), int(category_ids[int(det.labels[i])]), float(det.scores[i]), r)
            for t, i, r in zip(ids.tolist(), index.tolist(), rles, strict=True)]


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable RGB colour for a track id (the same id is always drawn in the same colour)."""
    palette = instance_colors(32)
    return tuple(int(v) for v in palette[(track_id * 7) % 32])  # type: ignore[return-value]


def draw_tracks(
    frame: np.ndarray, items: list[tuple[int, int, float, dict]], names: dict[int, str]
) -> np.ndarray:
    """Overlay of tracked masks: one stable colour per track id, caption ``#id class``."""
    from instaseg.structures.masks import rle_decode

    out = frame.astype(np.float32)
    for tid, _, _, rle in items:
        m = rle_decode(rle)
        colour = np.array(track_colour(tid), dtype=np.float32)
        out[m] = 0.5 * out[m] + 0.5 * colour
    out = out.astype(np.uint8)
    for tid, cat, _, rle in items:
        ys, xs = np.nonzero(rle_decode(rle))
        if len(xs):
            cv2.putText(out, f"#{tid} {names.get(cat, cat)}", (int(xs.min()), max(int(ys.min()) - 2, 8)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.35, track_colour(tid), 1, cv2.LINE_AA)
    return out


@dataclass
class VideoSummary:
    """What :func:`run_video` did: frame counts, timings (wall and CPU seconds) and written files."""

    frames: int = 0
    corrupt: int = 0
    corrupt_names: list[str] = field(default_factory=list)
    tracks: int = 0
    detect_s: float = 0.0
    track_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    files: dict[str, str] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


def run_video(predictor: Any, source: str | Path, output: str | Path, *, tracker: str = "temporal",
              config: TrackerConfig | None = None, overlay: bool = True, max_frames: int | None = None,
              log: Callable[[str], None] | None = None) -> VideoSummary:
    """Predict and track a video file or frame folder; write ``overlay.mp4`` (unless ``overlay`` is off),
    ``results.json`` (YouTube-VIS results, ``video_id`` 1), ``tracks.txt`` (MOTS) and ``summary.json``
    under ``output``. Frames are streamed; unreadable frames are skipped, counted and reported through
    ``log``, and keep their slot in the timeline (null segmentations)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if config is None:  # the rules saved with a video model (video.tracker), else the defaults
        config = TrackerConfig(**dict(getattr(predictor, "meta", {}).get("tracker") or {}))
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    step = make_tracker(tracker, config)
    min_score = min(config.low_thresh, config.high_thresh) if tracker != "iou" else config.high_thresh
    names = {cid: n for cid, n in zip(predictor.category_ids, predictor.class_names, strict=False)}
    summary = VideoSummary()
    frames: list[list[tuple[int, int, float, dict]]] = []
    writer, size = None, None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        for i, frame, fps, name in iter_frames(source, max_frames):
            if frame is None or (size is not None and frame.shape[:2] != size):
                summary.corrupt += 1
                summary.corrupt_names.append(name)
                log(f"instaseg: skipped unreadable frame {name}")
                frames.append([])
                continue
            size = frame.shape[:2]
            t0 = time.perf_counter()
            with predictor.lock:
                det = detect_frame(predictor.model, frame, min_score)
            t1 = time.perf_counter()
            index, ids, masks = step.step(det)
            summary.track_s += time.perf_counter() - t1
            summary.detect_s += t1 - t0
            items = tracked_frame(det, index, ids, masks, predictor.category_ids, predictor.mask_thresh)
            frames.append(items)
            summary.frames += 1
            if overlay:
                if writer is None:
                    target = out / "overlay.mp4"
                    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        raise DataError(target, "OpenCV cannot write an mp4 video here")
                    summary.files["overlay"] = str(target)
                writer.write(cv2.cvtColor(draw_tracks(frame, items, names), cv2.COLOR_RGB2BGR))
            if (i + 1) % 25 == 0:
                log(f"frame {i + 1}: {summary.frames / (time.perf_counter() - wall0):.1f} frames/s")
    finally:
        if writer is not None:
            writer.release()
    if summary.frames == 0:
        raise DataError(source, f"no frame could be read ({summary.corrupt} unreadable)")
    summary.wall_s, summary.cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    h, w = size  # type: ignore[misc]
    results = tracks_to_results(1, frames, len(frames), h, w)
    summary.tracks = len(results)
    (out / "results.json").write_text(json.dumps(results))
    write_mots(out / "tracks.txt", [[(t, c, r) for t, c, _, r in items] for items in frames])
    summary.files.update(results=str(out / "results.json"), mots=str(out / "tracks.txt"))
    info = {"source": str(source), "tracker": tracker, "frames": summary.frames,
            "corrupt_frames": summary.corrupt,
            "corrupt_names": summary.corrupt_names, "tracks": summary.tracks, "fps": summary.fps,
            "wall_s": summary.wall_s, "cpu_s": summary.cpu_s, "detect_s": summary.detect_s,
            "track_s": summary.track_s, "files": summary.files}
    (out / "summary.json").write_text(json.dumps(info, indent=2))
    log(f"{summary.frames} frames ({summary.corrupt} unreadable skipped), {summary.tracks} tracks, "
        f"{summary.fps:.1f} frames/s")
    return summary
