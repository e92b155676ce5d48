"""Checks and helpers shared by every model: input validation happens once, up front, with
ValueErrors that say which image and which field is wrong (instead of an index error deep inside a
loss)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def validate_images(images: Any) -> None:
    """``images`` must be a non-empty list of float Tensor[3, H, W]; ValueError otherwise."""
    if not isinstance(images, list | tuple) or len(images) == 0:
        raise ValueError("images must be a non-empty list of Tensor[3, H, W]")
    for i, img in enumerate(images):
        if not isinstance(img, Tensor) or img.ndim != 3 or img.shape[0] != 3:
            shape = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
            raise ValueError(f"image {i}: expected Tensor[3, H, W], got {shape}")
        if not img.is_floating_point():
            raise ValueError(f"image {i}: expected a float tensor in [0, 1], got {img.dtype}")


def validate_targets(
    images: list[Tensor], targets: Any, num_classes: int, *, need_masks: bool = True
) -> None:
    """Check training targets against the sample schema (see :mod:`instaseg.data.base`).

    Each target needs ``boxes`` (N, 4) float XYXY with x2 > x1 and y2 > y1, ``labels`` (N,) integer in
    [1, num_classes - 1] and (if ``need_masks``) ``masks`` (N, H, W) matching its image. N may be 0.
    """
    if targets is None:
        raise ValueError("targets are required in training mode")
    if not isinstance(targets, list | tuple) or len(targets) != len(images):
        got = len(targets) if isinstance(targets, list | tuple) else type(targets).__name__
        raise ValueError(f"expected one target dict per image ({len(images)}), got {got}")
    for i, (img, t) in enumerate(zip(images, targets, strict=True)):
        if not isinstance(t, dict):
            raise ValueError(f"target {i}: expected a dict, got {type(t).__name__}")
        for key in ("boxes", "labels", *(("masks",) if need_masks else ())):
            if not isinstance(t.get(key), Tensor):
                raise ValueError(f"target {i}: missing tensor {key!r}")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
            raise ValueError(
                f"target {i}: boxes must be float (N, 4), got {tuple(boxes.shape)} {boxes.dtype}"
            )
        n = boxes.shape[0]
        if labels.ndim != 1 or labels.shape[0] != n or labels.is_floating_point():
            raise ValueError(f"target {i}: labels must be integer ({n},), got {tuple(labels.shape)}")
        if n and (int(labels.min()) < 1 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"target {i}: labels must be in 1..{num_classes - 1} (0 is background), "
                f"got {labels.unique().tolist()}"
            )
        if n and not bool(torch.isfinite(boxes).all()):
            raise ValueError(f"target {i}: boxes contain NaN or inf")
        if n and bool(((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any()):
            raise ValueError(f"target {i}: boxes must have x2 > x1 and y2 > y1 (XYXY), got a degenerate box")
        if need_masks:
            masks = t["masks"]
            if masks.ndim != 3 or masks.shape[0] != n or tuple(masks.shape[1:]) != tuple(img.shape[1:]):
                raise ValueError(
                    f"target {i}: masks must be ({n}, {img.shape[1]}, {img.shape[2]}), "
                    f"got {tuple(masks.shape)}"
                )


def drop_crowd(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Targets without ``iscrowd == 1`` instances: crowd regions are not single objects, so they are
    not used as training positives (COCO's evaluation ignores them too)."""
    out = []
    for t in targets:
        crowd = t.get("iscrowd")
        if isinstance(crowd, Tensor) and crowd.numel() and bool(crowd.bool().any()):
            keep = ~crowd.bool()
            n = crowd.shape[0]
            t = {k: (v[keep] if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == n else v)
                 for k, v in t.items()}
        out.append(t)
    return out


class TolerantBatchNormLoading(nn.Module):
    """Mixin for models whose trunk uses frozen BatchNorm when built with pretrained weights and
    ordinary BatchNorm otherwise: ``load_state_dict`` accepts either kind of state dict (the
    ``num_batches_tracked`` counters, which frozen BatchNorm lacks, are not weights)."""

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        own = self.state_dict()
        state = {k: v for k, v in state_dict.items() if k in own or not k.endswith("num_batches_tracked")}
        for key, value in own.items():
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = value.new_zeros(())
        return super().load_state_dict(state, strict=strict, assign=assign)
