"""Box supervision for the Mask R-CNN family: the mask branch's losses computed from boxes alone
(the terms are in :mod:`instaseg.ops.box_losses`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision.ops import clip_boxes_to_image, roi_align

from instaseg.ops.box_losses import box_supervised_losses, boxes_to_masks


def rcnn_box_mask_losses(self: Any, features: Any, image_shapes: Any, targets: Any) -> dict[str, Tensor]:
    """Box-supervised mask losses of RoI heads ``self`` (a torchvision ``RoIHeads`` with
    ``box_images``, ``_sampled`` and the ``box_*`` knobs set, see
    :class:`~instaseg.models.mask_rcnn.ScoreAtLeastRoIHeads`): the positive RoIs' mask logits for their
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
                                 outside_weight=self.box_outside_weight)
