"""``video_shapes[:N[:FRAMES[:SIZE]]]``: synthetic videos of moving shapes with true track ids.

Each video is a function of ``(seed, split, video index)`` only. 2-``max_objects`` circles, squares and
triangles (one solid colour each) move over a smooth background with varied speed (0.5-5 px/frame at
128 px), turn (their velocity rotates a little every frame), grow or shrink, brighten or darken, occlude
each other (each object has a fixed depth: painter's order) and bounce off a border placed *outside* the
frame, so they leave the picture and come back with the same track id. Masks are the visible parts;
an object with fewer than ``min_visible`` visible pixels in a frame is not annotated in that frame.
Splits use disjoint random streams. Frames are rendered on demand; the trajectories of a video are
simulated once and cached (one video at a time).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from instaseg.data.base import Record
from instaseg.data.video import VideoDataset, VideoInfo
from instaseg.errors import ConfigError

SHAPE_CLASSES = ("circle", "square", "triangle")
SPLIT_STREAMS = {"train": 10, "val": 11, "test": 12}
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [250, 190, 212], [0, 128, 128]],
                   dtype=np.float32)


def simulate_video(
    rng: np.random.Generator, size: int, frames: int, max_objects: int
) -> dict[str, np.ndarray]:
    """Trajectories of one video: ``cls`` (K,), ``colour`` (K, 3), ``state`` (T, K, 5) rows
    ``(cx, cy, r, angle, brightness)``; objects are listed back to front."""
    k = int(rng.integers(2, max_objects + 1))
    cls = rng.integers(1, len(SHAPE_CLASSES) + 1, size=k)
    colour = PALETTE[rng.permutation(len(PALETTE))[:k]]
    r = rng.uniform(0.11, 0.2, size=k) * size
    pos = rng.uniform(0.2 * size, 0.8 * size, size=(k, 2))
    speed = rng.uniform(0.5, 5.0, size=k) * size / 128
    heading = rng.uniform(0, 2 * np.pi, size=k)
    turn = rng.uniform(-0.12, 0.12, size=k)
    grow = rng.uniform(-0.015, 0.015, size=k)
    angle = rng.uniform(0, 2 * np.pi, size=k)
    spin = rng.uniform(-0.08, 0.08, size=k)
    bright = np.ones(k)
    fade = rng.uniform(-0.02, 0.02, size=k)
    state = np.zeros((frames, k, 5), dtype=np.float64)
    lo, hi = -0.3 * size, 1.3 * size  # the bouncing walls lie outside the picture: objects leave and re-enter
    for t in range(frames):
        state[t] = np.column_stack([pos[:, 0], pos[:, 1], r, angle, bright])
        heading += turn
        vel = speed[:, None] * np.column_stack([np.cos(heading), np.sin(heading)])
        pos = pos + vel
        for axis in (0, 1):
            out = (pos[:, axis] < lo) | (pos[:, axis] > hi)
            heading[out] = np.where(axis == 0, np.pi - heading[out], -heading[out])
            pos[:, axis] = np.clip(pos[:, axis], lo, hi)
        r = np.clip(r * (1 + grow), 0.08 * size, 0.26 * size)
        grow[(r <= 0.08 * size) | (r >= 0.26 * size)] *= -1
        angle = angle + spin
        bright = np.clip(bright + fade, 0.6, 1.3)
        fade[(bright <= 0.6) | (bright >= 1.3)] *= -1
    return {"cls": cls.astype(np.int64), "colour": colour, "state": state}


def _draw(canvas: np.ndarray, cls: int, cx: float, cy: float, r: float, angle: float, value: int) -> None:
    if cls == 1:
        cv2.circle(canvas, (int(round(cx)), int(round(cy))), int(round(r)), value, thickness=-1)
        return
    n = 4 if cls == 2 else 3
    t = angle + np.arange(n) * (2 * np.pi / n)
    pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], value)


def render_frame(sim: dict[str, np.ndarray], t: int, size: int, background: np.ndarray, noise_seed: Any,
                 min_visible: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frame ``t`` of a simulated video: ``image`` uint8 (size, size, 3), visible ``masks`` bool
    (N, size, size), ``labels`` (N,) and ``track_ids`` (N,) (1-based object index)."""
    ids = np.zeros((size, size), dtype=np.uint8)
    for j, (cx, cy, r, angle, _) in enumerate(sim["state"][t]):
        _draw(ids, int(sim["cls"][j]), cx, cy, r, angle, j + 1)
    k = len(sim["cls"])
    image = background.copy()
    colours = np.zeros((k + 1, 3), dtype=np.float32)
    colours[1:] = sim["colour"] * sim["state"][t, :, 4:5]
    fg = ids > 0
    image[fg] = colours[ids[fg]]
    image += np.random.default_rng(noise_seed).normal(0, 4, size=image.shape).astype(np.float32)
    visible = np.bincount(ids.ravel(), minlength=k + 1)[1:]
    keep = np.nonzero(visible >= min_visible)[0]
    masks = ids[None] == (keep + 1).astype(np.uint8)[:, None, None]
    return (np.clip(image, 0, 255).astype(np.uint8), masks, sim["cls"][keep].copy(),
            (keep + 1).astype(np.int64))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(70, 150, size=3).astype(np.float32)
    grid = rng.uniform(-20, 20, size=(4, 4, 3)).astype(np.float32)
    return base + cv2.resize(grid, (size, size), interpolation=cv2.INTER_LINEAR)


