"""Run a detection model and keep its masks at their native low resolution.

Models may return, per image, either full-size masks (``masks``: Tensor[K, 1, H, W] probabilities, the
torchvision contract) or box-relative low-resolution masks (``mask_lowres``: Tensor[K, M, M]
probabilities for the box ``boxes[k]``), which :mod:`instaseg.ops.paste` turns into RLEs without ever
building a full-size float mask per detection.

:func:`lowres_inference` picks the cheapest path a model supports:

1. the model defines ``forward_lowres(images) -> list[dict]`` (boxes, labels, scores, mask_lowres);
2. the model is a torchvision ``GeneralizedRCNN`` with a mask head (Mask R-CNN and the models built
   from its parts): its transform/backbone/rpn/roi_heads run as in ``forward``, and only the final
   ``paste_masks_in_image`` of ``transform.postprocess`` is skipped (boxes are rescaled to the input
   size as torchvision does);
3. anything else: ``model(images)``, whose full-size masks are passed through.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor


def supports_lowres(model: Any) -> bool:
    """True if :func:`lowres_inference` can get box-relative masks from ``model`` (no full-size paste)."""
    if callable(getattr(model, "forward_lowres", None)):
        return True
    roi_heads = getattr(model, "roi_heads", None)
    return (
        all(hasattr(model, name) for name in ("transform", "backbone", "rpn"))
        and roi_heads is not None
        and getattr(roi_heads, "mask_predictor", None) is not None
    )


def _rescale_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """Scale XYXY ``boxes`` (Tensor[K, 4]) from an image of ``from_size`` (h, w) to ``to_size`` (h, w)."""
    ratio_h = to_size[0] / from_size[0]
    ratio_w = to_size[1] / from_size[1]
    scale = boxes.new_tensor([ratio_w, ratio_h, ratio_w, ratio_h])
    return boxes * scale


def _rcnn_lowres(model: Any, images: list[Tensor]) -> list[dict[str, Tensor]]:
    """torchvision GeneralizedRCNN inference without the full-resolution mask paste."""
    original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    image_list, _ = model.transform(images)
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = model.rpn(image_list, features)
    detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    out = []
    for det, resized, original in zip(detections, image_list.image_sizes, original_sizes, strict=True):
        masks = det["masks"]
        out.append(
            {
                "boxes": _rescale_boxes(det["boxes"], tuple(resized), original),
                "labels": det["labels"],
                "scores": det["scores"],
                "mask_lowres": masks[:, 0] if masks.dim() == 4 else masks,
            }
        )
    return out


@torch.inference_mode()
def lowres_inference(model: Any, images: list[Tensor]) -> list[dict[str, Tensor]]:
    """Detections for ``images`` (list of Tensor[3, H, W] RGB in [0, 1]) from an eval-mode ``model``.

    Returns one dict per image with ``boxes`` (Tensor[K, 4] XYXY input-image pixels), ``labels``
    (Tensor[K] int64), ``scores`` (Tensor[K]) and either ``mask_lowres`` (Tensor[K, M, M] box-relative
    probabilities) or ``masks`` (Tensor[K, 1, H, W] full-size probabilities) for models that only
    produce those.
    """
    forward_lowres = getattr(model, "forward_lowres", None)
    if callable(forward_lowres):
        return list(forward_lowres(images))
    if supports_lowres(model) and not getattr(model, "training", False):
        return _rcnn_lowres(model, images)
    return list(model(images))
