"""Box-supervised mask losses (BoxInst-style): learn masks from boxes alone.

Two terms, both on mask logits in some frame (a RoI's M x M grid, or an image's feature grid):

- projection: the mask's maximum along y (one value per column) must match the box's, and
  likewise along x; a dice loss on the two projections. A mask equal to the object in its tight box
  has the same projections as the box, so the term is zero for it (and for the box itself).
- pairwise affinity: neighbouring pixels of similar colour (LAB distance) should share a label;
  -log P(same label) averaged over the similar-colour edges inside the box. This is what separates
  the object from the background the box also contains.

All functions are pure; shapes are stated in each docstring. ``box_masks`` are float {0, 1}
rasterised boxes in the same frame as the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dice_loss(pred: Tensor, target: Tensor, eps: float = 1e-5) -> Tensor:
    """``1 - 2|p t| / (|p|^2 + |t|^2)`` per row: ``pred``, ``target`` [N, L] in [0, 1] -> [N]."""
    inter = (pred * target).sum(1)
    union = (pred * pred).sum(1) + (target * target).sum(1)
    return 1.0 - 2.0 * inter / union.clamp(min=eps)


def projection_loss(mask_logits: Tensor, box_masks: Tensor, *, bce_weight: float = 1.0) -> Tensor:
    """Dice between the mask's and the box's projections onto the x and y axes, plus
    ``bce_weight`` x their binary cross-entropy (mean per axis).

    ``mask_logits`` [N, H, W]; ``box_masks`` [N, H, W] float {0, 1}. Returns [N] (per instance, the
    sum over both axes; ~0 when the mask's extent equals the box). The max is taken over logits (the
    same pixel as over probabilities). BoxInst uses the dice term alone; its gradient goes through the
    sigmoid and vanishes once a mask saturates (all ones: the dice loss is stuck at 1 - 2b / (1 + b)
    for a box covering b of the frame), which short, high-rate CPU schedules reach; the cross-entropy
    on the logits keeps a gradient of sigmoid(max) - target.
    """
    lx, bx = mask_logits.amax(dim=1), box_masks.amax(dim=1)  # [N, W]: max over rows
    ly, by = mask_logits.amax(dim=2), box_masks.amax(dim=2)  # [N, H]
    loss = dice_loss(lx.sigmoid(), bx) + dice_loss(ly.sigmoid(), by)
    if bce_weight:
        bce = F.binary_cross_entropy_with_logits
        per_axis = bce(lx, bx, reduction="none").mean(1) + bce(ly, by, reduction="none").mean(1)
        loss = loss + bce_weight * per_axis
    return loss


def outside_loss(mask_logits: Tensor, box_masks: Tensor) -> Tensor:
    """Pixels outside the box are background: mean binary cross-entropy towards 0 over them.

    ``mask_logits`` [N, H, W]; ``box_masks`` [N, H, W] float {0, 1}. Returns [N] (0 for a mask inside
    its box). The projection term says the same through one max per row and column; this one reaches
    every outside pixel at once, which matters for short CPU schedules.
    """
    outside = 1.0 - box_masks
    bce = F.binary_cross_entropy_with_logits(mask_logits, torch.zeros_like(mask_logits), reduction="none")
    return (bce * outside).flatten(1).sum(1) / outside.flatten(1).sum(1).clamp(min=1.0)


def inside_loss(mask_logits: Tensor, box_masks: Tensor) -> Tensor:
    """A weak prior that pixels inside the box are object: mean binary cross-entropy towards 1 over
    them. ``mask_logits`` [N, H, W]; ``box_masks`` [N, H, W] float {0, 1}. Returns [N].

    Projection and pairwise terms rank object pixels above background but leave their level free;
    on short schedules the head's logits for the object stay below 0 (mask AP 0 at the 0.5
    threshold on Penn-Fudan, BENCHMARKS.md). A small weight of this term lifts the object's logits
    over 0 while the pairwise term, weighing more, keeps the background inside the box down.
    """
    bce = F.binary_cross_entropy_with_logits(mask_logits, torch.ones_like(mask_logits), reduction="none")
    return (bce * box_masks).flatten(1).sum(1) / box_masks.flatten(1).sum(1).clamp(min=1.0)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1] [..., 3, H, W] -> CIE LAB (D65) [..., 3, H, W] (L in [0, 100])."""
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    r, g, b = lin.unbind(-3)
    x = (0.412453 * r + 0.357580 * g + 0.180423 * b) / 0.950456
    y = 0.212671 * r + 0.715160 * g + 0.072169 * b
    z = (0.019334 * r + 0.119193 * g + 0.950227 * b) / 1.088754
    xyz = torch.stack([x, y, z], -3)
    f = torch.where(xyz > 0.008856, xyz.clamp(min=1e-8) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], -3)


def unfold_neighbors(x: Tensor, kernel: int = 3, dilation: int = 2) -> Tensor:
    """The ``kernel**2 - 1`` dilated neighbours of each pixel (centre left out, zero padding).

    ``x`` [N, C, H, W] -> [N, C, kernel**2 - 1, H, W].
    """
    n, c, h, w = x.shape
    pad = dilation * (kernel - 1) // 2
    cols = F.unfold(x, kernel, dilation=dilation, padding=pad).view(n, c, kernel * kernel, h, w)
    centre = kernel * kernel // 2
    return torch.cat([cols[:, :, :centre], cols[:, :, centre + 1 :]], dim=2)