class VideoShapesDataset(VideoDataset):
    """``num_videos`` synthetic videos of ``frames`` frames, ``image_size`` square (see the module
    docstring). Dataset item ``i`` is frame ``i % frames`` of video ``i // frames``."""

    name = "video_shapes"

    def __init__(self, num_videos: int = 40, frames: int = 16, image_size: int = 128, *,
                 split: str | None = "train", seed: int = 0, max_objects: int = 4, min_visible: int = 30,
                 transform: Any = None) -> None:
        super().__init__(transform)
        split = split or "train"
        if split not in SPLIT_STREAMS:
            raise ConfigError(f"video_shapes: unknown split {split!r} (use one of {sorted(SPLIT_STREAMS)})")
        if num_videos < 1 or frames < 2 or image_size < 32 or max_objects < 2:
            raise ConfigError("video_shapes: need N >= 1, FRAMES >= 2, SIZE >= 32, max_objects >= 2 "
                              f"(got {num_videos}, {frames}, {image_size}, {max_objects})")
        self.num_videos, self.frames, self.image_size = int(num_videos), int(frames), int(image_size)
        self.split, self.seed = split, int(seed)
        self.max_objects, self.min_visible = int(max_objects), int(min_visible)
        self.class_names = ["background", *SHAPE_CLASSES]
        self.category_ids = list(range(len(self.class_names)))
        self.videos = [
            VideoInfo(v, f"video_shapes_{split}_{v:04d}", list(range(v * frames, (v + 1) * frames)),
                      image_size, image_size,
                      [f"video_shapes_{split}_{v:04d}/{t:05d}.png" for t in range(frames)])
            for v in range(num_videos)
        ]
        self._cache: tuple[int, dict[str, np.ndarray], np.ndarray] | None = None

    def __len__(self) -> int:
        return self.num_videos * self.frames

    def _video(self, v: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if self._cache is None or self._cache[0] != v:
            rng = np.random.default_rng([self.seed, SPLIT_STREAMS[self.split], v])
            background = _background(rng, self.image_size)
            self._cache = (v, simulate_video(rng, self.image_size, self.frames, self.max_objects), background)
        return self._cache[1], self._cache[2]

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"video_shapes index {index} out of range for {len(self)} frames")
        return index % len(self)

    def image_info(self, index: int) -> dict[str, Any]:
        index = self._check_index(index)
        v, t = divmod(index, self.frames)
        return {"id": index, "file_name": self.videos[v].file_names[t], "height": self.image_size,
                "width": self.image_size}

    def load_record(self, index: int) -> Record:
        index = self._check_index(index)
        v, t = divmod(index, self.frames)
        sim, background = self._video(v)
        image, masks, labels, track_ids = render_frame(
            sim, t, self.image_size, background, [self.seed, SPLIT_STREAMS[self.split], v, t],
            self.min_visible)
        return Record(image, masks, labels, np.zeros(len(labels), dtype=np.int64), index,
                      self.videos[v].file_names[t], {"video_id": v, "frame": t, "track_ids": track_ids})
