"""Panoptic fusion: instance detections + a semantic map -> one non-overlapping panoptic segmentation.

The standard heuristic of Panoptic FPN (Kirillov et al. 2019): instances are painted best score first,
each on the pixels still free, and dropped when too much of its mask is already taken; then each stuff
class of the semantic map fills the pixels still free, if that leaves at least ``stuff_area_thresh``
pixels; everything else is VOID (id 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from instaseg.structures.panoptic import PanopticResult, PanopticSegment

FUSION_KEYS = ("overlap_threshold", "stuff_area_thresh", "instances_score_thresh")


@dataclass(frozen=True)
class FusionParams:
    """Fusion knobs (config keys ``model.kwargs.<name>`` of the panoptic models).

    ``overlap_threshold``: an instance whose mask is more than this fraction already taken by better
    instances is dropped; ``stuff_area_thresh``: a stuff region needs at least this many free pixels
    (at the input image's resolution); ``instances_score_thresh``: instances scoring below it are not
    painted."""

    overlap_threshold: float = 0.5
    stuff_area_thresh: int = 64
    instances_score_thresh: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap_threshold <= 1.0 or not 0.0 <= self.instances_score_thresh <= 1.0:
            raise ValueError("overlap_threshold and instances_score_thresh must lie in [0, 1]")
        if self.stuff_area_thresh < 0:
            raise ValueError(f"stuff_area_thresh must be >= 0, got {self.stuff_area_thresh}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any] | None) -> FusionParams:
        """The fusion keys found in a model's keyword arguments (the rest take their defaults)."""
        kwargs = kwargs or {}
        return cls(**{k: kwargs[k] for k in FUSION_KEYS if k in kwargs})


def panoptic_fusion(
    masks: np.ndarray,
    scores: Sequence[float] | np.ndarray,
    category_ids: Sequence[int] | np.ndarray,
    sem_seg: np.ndarray,
    stuff_category_ids: Sequence[int],
    *,
    overlap_threshold: float = 0.5,
    stuff_area_thresh: int = 64,
    instances_score_thresh: float = 0.5,
) -> PanopticResult:
    """Fuse instances and a semantic map into a :class:`PanopticResult`.

    Args:
        masks: bool (K, H, W) instance masks (may overlap).
        scores: (K,) instance scores; category_ids: (K,) their original (thing) category ids.
        sem_seg: int (H, W) semantic prediction: 0 = things, ``i`` in 1..S = ``stuff_category_ids[i-1]``,
            anything else = no stuff.
        stuff_category_ids: original ids of the stuff classes, in ``sem_seg`` order.
        overlap_threshold, stuff_area_thresh, instances_score_thresh: see :class:`FusionParams`.

    Returns:
        ``id_map`` int32 (H, W): thing segments get ids 1, 2, ... in painting order (best score first),
        stuff segments the following ids; 0 is VOID. Thing segments carry their ``score``.
    """
    masks = np.asarray(masks, dtype=bool)
    sem_seg = np.asarray(sem_seg)
    if sem_seg.ndim != 2:
        raise ValueError(f"sem_seg must be (H, W), got shape {sem_seg.shape}")
    if masks.ndim != 3 or (len(masks) and masks.shape[1:] != sem_seg.shape):
        raise ValueError(f"masks must be (K, {sem_seg.shape[0]}, {sem_seg.shape[1]}), got {masks.shape}")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    category_ids = np.asarray(category_ids, dtype=np.int64).reshape(-1)
    if not len(scores) == len(category_ids) == len(masks):
        raise ValueError(f"{len(masks)} masks, {len(scores)} scores, {len(category_ids)} categories differ")
    ids = np.zeros(sem_seg.shape, dtype=np.int32)
    segments: list[PanopticSegment] = []
    for k in np.argsort(-scores, kind="stable"):
        if scores[k] < instances_score_thresh:
            break  # sorted: every later one scores lower
        mask = masks[k]
        area = int(mask.sum())
        if area == 0:
            continue
        free = mask & (ids == 0)
        n_free = int(free.sum())
        if n_free == 0 or (area - n_free) / area > overlap_threshold:  # never list an empty segment
            continue
        seg_id = len(segments) + 1
        ids[free] = seg_id
        segments.append(PanopticSegment(seg_id, int(category_ids[k]), True, score=float(scores[k])))
    for index, cat in enumerate(stuff_category_ids, start=1):
        region = (sem_seg == index) & (ids == 0)
        if int(region.sum()) < max(int(stuff_area_thresh), 1):
            continue
        seg_id = len(segments) + 1
        ids[region] = seg_id
        segments.append(PanopticSegment(seg_id, int(cat), False))
    return PanopticResult(ids, segments)