def color_similarity(images: Tensor, kernel: int = 3, dilation: int = 2, theta: float = 2.0) -> Tensor:
    """``exp(-||lab_i - lab_j|| / theta)`` between each pixel and its dilated neighbours.

    ``images`` RGB in [0, 1] [N, 3, H, W] -> [N, kernel**2 - 1, H, W] in (0, 1].
    """
    lab = rgb_to_lab(images)
    diff = lab[:, :, None] - unfold_neighbors(lab, kernel, dilation)
    return torch.exp(-diff.norm(dim=1) / theta)


def pairwise_loss(
    mask_logits: Tensor,
    similarity: Tensor,
    box_masks: Tensor,
    *,
    threshold: float = 0.3,
    kernel: int = 3,
    dilation: int = 2,
) -> Tensor:
    """Neighbours of similar colour should share a label: mean -log P(same) over the edges whose
    colour similarity is >= ``threshold`` and whose centre pixel is inside the box.

    ``mask_logits`` [N, H, W]; ``similarity`` [N, kernel**2 - 1, H, W] (:func:`color_similarity`);
    ``box_masks`` [N, H, W] float {0, 1}. Returns a scalar (0 when there is no such edge).
    """
    logits = mask_logits[:, None]
    # log P(label) for fg/bg, stably; neighbours of the same two.
    log_fg, log_bg = F.logsigmoid(logits), F.logsigmoid(-logits)
    nb_fg = unfold_neighbors(log_fg, kernel, dilation)[:, 0]
    nb_bg = unfold_neighbors(log_bg, kernel, dilation)[:, 0]
    log_same = torch.logaddexp(log_fg + nb_fg, log_bg + nb_bg)  # [N, K, H, W]
    weight = (similarity >= threshold).float() * box_masks[:, None]
    return -(log_same * weight).sum() / weight.sum().clamp(min=1.0)


def boxes_to_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """Rasterise XYXY ``boxes`` [N, 4] (pixel units of an H x W grid; pixel k covers [k, k+1)) to
    float {0, 1} masks [N, H, W]; a pixel is inside when its centre is (at least one pixel per box)."""
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    x1, y1, x2, y2 = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3], boxes[:, 3:4]
    # widen degenerate (sub-pixel) boxes to cover the pixel holding their centre
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    x1 = torch.minimum(x1, cx.floor()); x2 = torch.maximum(x2, cx.floor() + 1)  # noqa: E702
    y1 = torch.minimum(y1, cy.floor()); y2 = torch.maximum(y2, cy.floor() + 1)  # noqa: E702
    inx = (xs[None] >= x1) & (xs[None] < x2)  # [N, W]
    iny = (ys[None] >= y1) & (ys[None] < y2)  # [N, H]
    return (iny[:, :, None] & inx[:, None, :]).to(boxes.dtype)


def box_supervised_losses(
    mask_logits: Tensor,
    box_masks: Tensor,
    images: Tensor | None,
    *,
    similarity: Tensor | None = None,
    pairwise_weight: float = 1.0,
    threshold: float = 0.3,
    dilation: int = 2,
    outside_weight: float = 1.0,
    inside_weight: float = 0.0,
) -> dict[str, Tensor]:
    """The terms for a batch of instances: ``{"loss_mask_proj", "loss_mask_outside",
    "loss_mask_pairwise", "loss_mask_inside"}`` (scalars; the last is ``inside_weight`` x
    :func:`inside_loss`, 0 by default).

    ``mask_logits`` [N, H, W]; ``box_masks`` [N, H, W] float {0, 1}; ``images`` RGB in [0, 1]
    [N, 3, H, W], each instance's image in the logits' frame (e.g. RoIAlign of the image). N may be 0
    (then both terms are 0 and still connected to ``mask_logits`` for autograd). ``dilation``: the
    pairwise neighbours' distance (BoxInst's 2 on stride-4 image masks; 1 on a RoI grid made by a
    stride-2 transposed conv, where distance-2 pairs would leave the 4 sub-grids unlinked).
    ``similarity`` [N, 8, H, W]: :func:`color_similarity` computed by the caller (e.g. once per image
    for all its instances); ``images`` is then not read.
    """
    if mask_logits.shape[0] == 0:
        zero = mask_logits.sum() * 0.0
        return {"loss_mask_proj": zero, "loss_mask_outside": zero, "loss_mask_pairwise": zero,
                "loss_mask_inside": zero}
    if similarity is None:
        if images is None:
            raise ValueError("box_supervised_losses needs images or similarity")
        similarity = color_similarity(images, dilation=dilation)
    sim = similarity
    pairwise = pairwise_loss(mask_logits, sim, box_masks, threshold=threshold, dilation=dilation)
    return {"loss_mask_proj": projection_loss(mask_logits, box_masks).mean(),
            "loss_mask_outside": outside_weight * outside_loss(mask_logits, box_masks).mean(),
            "loss_mask_pairwise": pairwise_weight * pairwise,
            "loss_mask_inside": inside_weight * inside_loss(mask_logits, box_masks).mean()}
