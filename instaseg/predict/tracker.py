"""Greedy mask-IoU tracking: keep instance ids stable across video frames.

Each frame's detections are matched to the live tracks by mask IoU (computed on COCO RLEs, no dense
masks), greedily from the highest IoU down; a pair is matched when its IoU is at
least ``iou_threshold`` and, with ``match_labels``, both have the same class. Unmatched detections start
new tracks; tracks unseen for more than ``max_age`` frames are dropped. Ids are positive integers,
never reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from instaseg.structures.instances import Instances
from instaseg.structures.masks import rle_iou


def rle_iou_matrix(rles_a: Sequence[dict[str, Any]], rles_b: Sequence[dict[str, Any]]) -> np.ndarray:
    """Pairwise mask IoU (float64 ``(len(a), len(b))``) of two lists of COCO RLEs of the same image size."""
    return rle_iou(rles_a, rles_b)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching on an ``(N, M)`` score matrix: repeatedly take the highest remaining
    pair with score ``>= threshold``. Returns ``(row, col)`` pairs in the order they were taken."""
    if iou.size == 0:
        return []
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


@dataclass
class _Track:
    track_id: int
    rle: dict[str, Any]
    label: int
    last_frame: int


@dataclass
class MaskIoUTracker:
    """Assigns track ids to each frame's instances; see the module docstring.

    Args:
        iou_threshold: minimum mask IoU to continue a track.
        max_age: frames a track may go unmatched before it is dropped.
        match_labels: only match detections and tracks of the same class.
    """

    iou_threshold: float = 0.3
    max_age: int = 5
    match_labels: bool = True
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _next_id: int = field(default=1, init=False, repr=False)
    _frame: int = field(default=-1, init=False, repr=False)

    def update(self, rles: Sequence[dict[str, Any]], labels: Sequence[int] | None = None) -> list[int]:
        """Register one frame's instances (COCO RLEs, optional class labels); return their track ids."""
        self._frame += 1
        labels = [0] * len(rles) if labels is None else [int(v) for v in labels]
        if len(labels) != len(rles):
            raise ValueError(f"MaskIoUTracker.update: {len(rles)} masks but {len(labels)} labels")
        self._tracks = [t for t in self._tracks if self._frame - t.last_frame <= self.max_age]
        iou = rle_iou_matrix(list(rles), [t.rle for t in self._tracks])
        if self.match_labels and iou.size:
            same = np.asarray(labels)[:, None] == np.asarray([t.label for t in self._tracks])[None, :]
            iou = np.where(same, iou, 0.0)
        ids = [0] * len(rles)
        for det, tr in greedy_match(iou, self.iou_threshold):
            track = self._tracks[tr]
            track.rle, track.label, track.last_frame = rles[det], labels[det], self._frame
            ids[det] = track.track_id
        for det, track_id in enumerate(ids):
            if track_id == 0:
                ids[det] = self._next_id
                self._tracks.append(_Track(self._next_id, rles[det], labels[det], self._frame))
                self._next_id += 1
        return ids

    def track(self, inst: Instances) -> Instances:
        """Register one frame's :class:`Instances` (masks as RLEs, see ``Instances.with_rles``) and return
        them with ``track_ids`` set."""
        if inst.rles is None:
            raise ValueError("MaskIoUTracker.track: instances need RLE masks (call with_rles() first)")
        ids = self.update(inst.rles, inst.labels.tolist())
        return Instances(inst.image_size, boxes=inst.boxes, labels=inst.labels, scores=inst.scores,
                         rles=inst.rles, track_ids=torch.tensor(ids, dtype=torch.int64))

    @property
    def num_tracks(self) -> int:
        """How many tracks are alive (seen within ``max_age`` frames)."""
        return len(self._tracks)
