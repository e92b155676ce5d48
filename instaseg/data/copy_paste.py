"""Label-efficient training data: copy-paste augmentation and few-shot subsets.

Copy-paste ("Simple Copy-Paste", Ghiasi et al. 2021): instances of another training image, with
their masks, are pasted onto this one at a random scale and place; instances they cover lose those
pixels (masks, hence boxes, updated) and those covered entirely are dropped. It runs on the raw
:class:`~instaseg.data.base.Record` before the albumentations transform, so every later geometric op
sees the pasted instances like any other. Config: ``data.augment.copy_paste_p`` (probability per
sample), ``data.augment.copy_paste_scale`` ([min, max] scale jitter), ``data.augment.copy_paste_max``
(instances pasted at most).

Few-shot: :func:`few_shot_indices` picks K images per class with a fixed seed (``data.shots``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from instaseg.data._split import SHARED_ATTRS, SplitDataset, load_annotations
from instaseg.data.base import InstanceDataset, Record
from instaseg.errors import ConfigError


def _resize(array: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
    import cv2

    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(array, (width, height), interpolation=interp)


def copy_paste(
    dst: Record,
    src: Record,
    rng: np.random.Generator,
    *,
    scale: Sequence[float] = (0.5, 1.5),
    max_instances: int = 8,
    min_area: int = 8,
) -> Record:
    """``dst`` with up to ``max_instances`` random non-crowd instances of ``src`` pasted on top.

    ``src`` is resized to ``dst``'s size times a factor drawn from ``scale`` (aspect kept) and placed at
    a random offset (parts outside ``dst`` are cut off). Masks are bool (N, H, W). ``dst`` instances
    keep only their unoccluded pixels; those left with fewer than ``min_area`` pixels are dropped, as
    are pasted instances with fewer. ``dst.extra["sem_seg"]``, if any, becomes 0 (things) under the
    pasted pixels. Returns a new :class:`Record`; ``dst`` is unchanged.
    """
    h, w = dst.image.shape[:2]
    sh, sw = src.image.shape[:2]
    candidates = np.flatnonzero(np.asarray(src.iscrowd) == 0)
    if not len(candidates):
        return dst
    k = int(rng.integers(1, min(len(candidates), max_instances) + 1))
    chosen = np.sort(rng.choice(candidates, size=k, replace=False))
    factor = float(rng.uniform(*scale)) * min(h / sh, w / sw)
    nh, nw = max(int(round(sh * factor)), 1), max(int(round(sw * factor)), 1)
    image = _resize(src.image, nh, nw, nearest=False)
    masks = np.stack([_resize(src.masks[i].astype(np.uint8), nh, nw, nearest=True) for i in chosen]) > 0
    # random placement: top-left corner anywhere that keeps some overlap
    oy = int(rng.integers(-nh // 2, max(h - nh // 2, 1)))
    ox = int(rng.integers(-nw // 2, max(w - nw // 2, 1)))
    y1, x1, y2, x2 = max(oy, 0), max(ox, 0), min(oy + nh, h), min(ox + nw, w)
    pasted = np.zeros((k, h, w), dtype=bool)
    if y2 > y1 and x2 > x1:
        pasted[:, y1:y2, x1:x2] = masks[:, y1 - oy : y2 - oy, x1 - ox : x2 - ox]
    keep_new = pasted.reshape(k, -1).sum(1) >= min_area
    pasted = pasted[keep_new]
    if not len(pasted):
        return dst
    cover = pasted.any(0)
    out_image = dst.image.copy()
    window = np.zeros((h, w, 3), dtype=image.dtype)
    if y2 > y1 and x2 > x1:
        window[y1:y2, x1:x2] = image[y1 - oy : y2 - oy, x1 - ox : x2 - ox]
    out_image[cover] = window[cover]
    old = np.asarray(dst.masks, dtype=bool).reshape(-1, h, w) & ~cover
    keep_old = old.reshape(len(old), -1).sum(1) >= min_area
    extra = dict(dst.extra)
    if "sem_seg" in extra:
        sem = np.array(extra["sem_seg"], copy=True)
        sem[cover] = 0
        extra["sem_seg"] = sem
    if "ann_ids" in extra:  # per-instance lists would no longer line up
        extra.pop("ann_ids")
    labels = np.concatenate([np.asarray(dst.labels)[keep_old], np.asarray(src.labels)[chosen][keep_new]])
    iscrowd = np.concatenate([np.asarray(dst.iscrowd)[keep_old], np.zeros(int(keep_new.sum()), np.int64)])
    return Record(out_image, np.concatenate([old[keep_old], pasted]), labels.astype(np.int64),
                  iscrowd.astype(np.int64), dst.image_id, dst.file_name, extra)


class CopyPasteDataset(InstanceDataset):
    """``base`` with :func:`copy_paste` applied to each record with probability ``p`` (the source is
    another image of ``base``, drawn at random). Randomness comes from NumPy's global RNG, which the
    engine seeds per sample, so runs and resumes are reproducible. ``base.transform`` runs after."""

    def __init__(self, base: InstanceDataset, *, p: float = 0.5, scale: Sequence[float] = (0.5, 1.5),
                 max: int = 8, seed: int = 0) -> None:  # noqa: A002 - the config key's name
        super().__init__(base.transform)
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"data.augment.copy_paste_p must be in [0, 1], got {p}")
        if len(scale) != 2 or not 0 < float(scale[0]) <= float(scale[1]):
            raise ConfigError(f"data.augment.copy_paste_scale must be [min, max] with 0 < min <= max, "
                              f"got {list(scale)}")
        if int(max) < 1:
            raise ConfigError(f"data.augment.copy_paste_max must be >= 1, got {max}")
        self.base, self.p, self.scale, self.max_instances = base, float(p), tuple(scale), int(max)
        self.seed = seed
        self.class_names, self.category_ids = base.class_names, base.category_ids
        self.name = f"{base.name}+copy_paste"
        for attr in SHARED_ATTRS:  # panoptic category lists
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))

    @classmethod
    def from_options(
        cls, base: InstanceDataset, options: dict[str, Any], *, seed: int = 0
    ) -> CopyPasteDataset:
        """Build from the ``copy_paste_*`` keys of ``data.augment``; an unknown key is a ConfigError."""
        known = {"copy_paste_p": "p", "copy_paste_scale": "scale", "copy_paste_max": "max"}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"unknown config key(s) data.augment.{unknown[0]}; copy-paste keys: "
                              f"{', '.join(known)}")
        return cls(base, **{known[k]: v for k, v in options.items()}, seed=seed)

    def __len__(self) -> int:
        return len(self.base)

    def image_info(self, index: int) -> dict[str, Any]:
        return self.base.image_info(index)

    def load_record(self, index: int) -> Record:
        rec = self.base.load_record(index)
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        if len(self.base) < 2 or rng.random() >= self.p:
            return rec
        other = int(rng.integers(0, len(self.base) - 1))
        other += other >= index  # any image but this one
        return copy_paste(rec, self.base.load_record(other), rng, scale=self.scale,
                          max_instances=self.max_instances)


def few_shot_indices(dataset: Any, shots: int, *, seed: int = 0) -> list[int]:
    """Indices of ``shots`` images per class: classes in label order, each topped up to ``shots``
    images containing it from a seeded shuffle (an image counts for every class it contains, so a
    class may end with more). Classes with fewer images keep all of theirs. Sorted."""
    if shots < 1:
        raise ConfigError(f"data.shots must be >= 1, got {shots}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dataset)).tolist()
    labels_of = {i: set(np.asarray(load_annotations(dataset, i)[1]).tolist()) for i in order}
    chosen: set[int] = set()
    count: dict[int, int] = {}
    for cls in range(1, len(dataset.class_names)):
        for i in order:
            if count.get(cls, 0) >= shots:
                break
            if cls in labels_of[i] and i not in chosen:
                chosen.add(i)
                for c in labels_of[i]:
                    count[c] = count.get(c, 0) + 1
    return sorted(chosen)


def few_shot_subset(dataset: InstanceDataset, shots: int, *, seed: int = 0) -> InstanceDataset:
    """The :func:`few_shot_indices` subset of ``dataset``, with its transform."""
    return SplitDataset(dataset, few_shot_indices(dataset, shots, seed=seed), split=f"{shots}-shot",
                        transform=dataset.transform)
