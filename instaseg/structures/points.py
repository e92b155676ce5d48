"""Per-point instance segmentation results and ground truth, shared by data, models and evaluation.

A scene has ``N`` points. :class:`PointInstances` stores ``K`` instances as one id per point:
``instance_ids`` int64 (N,) with values in ``0..K-1`` or ``-1`` (no instance), plus per-instance
``labels`` int64 (K,) class indices and ``scores`` float32 (K,). Instances never overlap (a point
belongs to at most one), which is what point-cloud instance benchmarks (ScanNet, S3DIS) assume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PointInstances:
    """``K`` non-overlapping instances over ``N`` points (see the module docstring)."""

    instance_ids: np.ndarray  # int64 (N,), -1 = no instance
    labels: np.ndarray  # int64 (K,)
    scores: np.ndarray  # float32 (K,)

    def __post_init__(self) -> None:
        self.instance_ids = np.asarray(self.instance_ids, dtype=np.int64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.labels) != len(self.scores):
            raise ValueError(f"labels ({len(self.labels)}) and scores ({len(self.scores)}) differ in length")
        if len(self.instance_ids) and int(self.instance_ids.max(initial=-1)) >= len(self.labels):
            raise ValueError("instance_ids refer to more instances than labels has")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_points(self) -> int:
        return len(self.instance_ids)

    def sizes(self) -> np.ndarray:
        """Points per instance, int64 (K,)."""
        valid = self.instance_ids[self.instance_ids >= 0]
        return np.bincount(valid, minlength=len(self)).astype(np.int64)

    def masks(self) -> np.ndarray:
        """Dense bool (K, N) masks (memory K x N: for small scenes and tests)."""
        return self.instance_ids[None, :] == np.arange(len(self))[:, None]

    def point_labels(self, fill: int = -1) -> np.ndarray:
        """Per-point class int64 (N,): the class of each point's instance, ``fill`` elsewhere."""
        out = np.full(self.num_points, fill, dtype=np.int64)
        keep = self.instance_ids >= 0
        out[keep] = self.labels[self.instance_ids[keep]]
        return out

    def filter(self, keep: np.ndarray) -> PointInstances:
        """Only the instances where bool ``keep`` (K,) is true, renumbered in order."""
        keep = np.asarray(keep, bool)
        remap = np.full(len(self) + 1, -1, dtype=np.int64)
        remap[:-1][keep] = np.arange(int(keep.sum()))
        return PointInstances(remap[self.instance_ids], self.labels[keep], self.scores[keep])

    def take_points(self, index: np.ndarray) -> PointInstances:
        """The same instances on the points ``index`` (e.g. carried back to a full-resolution scene)."""
        return PointInstances(self.instance_ids[index], self.labels, self.scores)

    @classmethod
    def from_ids(
        cls, instance_ids: np.ndarray, semantic: np.ndarray, ignore: tuple[int, ...] = ()
    ) -> PointInstances:
        """Ground truth from raw per-point ids (any integers, ``< 0`` = none) and per-point classes
        ``semantic`` (N,): instances renumbered ``0..K-1`` in order of first id, each labelled with
        its points' majority class, score 1. Instances whose class is in ``ignore`` are dropped."""
        ids = np.asarray(instance_ids, dtype=np.int64).reshape(-1)
        sem = np.asarray(semantic, dtype=np.int64).reshape(-1)
        out = np.full(len(ids), -1, dtype=np.int64)
        labels: list[int] = []
        uniq, inverse = np.unique(ids, return_inverse=True)
        for j, raw in enumerate(uniq):
            if raw < 0:
                continue
            members = inverse == j
            classes = sem[members]
            classes = classes[classes >= 0]
            if len(classes) == 0:
                continue
            label = int(np.bincount(classes).argmax())
            if label in ignore:
                continue
            out[members] = len(labels)
            labels.append(label)
        return cls(out, np.asarray(labels, np.int64), np.ones(len(labels), np.float32))

    def to_list(
        self, class_names: list[str] | None = None, with_indices: bool = True
    ) -> list[dict[str, Any]]:
        """JSON-able instances: ``id``, ``label``, ``class`` (if names), ``score``, ``num_points`` and
        ``point_indices`` (sorted ints, when ``with_indices``)."""
        order = np.argsort(self.instance_ids, kind="stable")
        counts = self.sizes()
        start = int((self.instance_ids < 0).sum())
        out = []
        for k in range(len(self)):
            item: dict[str, Any] = {
                "id": k,
                "label": int(self.labels[k]),
                "score": round(float(self.scores[k]), 5),
                "num_points": int(counts[k]),
            }
            if class_names is not None and 0 <= self.labels[k] < len(class_names):
                item["class"] = class_names[int(self.labels[k])]
            if with_indices:
                item["point_indices"] = np.sort(order[start : start + counts[k]]).tolist()
            start += int(counts[k])
            out.append(item)
        return out
