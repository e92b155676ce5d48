"""Image resizing written with tensor ops only, so exported graphs resize exactly as eager PyTorch.

Sizes are computed in double precision from the image shape read as a tensor
(``torch._shape_as_tensor``): in eager mode that is plain arithmetic, and in a trace the image height
and width stay dynamic. (A float32 size computation would round differently, e.g. 479 px -> 128 in
float32 but 127 in double.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_shorter_side(image: Tensor, min_size: int, max_size: int) -> Tensor:
    """Resize a [3, H, W] image by ``min(min_size / short side, max_size / long side)`` (bilinear), the
    output sides being ``floor(side * scale)`` as torchvision's ``GeneralizedRCNNTransform`` computes
    them in eager mode. Returns [3, h, w]."""
    hw = torch._shape_as_tensor(image)[-2:].to(torch.float64)
    limits = torch.tensor([float(min_size), float(max_size)], dtype=torch.float64)
    scale = (limits / torch.stack([hw.min(), hw.max()])).min()  # [2] / [2]: no scalar promotion
    size = torch.floor(hw * scale).to(torch.int64)
    return F.interpolate(image[None], size=(size[0], size[1]), mode="bilinear", align_corners=False)[0]


def letterbox_size(height: int, width: int, size: int) -> tuple[int, int, float]:
    """``(h, w, scale)`` of an image of ``height x width`` letterboxed into ``size x size`` (Python
    numbers, the same double-precision arithmetic as :func:`letterbox_image`)."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale)), scale


def letterbox_image(image: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Letterbox a [3, H, W] image: resize (bilinear) so its longer side is ``size``, sides rounded to
    the nearest integer, and zero-pad bottom/right to ``size x size``.

    Returns ``(canvas [3, size, size], scale)`` with ``scale`` a float32 scalar tensor such that
    ``canvas_xy = image_xy * scale``.
    """
    hw = torch._shape_as_tensor(image)[-2:].to(torch.float64)
    scale = torch.tensor([float(size)], dtype=torch.float64) / hw.max().reshape(1)  # [1]: no promotion
    new_hw = torch.round(hw * scale).clamp(min=1).to(torch.int64)
    resized = F.interpolate(image[None], size=(new_hw[0], new_hw[1]), mode="bilinear", align_corners=False)
    pad = size - new_hw
    return F.pad(resized, (0, pad[1], 0, pad[0]))[0], scale.to(torch.float32)[0]
