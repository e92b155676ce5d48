"""Panoptic segmentation as data: one segment-id map per image plus the list of its segments.

Conventions (those of the COCO panoptic format, so results load in panopticapi unchanged):

- ``id_map``: int32 ``(H, W)``; each pixel holds the id of the segment covering it, ``0`` = VOID
  (unlabeled or ignored). Segments never overlap: one id per pixel.
- a segment's ``category_id`` is the dataset's *original* category id (as in the JSON), ``isthing``
  tells instances ("things") from amorphous regions ("stuff").
- PNG encoding: ``id = R + 256 * G + 256**2 * B`` (:func:`rgb_to_id` / :func:`id_to_rgb`).

Training targets carry the semantic side as ``sem_seg``: int64 ``(H, W)`` with ``0`` for every thing
pixel, ``1..S`` for the stuff classes in contiguous order and :data:`SEM_IGNORE` (255) for VOID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEM_IGNORE = 255
"""``sem_seg`` value of VOID pixels: no loss, no evaluation."""

SEM_THINGS = 0
"""``sem_seg`` value of every pixel that belongs to a thing (instance) class."""


@dataclass
class PanopticSegment:
    """One segment: ``id`` (its value in the id map), original ``category_id``, ``isthing``,
    ``iscrowd`` (ground truth only), ``score`` (predictions only) and pixel ``area`` when known."""

    id: int
    category_id: int
    isthing: bool
    iscrowd: bool = False
    score: float | None = None
    area: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The COCO panoptic ``segments_info`` entry (``bbox`` is added by :func:`segments_info`)."""
        out: dict[str, Any] = {
            "id": int(self.id),
            "category_id": int(self.category_id),
            "iscrowd": int(self.iscrowd),
            "isthing": int(self.isthing),
        }
        if self.score is not None:
            out["score"] = float(self.score)
        if self.area is not None:
            out["area"] = int(self.area)
        return out


@dataclass
class PanopticResult:
    """A whole image's panoptic segmentation: ``id_map`` int32 (H, W) (0 = VOID) and its ``segments``.

    Every non-zero id in ``id_map`` should be listed in ``segments``; :meth:`validate` says which are not.
    """

    id_map: np.ndarray
    segments: list[PanopticSegment] = field(default_factory=list)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.id_map.shape[0]), int(self.id_map.shape[1])

    def validate(self) -> list[str]:
        """Problems as sentences (empty when consistent): ids in the map not listed, listed ids absent
        from the map, duplicate ids, a listed id 0."""
        problems: list[str] = []
        listed = [s.id for s in self.segments]
        if len(set(listed)) != len(listed):
            dup = sorted({i for i in listed if listed.count(i) > 1})
            problems.append(f"segment ids listed twice: {dup}")
        if 0 in listed:
            problems.append("segment id 0 is reserved for VOID")
        present = {int(v) for v in np.unique(self.id_map)} - {0}
        missing = sorted(present - set(listed))
        if missing:
            problems.append(f"ids in the PNG that segments_info does not list: {missing[:10]}")
        absent = sorted(set(listed) - present - {0})
        if absent:
            problems.append(f"segments listed but absent from the PNG: {absent[:10]}")
        return problems

    def areas(self) -> dict[int, int]:
        """Pixel count per segment id (VOID excluded)."""
        ids, counts = np.unique(self.id_map, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts, strict=True) if i != 0}

    def mask(self, segment_id: int) -> np.ndarray:
        """bool (H, W) mask of one segment."""
        return self.id_map == segment_id

    def semantic_map(
        self, stuff_index: dict[int, int], ignore: int = SEM_IGNORE
    ) -> np.ndarray:
        """int64 (H, W) training target: :data:`SEM_THINGS` on thing segments, ``stuff_index[category_id]``
        (1..S) on stuff segments, ``ignore`` on VOID, on crowd segments and on unknown categories."""
        out = np.full(self.id_map.shape, ignore, dtype=np.int64)
        for seg in self.segments:
            if seg.iscrowd and not seg.isthing:
                continue
            region = self.id_map == seg.id
            if seg.isthing:
                out[region] = ignore if seg.iscrowd else SEM_THINGS
            elif seg.category_id in stuff_index:
                out[region] = stuff_index[seg.category_id]
        return out


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) COCO panoptic PNG -> int32 (H, W) ids, ``R + 256 G + 256^2 B``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"a panoptic PNG must be RGB (H, W, 3), got shape {rgb.shape}")
    rgb = rgb[..., :3].astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(id_map: np.ndarray) -> np.ndarray:
    """int (H, W) ids -> uint8 (H, W, 3) COCO panoptic PNG colours (inverse of :func:`rgb_to_id`)."""
    ids = np.asarray(id_map).astype(np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256**3:
        raise ValueError("panoptic ids must lie in [0, 256**3)")
    out = np.empty((*ids.shape, 3), dtype=np.uint8)
    for c in range(3):
        out[..., c] = ids % 256
        ids = ids // 256
    return out


def segments_info(result: PanopticResult) -> list[dict[str, Any]]:
    """COCO panoptic ``segments_info`` for a result: each segment with ``area`` and an XYWH ``bbox``."""
    out = []
    for seg in result.segments:
        ys, xs = np.nonzero(result.id_map == seg.id)
        entry = seg.to_json()
        entry["area"] = int(len(xs))
        if len(xs):
            x0, y0 = int(xs.min()), int(ys.min())
            entry["bbox"] = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        else:
            entry["bbox"] = [0, 0, 0, 0]
        out.append(entry)
    return out


def stuff_index_map(stuff_category_ids: Sequence[int]) -> dict[int, int]:
    """Original stuff category id -> contiguous ``sem_seg`` index 1..S, in the given order."""
    return {int(c): i + 1 for i, c in enumerate(stuff_category_ids)}
