"""Video datasets: frames as an :class:`InstanceDataset` plus the video structure and true track ids.

A video dataset is an ordinary instance dataset of *frames* (so the image engine trains its detector
unchanged) that also implements :class:`VideoDataset`:

- ``videos``: list of :class:`VideoInfo` (``id``, ``name``, ``frames``: dataset indices in time order,
  ``height``, ``width``);
- every frame's :class:`~instaseg.data.base.Record` carries ``extra["video_id"]``, ``extra["frame"]``
  (index in its video) and ``extra["track_ids"]`` int64 (N,), one per instance, stable over the video.

:class:`ClipDataset` yields short runs of frames of one video with the *same* augmentation drawn once for
the whole clip; :func:`video_stats` counts tracks, track lengths, occlusions and re-entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from instaseg.data.base import InstanceDataset, Record, make_target


@dataclass
class VideoInfo:
    """One video: ``frames`` are dataset indices in time order."""

    id: int
    name: str
    frames: list[int]
    height: int
    width: int
    file_names: list[str] = field(default_factory=list)


class VideoDataset(InstanceDataset):
    """Base of the video datasets (see the module docstring)."""

    videos: list[VideoInfo]


def is_video_dataset(dataset: Any) -> bool:
    """Whether ``dataset`` exposes videos and track ids (see :class:`VideoDataset`)."""
    return isinstance(getattr(dataset, "videos", None), list)


def track_ids_of(rec: Record) -> np.ndarray:
    """The record's true track ids (int64 (N,)); ``-1`` for every instance when it has none."""
    ids = rec.extra.get("track_ids")
    if ids is None:
        return np.full(len(rec.labels), -1, dtype=np.int64)
    return np.asarray(ids, dtype=np.int64)


def clip_transform(rng: np.random.Generator, records: list[Record], *, flip_p: float = 0.5,
                   brightness: float = 0.15) -> list[Record]:
    """Apply ONE random augmentation to every frame of a clip (same flip, same brightness gain), so the
    association head sees consistent geometry across the clip. Returns new records."""
    flip = rng.random() < flip_p
    gain = float(rng.uniform(1 - brightness, 1 + brightness))
    out = []
    for rec in records:
        image, masks = rec.image, rec.masks
        if flip:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
        image = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        out.append(Record(np.ascontiguousarray(image), np.ascontiguousarray(masks), rec.labels, rec.iscrowd,
                          rec.image_id, rec.file_name, dict(rec.extra)))
    return out


class ClipDataset(torch.utils.data.Dataset):
    """Clips of ``length`` frames ``stride`` apart from one video of ``base`` (a :class:`VideoDataset`).

    Item ``i`` is a list of ``(image, target)`` samples (the schema of :mod:`instaseg.data.base`) whose
    targets also hold ``track_ids`` Tensor[N] int64; one augmentation is drawn per clip (seeded by
    ``(seed, i)``) when ``augment`` is set. Clips start at every frame that leaves room for the clip.
    """

    def __init__(self, base: Any, *, length: int = 2, stride: int = 1, augment: bool = True, seed: int = 0):
        if not is_video_dataset(base):
            raise ValueError(f"ClipDataset needs a video dataset, got {type(base).__name__}")
        if length < 1 or stride < 1:
            raise ValueError(f"ClipDataset: length and stride must be >= 1, got {length}, {stride}")
        self.base, self.length, self.stride, self.augment, self.seed = base, length, stride, augment, seed
        span = (length - 1) * stride
        self.starts = [(v, k) for v, info in enumerate(base.videos) for k in range(len(info.frames) - span)]

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> list[tuple[Tensor, dict[str, Any]]]:
        v, k = self.starts[index]
        frames = self.base.videos[v].frames[k : k + (self.length - 1) * self.stride + 1 : self.stride]
        records = [self.base.load_record(i) for i in frames]
        if self.augment:
            records = clip_transform(np.random.default_rng([self.seed, index]), records)
        out = []
        for rec in records:
            image = torch.from_numpy(np.ascontiguousarray(rec.image)).permute(2, 0, 1).float().div_(255.0)
            h, w = rec.image.shape[:2]
            target = make_target(torch.from_numpy(rec.masks.reshape(-1, h, w)), torch.from_numpy(rec.labels),
                                 torch.from_numpy(rec.iscrowd), rec.image_id)
            target["track_ids"] = torch.from_numpy(track_ids_of(rec))
            out.append((image, target))
        return out


