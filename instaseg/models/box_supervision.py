"""Box supervision: the mask branch's losses computed from boxes alone, for the Mask R-CNN family
(:func:`rcnn_box_mask_losses`) and the one-stage models (:func:`image_box_mask_losses`); the terms
are in :mod:`instaseg.ops.box_losses`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import clip_boxes_to_image, roi_align

from instaseg.ops.box_losses import box_supervised_losses, boxes_to_masks, color_similarity


def rcnn_box_mask_losses(self: Any, features: Any, image_shapes: Any, targets: Any) -> dict[str, Tensor]:
    """Box-supervised mask losses of RoI heads ``self`` (a torchvision ``RoIHeads`` with
    ``box_images``, ``_sampled`` and the ``box_*`` knobs set, see
    :class:`~instaseg.models.roi_heads.ScoreAtLeastRoIHeads`): the positive RoIs' mask logits for their
    gt class against their gt boxes. ``targets`` hold ``boxes`` [N, 4] XYXY in resized-image pixels."""
    if self.box_images is None:
        raise RuntimeError("box supervision needs box_images set for the step")
    sampled, self._sampled = self._sampled, None
    props, matched, labels = sampled[0], sampled[1], sampled[2]
    rois, gt_boxes, gt_labels = [], [], []
    for i, (p, m, lab) in enumerate(zip(props, matched, labels, strict=True)):
        pos = torch.where(lab > 0)[0]
        grow = 1.0 + torch.rand(len(pos), 1, device=p.device) * (self.box_roi_expand - 1.0)
        c, half = (p[pos, :2] + p[pos, 2:]) / 2, (p[pos, 2:] - p[pos, :2]) * grow / 2
        h, w = image_shapes[i]
        rois.append(clip_boxes_to_image(torch.cat([c - half, c + half], 1), (h, w)))
        gt_boxes.append(targets[i]["boxes"][m[pos]])
        gt_labels.append(lab[pos])
    feats = self.mask_roi_pool(features, rois, image_shapes)
    logits = self.mask_predictor(self.mask_head(feats))  # [P, C, M, M]
    cls = torch.cat(gt_labels)
    logits = logits[torch.arange(cls.shape[0], device=cls.device), cls]
    m = logits.shape[-1]
    prop, box = torch.cat(rois), torch.cat(gt_boxes)
    sx = m / (prop[:, 2] - prop[:, 0]).clamp(min=1e-3)
    sy = m / (prop[:, 3] - prop[:, 1]).clamp(min=1e-3)
    rel = torch.stack([(box[:, 0] - prop[:, 0]) * sx, (box[:, 1] - prop[:, 1]) * sy,
                       (box[:, 2] - prop[:, 0]) * sx, (box[:, 3] - prop[:, 1]) * sy], 1).clamp(0, m)
    box_masks = boxes_to_masks(rel, m, m)
    index = torch.cat([torch.full((len(r), 1), i, dtype=prop.dtype, device=prop.device)
                       for i, r in enumerate(rois)])
    colours = roi_align(self.box_images, torch.cat([index, prop], 1), (m, m), 1.0, 2)
    self._box_steps += 1
    ramp = min(1.0, self._box_steps / max(self.box_pairwise_warmup, 1))
    return box_supervised_losses(logits, box_masks, colours.clamp(0, 1), pairwise_weight=ramp, dilation=1,
                                 outside_weight=self.box_outside_weight,
                                 inside_weight=self.box_inside_weight)


def image_box_mask_losses(
    logits: list[Tensor], boxes: list[Tensor], canvases: Tensor, *, step: int, warmup: int,
) -> dict[str, Tensor]:
    """Box-supervised mask losses for models whose masks cover the whole image (the one-stage ones),
    as BoxInst computes them: projections over the whole mask map, pairwise affinity at distance 2.

    Per image ``i``: ``logits[i]`` [N_i, h, w] mask logits over the canvas of its positives, ``boxes[i]``
    [N_i, 4] their ground-truth boxes XYXY in canvas pixels; ``canvases`` [B, 3, S, S] RGB in [0, 1].
    The colour similarity is computed once per image on the canvas area-averaged to ``h x w``. The
    pairwise term is ramped in linearly over ``warmup`` steps (``step`` counts from 1). Returns
    ``{"loss_mask_proj", "loss_mask_outside" (0), "loss_mask_pairwise"}`` scalars."""
    h, w = logits[0].shape[-2:] if logits else canvases.shape[-2:]
    stride_x, stride_y = canvases.shape[-1] / w, canvases.shape[-2] / h
    sims, box_masks = [], []
    for i, (lg, bx) in enumerate(zip(logits, boxes, strict=True)):
        if lg.shape[0] == 0:
            continue
        colours = F.interpolate(canvases[i : i + 1], size=(h, w), mode="area")
        sims.append(color_similarity(colours, dilation=2).expand(lg.shape[0], -1, -1, -1))
        scale = bx.new_tensor([1 / stride_x, 1 / stride_y, 1 / stride_x, 1 / stride_y])
        box_masks.append(boxes_to_masks(bx * scale, h, w))
    flat = torch.cat(logits) if logits else canvases.new_zeros(0, h, w)
    if not sims:
        return box_supervised_losses(flat, flat, None, similarity=flat)
    ramp = min(1.0, step / max(warmup, 1))
    return box_supervised_losses(flat, torch.cat(box_masks), None, similarity=torch.cat(sims),
                                 pairwise_weight=ramp, dilation=2, outside_weight=0.0)


@torch.no_grad()
def rcnn_masks_at_boxes(model: Any, image: Tensor, boxes: Tensor, labels: Tensor) -> Tensor:
    """The mask head's probabilities for given boxes: [N, M, M] (M the head's grid, 28).

    ``model`` an :class:`~instaseg.models.mask_rcnn.InstanceMaskRCNN`; ``image`` float RGB in [0, 1]
    [3, H, W]; ``boxes`` [N, 4] XYXY in its pixels; ``labels`` [N] contiguous class indices (1..C-1).
    The model runs in eval mode (its mode is restored). For self-training: the head's masks for the
    known boxes of a training image, which skips the detector's misses and false positives.
    """
    from torchvision.models.detection.transform import resize_boxes

    was_training = model.training
    model.eval()
    try:
        image_list, _ = model.transform([image])
        features = model.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = {"0": features}
        resized = list(image_list.image_sizes[0])
        rois = resize_boxes(boxes.to(image.dtype), list(image.shape[-2:]), resized)
        heads = model.roi_heads
        feats = heads.mask_roi_pool(features, [rois], image_list.image_sizes)
        logits = heads.mask_predictor(heads.mask_head(feats))
        return logits[torch.arange(len(labels)), labels].sigmoid()
    finally:
        model.train(was_training)
