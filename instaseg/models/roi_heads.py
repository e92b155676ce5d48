"""RoI heads for the Mask R-CNN family: torchvision's, with an inclusive score threshold, a cap on the
mask head's training positives and the box-supervised mask loss (``train.supervision: boxes``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from instaseg.models.box_supervision import rcnn_box_mask_losses


class ScoreAtLeastRoIHeads(RoIHeads):
    """torchvision's RoI heads, keeping detections whose score is *at least* ``score_thresh``
    (torchvision keeps scores above it). ``score_thresh`` may be a tensor (a graph input in exports).

    With ``box_supervision`` the mask branch trains on boxes alone (:mod:`instaseg.ops.box_losses`):
    ``loss_mask_proj`` and ``loss_mask_pairwise`` replace ``loss_mask``; the caller sets
    ``box_images`` (the batch's RGB [B, 3, H, W] in [0, 1], resized like the features) for the step.
    The pairwise term ramps up linearly over ``box_pairwise_warmup`` training steps (as BoxInst's).
    Positive RoIs are grown by a random factor in [1, ``box_roi_expand``] about their centre for these
    losses: a RoI equal to its box makes "everything is object" a zero-loss answer (BoxInst predicts
    masks over the whole image, where the box is always smaller than the frame), while always growing
    them would teach the head that objects never touch the RoI's border, as they do at inference.
    ``box_outside_weight`` weighs a dense cross-entropy towards background on every pixel outside the
    box; it is off (0) because on Penn-Fudan even 0.1 made the head collapse to thin masks (the dense
    push-down beats the projection term's one pixel per row and column; BENCHMARKS.md).
    ``box_inside_weight`` weighs the opposite, weak prior (:func:`~instaseg.ops.box_losses.inside_loss`).
    """

    box_supervision = False
    mask_rois_per_image: int | None = None
    box_pairwise_warmup = 100
    box_roi_expand = 2.0
    box_outside_weight = 0.0
    box_inside_weight = 0.1
    box_images: Tensor | None = None
    _box_steps = 0
    _sampled: Any = None

    def _own_mask_loss(self) -> bool:
        return self.training and (self.box_supervision or self.mask_rois_per_image is not None)

    def select_training_samples(self, proposals: Any, targets: Any) -> Any:
        out = super().select_training_samples(proposals, targets)
        if self._own_mask_loss():
            self._sampled = out  # proposals, matched gt indices, labels: the mask branch's positives
        return out

    def forward(self, features: Any, proposals: Any, image_shapes: Any, targets: Any = None) -> Any:
        if not self._own_mask_loss():
            return super().forward(features, proposals, image_shapes, targets)
        pool, self.mask_roi_pool = self.mask_roi_pool, None  # torchvision skips its mask branch
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
        finally:
            self.mask_roi_pool = pool
        if self.box_supervision:
            losses.update(rcnn_box_mask_losses(self, features, image_shapes, targets))
        else:
            losses["loss_mask"] = self._capped_mask_loss(features, image_shapes, targets)
        return result, losses

    def _capped_mask_loss(self, features: Any, image_shapes: Any, targets: Any) -> Tensor:
        """torchvision's mask loss on at most ``mask_rois_per_image`` positive RoIs an image, drawn at
        random: with few objects an image most positives are near-copies of one box, and the mask head's
        convolutions run at the RoI grid for every positive (8 an image: 12% less a late Penn-Fudan step,
        BENCHMARKS.md)."""
        sampled, self._sampled = self._sampled, None
        rois, matched = [], []
        for props, idx, labels in zip(sampled[0], sampled[1], sampled[2], strict=True):
            pos = torch.where(labels > 0)[0]
            if len(pos) > int(self.mask_rois_per_image):
                pos = pos[torch.randperm(len(pos), device=pos.device)[: int(self.mask_rois_per_image)]]
            rois.append(props[pos])
            matched.append(idx[pos])
        logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, rois, image_shapes)))
        return maskrcnn_loss(logits, rois, [t["masks"] for t in targets], [t["labels"] for t in targets],
                             matched)

    def postprocess_detections(
        self, class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per image: boxes [K, 4] XYXY (resized-image px), scores [K], labels [K] after the score
        threshold, removal of tiny boxes, class-wise NMS and the ``detections_per_img`` cap."""
        counts = [int(p.shape[0]) for p in proposals]
        all_boxes = self.box_coder.decode(box_regression, proposals).split(counts)  # [N, C, 4] each
        all_scores = F.softmax(class_logits, -1).split(counts)
        out_boxes, out_scores, out_labels = [], [], []
        for boxes, scores, shape in zip(all_boxes, all_scores, image_shapes, strict=True):
            boxes = clip_boxes_to_image(boxes, shape)
            labels = torch.arange(scores.shape[-1], device=scores.device).view(1, -1).expand_as(scores)
            # one candidate per (proposal, foreground class)
            boxes, scores = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            keep = torch.where(scores >= self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep])
            out_labels.append(labels[keep])
        return out_boxes, out_scores, out_labels
