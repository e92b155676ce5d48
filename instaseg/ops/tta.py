"""Test-time augmentation by horizontal flip, on the low-resolution detection contract.

A model sees the image and its mirror image; the mirror's detections are mapped back
(:func:`hflip_detections`) and the two sets are fused (:func:`fuse_detections`): a detection both
views found becomes one with the mean box, the mean score and the mean mask (each view's mask
resampled onto the fused box), and one only a single view found keeps its box and mask at half its
score, so AP ranks agreement above a lone view's guess (weighted box fusion's rule for two models).

Detections are dicts as :func:`instaseg.ops.lowres.lowres_inference` gives them: ``boxes`` [K, 4]
XYXY input-image pixels, ``labels`` [K] int64, ``scores`` [K], ``mask_lowres`` [K, M, M] box-relative
probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

FIELDS = ("boxes", "labels", "scores", "mask_lowres")


def hflip_detections(det: dict[str, Tensor], width: int) -> dict[str, Tensor]:
    """Detections made on the mirror image of a ``width``-pixel-wide image, mapped back to the image:
    ``x -> width - x`` for the box sides (swapped so ``x1 < x2``) and each mask mirrored along its
    last axis. Other keys are dropped."""
    boxes = det["boxes"].clone()
    boxes[:, 0], boxes[:, 2] = width - det["boxes"][:, 2], width - det["boxes"][:, 0]
    return {"boxes": boxes, "labels": det["labels"], "scores": det["scores"],
            "mask_lowres": det["mask_lowres"].flip(-1)}


def resample_masks(masks: Tensor, boxes: Tensor, onto: Tensor) -> Tensor:
    """Box-relative masks ``masks`` [K, M, M] on ``boxes`` [K, 4] resampled onto the boxes ``onto``
    [K, 4] (both XYXY pixels): the value at each of ``onto``'s M x M cell centres is read bilinearly
    from the mask over its own box, 0 outside it (the paste convention of
    :mod:`instaseg.structures.paste`)."""
    k, m = masks.shape[0], masks.shape[-1]
    if k == 0:
        return masks
    t = (torch.arange(m, dtype=masks.dtype, device=masks.device) + 0.5) / m
    size = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)

    def normalised(axis: int) -> Tensor:
        pos = onto[:, axis, None] + t[None] * (onto[:, axis + 2, None] - onto[:, axis, None])
        return 2.0 * (pos - boxes[:, axis, None]) / size[:, axis, None] - 1.0  # [K, M] in [-1, 1]

    gx, gy = normalised(0), normalised(1)
    grid = torch.stack([gx[:, None, :].expand(k, m, m), gy[:, :, None].expand(k, m, m)], dim=-1)
    out = F.grid_sample(masks[:, None].float(), grid.float(), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out[:, 0].to(masks.dtype)


def fuse_detections(
    a: dict[str, Tensor], b: dict[str, Tensor], *, iou_thresh: float = 0.55
) -> dict[str, Tensor]:
    """Fuse two views' detections of one image into one set, sorted by decreasing score.

    Pairs are matched greedily, ``a``'s detections in decreasing score each taking the unmatched
    detection of ``b`` with the same label and the highest box IoU, if it is ``>= iou_thresh``. A
    matched pair gives the mean box, the mean score and the mean of both masks resampled onto the mean
    box; an unmatched detection of either view is kept with half its score.
    """
    if a["mask_lowres"].shape[-1] != b["mask_lowres"].shape[-1]:
        raise ValueError("both views need masks of the same resolution")
    na, nb = a["boxes"].shape[0], b["boxes"].shape[0]
    partner = torch.full((na,), -1, dtype=torch.long)
    if na and nb:
        iou = box_iou(a["boxes"].float(), b["boxes"].float())
        iou[a["labels"][:, None] != b["labels"][None, :]] = -1.0
        taken = torch.zeros(nb, dtype=torch.bool)
        for i in torch.argsort(a["scores"], descending=True, stable=True).tolist():
            row = iou[i].masked_fill(taken, -1.0)
            j = int(row.argmax())
            if row[j] >= iou_thresh:
                partner[i], taken[j] = j, True
    pa = torch.nonzero(partner >= 0).flatten()
    pb = partner[pa]
    boxes = (a["boxes"][pa] + b["boxes"][pb]) / 2
    masks = (resample_masks(a["mask_lowres"][pa], a["boxes"][pa], boxes)
             + resample_masks(b["mask_lowres"][pb], b["boxes"][pb], boxes)) / 2
    lone_a = torch.nonzero(partner < 0).flatten()
    lone_b = torch.ones(nb, dtype=torch.bool)
    lone_b[pb] = False
    lone_b = torch.nonzero(lone_b).flatten()
    fused = {
        "boxes": torch.cat([boxes, a["boxes"][lone_a], b["boxes"][lone_b]]),
        "labels": torch.cat([a["labels"][pa], a["labels"][lone_a], b["labels"][lone_b]]),
        "scores": torch.cat([(a["scores"][pa] + b["scores"][pb]) / 2,
                             a["scores"][lone_a] / 2, b["scores"][lone_b] / 2]),
        "mask_lowres": torch.cat([masks, a["mask_lowres"][lone_a], b["mask_lowres"][lone_b]]),
    }
    order = torch.argsort(fused["scores"], descending=True, stable=True)
    return {k: v[order] for k, v in fused.items()}
