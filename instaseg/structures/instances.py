"""``Instances``: the detections of one image, one field per property, every field of length K.

Fields (all on the CPU or all on one device):

- ``boxes``: Tensor[K, 4] float32, XYXY pixels of the image;
- ``labels``: Tensor[K] int64 (contiguous class ids, 0 = background);
- ``scores``: Tensor[K] float32;
- masks, in the cheapest form a model gives them: ``mask_lowres`` Tensor[K, M, M] float probabilities
  relative to each box (pasted inside the box by :mod:`instaseg.structures.paste`), or ``rles`` (K COCO RLEs
  with ``str`` counts at the image size), or neither (a box-only detector);
- ``track_ids``: optional Tensor[K] int64 (video).

Indexing with an int, a slice, a bool Tensor[K] or an index Tensor/list indexes every field at once (an
int gives an ``Instances`` of length 1), as Detectron2's ``Instances`` does.

>>> inst = Instances((480, 640), boxes=torch.zeros(2, 4), labels=torch.tensor([1, 2]),
...                  scores=torch.tensor([0.9, 0.3]))
>>> len(inst[inst.scores >= 0.5])
1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from instaseg.structures.masks import rle_decode
from instaseg.structures.paste import dense_masks_to_rles, paste_masks_dense, paste_masks_to_rles

Index = int | slice | Tensor | Sequence[int] | np.ndarray


class Instances:
    """Detections of one image of ``image_size`` (H, W); see the module docstring for the fields.

    Raises ValueError when the fields have different lengths or wrong shapes, or when both mask forms
    are given.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        *,
        boxes: Tensor,
        labels: Tensor,
        scores: Tensor,
        mask_lowres: Tensor | None = None,
        rles: list[dict[str, Any]] | None = None,
        track_ids: Tensor | None = None,
    ) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        self.scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        self.mask_lowres = None if mask_lowres is None else torch.as_tensor(mask_lowres, dtype=torch.float32)
        self.rles = None if rles is None else list(rles)
        self.track_ids = None if track_ids is None else torch.as_tensor(track_ids, dtype=torch.int64)
        self._check()

    def _check(self) -> None:
        k = len(self.boxes)
        lengths = {"boxes": k, "labels": len(self.labels), "scores": len(self.scores)}
        if self.mask_lowres is not None:
            if self.mask_lowres.ndim != 3:
                shape = tuple(self.mask_lowres.shape)
                raise ValueError(f"Instances: mask_lowres must be [K, M, M], got {shape}")
            lengths["mask_lowres"] = len(self.mask_lowres)
        if self.rles is not None:
            lengths["rles"] = len(self.rles)
        if self.track_ids is not None:
            lengths["track_ids"] = len(self.track_ids.reshape(-1))
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Instances: fields of different lengths {lengths}")
        if self.mask_lowres is not None and self.rles is not None:
            raise ValueError("Instances: give masks as mask_lowres or as rles, not both")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dense(
        cls,
        image_size: tuple[int, int],
        *,
        boxes: Tensor,
        labels: Tensor,
        scores: Tensor,
        masks: Tensor | np.ndarray | None,
        mask_thresh: float = 0.5,
    ) -> Instances:
        """Instances from full-size masks ``(K, H, W)`` or ``(K, 1, H, W)`` (bool, or probabilities
        thresholded at ``mask_thresh`` with ``>=``), which are stored as COCO RLEs."""
        rles = None
        if masks is not None:
            arr = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
            if arr.ndim == 4:
                arr = arr[:, 0]
            if len(arr) and tuple(arr.shape[-2:]) != tuple(image_size):
                raise ValueError(f"Instances: masks of size {arr.shape[-2:]} for an image of {image_size}")
            rles = dense_masks_to_rles(arr, mask_thresh)
        return cls(image_size, boxes=boxes, labels=labels, scores=scores, rles=rles)

    @classmethod
    def empty(cls, image_size: tuple[int, int]) -> Instances:
        """No detections (RLE masks, so concatenation with mask-carrying instances works)."""
        return cls(image_size, boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64),
                   scores=torch.zeros(0), rles=[])

    @classmethod
    def cat(cls, items: Sequence[Instances]) -> Instances:
        """Concatenate instances of the same image; masks must be in the same form in all of them."""
        if not items:
            raise ValueError("Instances.cat: nothing to concatenate")
        size = items[0].image_size
        if any(i.image_size != size for i in items):
            raise ValueError(f"Instances.cat: image sizes differ {[i.image_size for i in items]}")
        kinds = {i.mask_kind for i in items}
        if len(kinds) > 1:
            raise ValueError(f"Instances.cat: masks in different forms {sorted(map(str, kinds))}")
        tracks = [i.track_ids for i in items]
        if any(t is None for t in tracks) and not all(t is None for t in tracks):
            raise ValueError("Instances.cat: track_ids on some instances only")
        lowres = None
        if items[0].mask_lowres is not None:
            lowres = torch.cat([i.mask_lowres for i in items])  # type: ignore[misc]
        rles = [r for i in items for r in i.rles] if items[0].rles is not None else None  # type: ignore[union-attr]
        return cls(
            size,
            boxes=torch.cat([i.boxes for i in items]),
            labels=torch.cat([i.labels for i in items]),
            scores=torch.cat([i.scores for i in items]),
            mask_lowres=lowres,
            rles=rles,
            track_ids=None if tracks[0] is None else torch.cat(tracks),  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Index) -> Instances:
        k = len(self)
        if isinstance(index, int):
            if not -k <= index < k:
                raise IndexError(f"Instances index {index} out of range for {k} instances")
            index = slice(index % k, index % k + 1)
        if isinstance(index, slice):
            idx = torch.arange(k)[index]
        else:
            sel = torch.as_tensor(np.asarray(index) if not isinstance(index, Tensor) else index)
            if sel.dtype == torch.bool:
                if sel.shape != (k,):
                    raise IndexError(f"Instances: bool mask of shape {tuple(sel.shape)} for {k} instances")
                idx = torch.nonzero(sel).flatten()
            else:
                idx = sel.to(torch.int64).reshape(-1)
        idx = idx.cpu()
        return Instances(
            self.image_size,
            boxes=self.boxes[idx.to(self.boxes.device)],
            labels=self.labels[idx.to(self.labels.device)],
            scores=self.scores[idx.to(self.scores.device)],
            mask_lowres=None if self.mask_lowres is None else self.mask_lowres[idx.to(self.boxes.device)],
            rles=None if self.rles is None else [self.rles[int(i)] for i in idx],
            track_ids=None if self.track_ids is None else self.track_ids[idx.to(self.track_ids.device)],
        )

    def __repr__(self) -> str:
        h, w = self.image_size
        return f"Instances(num_instances={len(self)}, image_size=({h}, {w}), masks={self.mask_kind})"

    @property
    def mask_kind(self) -> str | None:
        """``"lowres"``, ``"rle"`` or ``None`` (no masks)."""
        if self.mask_lowres is not None:
            return "lowres"
        return "rle" if self.rles is not None else None

    def to(self, device: str | torch.device) -> Instances:
        """The same instances with every tensor on ``device``."""
        return Instances(
            self.image_size,
            boxes=self.boxes.to(device),
            labels=self.labels.to(device),
            scores=self.scores.to(device),
            mask_lowres=None if self.mask_lowres is None else self.mask_lowres.to(device),
            rles=self.rles,
            track_ids=None if self.track_ids is None else self.track_ids.to(device),
        )

    # ------------------------------------------------------------------ masks
    def to_rles(self, mask_thresh: float = 0.5) -> list[dict[str, Any]]:
        """K compressed COCO RLEs (``str`` counts) at the image size. Low-res masks are pasted inside
        their boxes (pixels with probability ``>= mask_thresh``), never at full size. ValueError when
        there are instances but no masks."""
        if self.rles is not None:
            return list(self.rles)
        h, w = self.image_size
        if self.mask_lowres is not None:
            return paste_masks_to_rles(self._np(self.mask_lowres), self._np(self.boxes), h, w, mask_thresh)
        if len(self):
            raise ValueError("Instances.to_rles: these instances have no masks")
        return []

    def to_dense_masks(self, mask_thresh: float = 0.5) -> np.ndarray:
        """bool ``(K, H, W)`` masks (costs K x H x W bytes; for drawing, not for metrics)."""
        h, w = self.image_size
        if self.mask_lowres is not None:
            return paste_masks_dense(self._np(self.mask_lowres), self._np(self.boxes), h, w, mask_thresh)
        rles = self.to_rles(mask_thresh)
        return np.stack([rle_decode(r) for r in rles]) if rles else np.zeros((0, h, w), bool)

    def with_rles(self, mask_thresh: float = 0.5) -> Instances:
        """The same instances with masks as RLEs (low-res masks pasted at ``mask_thresh``)."""
        if self.mask_lowres is None:
            return self
        return Instances(self.image_size, boxes=self.boxes, labels=self.labels, scores=self.scores,
                         rles=self.to_rles(mask_thresh), track_ids=self.track_ids)

    @staticmethod
    def _np(t: Tensor) -> np.ndarray:
        return t.detach().cpu().float().numpy()
