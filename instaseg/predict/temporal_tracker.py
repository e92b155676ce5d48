"""Motion + appearance tracking of per-frame detections (the inference half of the video model).

Per frame (ByteTrack's two-stage idea, with an appearance term and mask smoothing):

1. every live track's box is predicted by a constant-velocity Kalman filter (:mod:`instaseg.ops.tracking`);
2. **high** detections (``score >= high_thresh``) are matched to all live tracks, lost ones included,
   by the Hungarian method on ``iou_weight * IoU(predicted box, box) + embed_weight * max(cos, 0)``
   (association embeddings from the model; IoU alone when there are none), pairs below ``match_thresh``
   rejected; a lost track can come back on appearance alone when ``cos >= reid_thresh``;
3. **low** detections (``low_thresh <= score < high_thresh``) are matched by IoU ``>= low_match_thresh`` to
   the tracks still unmatched that were seen in the previous frame: they recover occluded or blurred
   objects instead of being discarded;
Before matching, detections overlapping a higher-scoring one with box IoU > ``dedup_iou`` are dropped
(class-agnostic: the detector may find one object twice, under two classes). With ``match_labels`` off
(the default) a track survives the detector's class flips; its reported class is its most frequent one.

4. birth: an unmatched high detection with ``score >= new_track_thresh`` starts a track, reported once it
   has ``min_hits`` matches (or from frame 0); death: a track unmatched for more than ``max_age`` frames
   is dropped. Ids are positive and never reused;
5. temporal mask smoothing: a matched track's box-relative mask is ``mask_momentum * previous + (1 -
   mask_momentum) * current`` (box-relative, so motion needs no warping); its embedding is an
   exponential average with ``embed_momentum``.

With ``embed_weight=0`` and ``mask_momentum=0`` this is plain ByteTrack (Kalman + two-stage IoU matching).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instaseg.ops.tracking import (
    assign,
    box_iou,
    cosine_similarity,
    kalman_init,
    kalman_predict,
    kalman_update,
    suppress_duplicates,
    xyah_to_xyxy,
)


@dataclass
class TrackerConfig:
    """Birth, death and matching rules (see the module docstring)."""

    high_thresh: float = 0.5
    low_thresh: float = 0.1
    new_track_thresh: float = 0.6
    match_thresh: float = 0.25
    low_match_thresh: float = 0.5
    reid_thresh: float = 0.75
    iou_weight: float = 0.5
    embed_weight: float = 0.5
    min_hits: int = 1
    max_age: int = 15
    mask_momentum: float = 0.3
    embed_momentum: float = 0.8
    match_labels: bool = False
    dedup_iou: float = 0.7

    @classmethod
    def bytetrack(cls, **kw: Any) -> TrackerConfig:
        """Plain ByteTrack: Kalman + two-stage IoU matching, no appearance, no mask smoothing."""
        return cls(**{"embed_weight": 0.0, "iou_weight": 1.0, "mask_momentum": 0.0, "match_thresh": 0.2,
                      "reid_thresh": 2.0, "max_age": 30, **kw})


@dataclass
class _Track:
    track_id: int
    mean: np.ndarray  # (8,)
    cov: np.ndarray  # (8, 8)
    label: int
    embedding: np.ndarray | None
    mask: np.ndarray | None
    hits: int = 1
    misses: int = 0


@dataclass
class TrackOutput:
    """The tracked detections of one frame: ``index`` (K,) into that frame's detections, ``track_ids``
    (K,), ``mask_lowres`` (K, M, M) smoothed box-relative masks (None when none were given)."""

    index: np.ndarray
    track_ids: np.ndarray
    mask_lowres: np.ndarray | None


@dataclass
class TemporalTracker:
    """Stateful tracker over a video; call :meth:`update` once per frame."""

    config: TrackerConfig = field(default_factory=TrackerConfig)
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _next_id: int = field(default=1, init=False, repr=False)
    _frame: int = field(default=-1, init=False, repr=False)

    def update(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
               embeddings: np.ndarray | None = None, mask_lowres: np.ndarray | None = None) -> TrackOutput:
        """One frame: ``boxes`` (N, 4) XYXY, ``scores`` (N,), ``labels`` (N,), optional ``embeddings``
        (N, D) and box-relative ``mask_lowres`` (N, M, M). Returns the detections that belong to a
        reported track (see :class:`TrackOutput`)."""
        c = self.config
        self._frame += 1
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(labels).reshape(-1)
        n = len(boxes)
        if len(scores) != n or len(labels) != n:
            raise ValueError(f"TemporalTracker.update: {n} boxes, {len(scores)} scores, {len(labels)} labels")
        tracks = self._tracks
        if tracks:
            mean, cov = kalman_predict(np.stack([t.mean for t in tracks]), np.stack([t.cov for t in tracks]))
            for t, m, s in zip(tracks, mean, cov, strict=True):
                t.mean, t.cov = m, s
        pred = xyah_to_xyxy(np.stack([t.mean[:4] for t in tracks])) if tracks else np.zeros((0, 4))
        valid = np.zeros(n, dtype=bool)
        if n:  # one detection per object: the detector may find it twice (two classes, two boxes)
            valid[suppress_duplicates(boxes, scores, c.dedup_iou) if c.dedup_iou < 1 else np.arange(n)] = True
        high = np.nonzero(valid & (scores >= c.high_thresh))[0]
        low = np.nonzero(valid & (scores >= c.low_thresh) & (scores < c.high_thresh))[0]
        same = (labels[:, None] == np.array([t.label for t in tracks])[None, :]) if c.match_labels else None

        # stage 1: high detections x all live tracks, motion + appearance
        iou = box_iou(boxes[high], pred)
        score = c.iou_weight * iou if c.embed_weight > 0 and embeddings is not None else iou.copy()
        if c.embed_weight > 0 and embeddings is not None and tracks:
            have = np.array([t.embedding is not None for t in tracks])
            track_emb = np.stack([t.embedding if t.embedding is not None else np.zeros(embeddings.shape[1])
                                  for t in tracks])
            cos = cosine_similarity(embeddings[high], track_emb)
            cos = np.where(have[None, :], cos, 0.0)
            score = score + c.embed_weight * np.clip(cos, 0, None)
            # gate: some overlap with the predicted box, or a confident appearance match (re-identification)
            score = np.where((iou > 0) | (cos >= c.reid_thresh), score, 0.0)
        if same is not None and len(high):
            score = np.where(same[high], score, 0.0)
        pairs, unmatched_high, free_tracks = assign(score, c.match_thresh)
        matches = [(int(high[d]), t) for d, t in pairs]

        # stage 2: low detections x tracks seen last frame, IoU only
        recent = [t for t in free_tracks if tracks[t].misses == 0]
        iou_low = box_iou(boxes[low], pred[recent])
        if same is not None and len(low) and recent:
            iou_low = np.where(same[low][:, recent], iou_low, 0.0)
        pairs_low, _, _ = assign(iou_low, c.low_match_thresh)
        matches += [(int(low[d]), recent[t]) for d, t in pairs_low]

        out_index, out_ids, out_masks = [], [], []
        matched_tracks = set()
        for d, ti in matches:
            t = tracks[ti]
            matched_tracks.add(ti)
            m, s = kalman_update(t.mean[None], t.cov[None], boxes[d][None])
            t.mean, t.cov, t.hits, t.misses = m[0], s[0], t.hits + 1, 0
            t.label = int(labels[d])
            if embeddings is not None:
                e = embeddings[d]
                k = c.embed_momentum
                t.embedding = e if t.embedding is None else k * t.embedding + (1 - k) * e
            if mask_lowres is not None:
                cur = np.asarray(mask_lowres[d], dtype=np.float32)
                if t.mask is not None and t.mask.shape == cur.shape and c.mask_momentum > 0:
                    cur = c.mask_momentum * t.mask + (1 - c.mask_momentum) * cur
                t.mask = cur
            if t.hits >= c.min_hits or self._frame < c.min_hits:
                out_index.append(d)
                out_ids.append(t.track_id)
                out_masks.append(t.mask)
        for ti, t in enumerate(tracks):
            if ti not in matched_tracks:
                t.misses += 1
        self._tracks = [t for t in tracks if t.misses <= c.max_age]

        for d in unmatched_high:
            d = int(high[d])
            if scores[d] < c.new_track_thresh:
                continue
            m, s = kalman_init(boxes[d][None])
            mask = None if mask_lowres is None else np.asarray(mask_lowres[d], dtype=np.float32)
            emb = None if embeddings is None else np.asarray(embeddings[d], dtype=np.float64)
            t = _Track(self._next_id, m[0], s[0], int(labels[d]), emb, mask)
            self._next_id += 1
            self._tracks.append(t)
            if c.min_hits <= 1 or self._frame < c.min_hits:
                out_index.append(d)
                out_ids.append(t.track_id)
                out_masks.append(mask)
        order = np.argsort(out_index, kind="stable")
        index = np.asarray(out_index, dtype=np.int64)[order]
        ids = np.asarray(out_ids, dtype=np.int64)[order]
        masks = None
        if mask_lowres is not None:
            empty = np.zeros((0, *mask_lowres.shape[1:]), np.float32)
            masks = np.stack([out_masks[i] for i in order]) if len(order) else empty
        return TrackOutput(index, ids, masks)

    @property
    def num_tracks(self) -> int:
        """Live tracks (matched within ``max_age`` frames)."""
        return len(self._tracks)
