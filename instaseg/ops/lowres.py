"""The one entry point for inference with box-relative low-resolution masks.

Every instaseg model (:class:`instaseg.models.protocol.InstanceSegmentationModel`) and every exported
model loaded back (:class:`instaseg.predict.runtime.ExportedDetector`) implements ``forward_lowres``:
per image ``boxes`` Tensor[K, 4] XYXY input pixels, ``labels``, ``scores`` and ``mask_lowres``
Tensor[K, M, M] probabilities relative to each box, which :mod:`instaseg.structures.paste` turns into RLEs
without ever building a full-size float mask per detection. :class:`LowResDetector` is that
inference contract as a ``typing.Protocol``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class LowResDetector(Protocol):
    """Anything that gives detections with box-relative low-resolution masks."""

    def forward_lowres(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Per image: ``boxes`` [K, 4] XYXY input pixels, ``labels`` [K] int64, ``scores`` [K] and
        ``mask_lowres`` [K, M, M] box-relative probabilities."""
        ...


@torch.inference_mode()
def lowres_inference(model: LowResDetector, images: list[Tensor]) -> list[dict[str, Tensor]]:
    """Detections for ``images`` (list of Tensor[3, H, W] RGB in [0, 1]) from an eval-mode ``model``.

    Returns one dict per image with ``boxes`` (Tensor[K, 4] XYXY input-image pixels), ``labels``
    (Tensor[K] int64), ``scores`` (Tensor[K]) and ``mask_lowres`` (Tensor[K, M, M] box-relative
    probabilities). Raises TypeError for a model without the contract's ``forward_lowres``.
    """
    if not isinstance(model, LowResDetector):
        raise TypeError(
            f"{type(model).__name__} does not implement the instaseg model contract (forward_lowres); "
            "see instaseg.models.protocol.InstanceSegmentationModel"
        )
    return list(model.forward_lowres(images))