def video_stats(dataset: Any, *, occlusion_iou: float = 0.0) -> dict[str, Any]:
    """Track statistics of a video dataset: ``videos``, ``frames``, ``tracks``, ``track_length``
    {min, mean, max} (frames in which a track is annotated), ``occlusions`` (frames where a visible track
    lost >= 30% of the area it had in its previous annotated frame while another track overlaps its
    box, a proxy usable on any dataset), ``reentries`` (a track absent for >= 1 frame then back) and
    ``track_ids_known`` (false when the dataset has no true ids)."""
    from instaseg.structures.masks import rle_areas, rle_boxes

    lengths: list[int] = []
    occlusions = reentries = 0
    known = True
    for info in dataset.videos:
        seen: dict[int, list[int]] = {}
        last_area: dict[int, float] = {}
        for t, index in enumerate(info.frames):
            rec_ids, rles = _frame_tracks(dataset, index)
            if rec_ids is None:
                known = False
                continue
            areas = rle_areas(rles) if rles else np.zeros(0)
            boxes = rle_boxes(rles) if rles else np.zeros((0, 4))
            for j, tid in enumerate(rec_ids):
                seen.setdefault(tid, []).append(t)
                prev = last_area.get(tid)
                if prev and areas[j] < 0.7 * prev and _overlaps_other(boxes, j):
                    occlusions += 1
                last_area[tid] = float(areas[j])
        for frames in seen.values():
            lengths.append(len(frames))
            reentries += int(np.sum(np.diff(frames) > 1))
    return {
        "videos": len(dataset.videos),
        "frames": int(sum(len(v.frames) for v in dataset.videos)),
        "tracks": len(lengths),
        "track_length": {"min": int(min(lengths)) if lengths else 0,
                         "mean": round(float(np.mean(lengths)), 2) if lengths else 0.0,
                         "max": int(max(lengths)) if lengths else 0},
        "occlusions": occlusions,
        "reentries": reentries,
        "track_ids_known": known,
    }


def format_video_stats(stats: dict[str, Any]) -> str:
    """Human-readable lines for :func:`video_stats`."""
    tl = stats["track_length"]
    known = "" if stats["track_ids_known"] else " (no true track ids in this dataset)"
    return (f"videos: {stats['videos']}, frames: {stats['frames']}, tracks: {stats['tracks']}{known}\n"
            f"track length (frames): min {tl['min']}, mean {tl['mean']}, max {tl['max']}\n"
            f"occlusions: {stats['occlusions']}, re-entries: {stats['reentries']}")


def _frame_tracks(dataset: Any, index: int) -> tuple[list[int] | None, list[dict[str, Any]]]:
    fn = getattr(dataset, "load_tracks", None)
    if fn is not None:
        return fn(index)
    from instaseg.structures.masks import encode_masks

    rec = dataset.load_record(index)
    ids = track_ids_of(rec)
    if len(ids) and (ids < 0).any():
        return None, []
    return [int(i) for i in ids], [encode_masks(m[None])[0] for m in rec.masks]


def _overlaps_other(boxes: np.ndarray, j: int) -> bool:
    """Whether box ``j`` of ``boxes`` (XYWH, COCO) overlaps any other box."""
    if len(boxes) < 2:
        return False
    x, y, w, h = boxes[j]
    others = np.delete(boxes, j, axis=0)
    ix = np.minimum(x + w, others[:, 0] + others[:, 2]) - np.maximum(x, others[:, 0])
    iy = np.minimum(y + h, others[:, 1] + others[:, 3]) - np.maximum(y, others[:, 1])
    return bool(((ix > 0) & (iy > 0)).any())
