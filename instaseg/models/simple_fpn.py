"""``simple_fpn``: a single-stage instance-segmentation network (ResNet + FPN, one output level).

Design (FCOS-style detection + CondInst-style masks, both on the stride-4 FPN level "P2"):

- **Class heatmap** (C-1 sigmoid channels, focal loss) and **box regression** (distances from the
  location to the 4 box sides, ``exp`` of the prediction times the stride, GIoU loss). A location is
  positive for an object if it lies within ``center_radius`` strides of the box centre (and inside the
  box), or is the cell that holds the centre (so tiny objects always get one); overlaps go to the
  smaller object.
- **Masks**: a shared mask-feature map (8 channels, stride 4) plus, per instance, a tiny dynamic
  network (three 1x1 convs, 169 parameters) whose weights a "controller" head predicts at the
  instance's location. The network sees the mask features plus coordinates relative to that location,
  so two touching objects of the same class still get separate masks. Loss: dice + BCE at stride 2.
- **Inference**: score threshold, top-k, class-wise NMS, then masks for the survivors only,
  upsampled to the input image (probabilities in [0, 1]).

Inputs are resized and normalised inside (torchvision's ``GeneralizedRCNNTransform``: ``min_size``,
``max_size``, ``image_mean``, ``image_std``) and padded to a multiple of 32, so a batch may mix image
sizes; outputs follow the Mask R-CNN contract, in input-image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import _topk_min
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import batched_nms, generalized_box_iou_loss, sigmoid_focal_loss

from instaseg.errors import ConfigError
from instaseg.models.backbones import resnet_fpn
from instaseg.models.common import TolerantBatchNormLoading, drop_crowd, validate_images, validate_targets
from instaseg.models.mask_rcnn import IMAGENET_MEAN, IMAGENET_STD
from instaseg.models.registry import register_model
from instaseg.models.weights import load_matching, load_state_dict_file

MASK_CHANNELS = 8
DYN_CHANNELS = 8
# Dynamic mask head: (8 mask features + 2 coordinates) -> 8 -> 8 -> 1, weights and biases.
DYN_SHAPES = ((DYN_CHANNELS, MASK_CHANNELS + 2), (DYN_CHANNELS, DYN_CHANNELS), (1, DYN_CHANNELS))
NUM_DYN_PARAMS = sum(o * i + o for o, i in DYN_SHAPES)


def _tower(channels: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                   nn.GroupNorm(min(32, channels // 4), channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SimpleFPN(TolerantBatchNormLoading, nn.Module):
    """Single-stage instance segmentation on one FPN level (see the module docstring).

    ``backbone`` is a feature-pyramid backbone whose output "0" has stride ``stride`` and
    ``backbone.out_channels`` channels; ``transform`` resizes, normalises and batches the inputs.
    """

    def __init__(
        self,
        backbone: nn.Module,
        transform: GeneralizedRCNNTransform,
        *,
        num_classes: int,
        stride: int = 4,
        tower_depth: int = 2,
        center_radius: float = 1.5,
        coord_scale: float = 64.0,
        max_mask_instances: int = 64,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        pre_nms_top_k: int = 1000,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        c = backbone.out_channels
        self.backbone, self.transform = backbone, transform
        self.num_classes, self.stride = num_classes, stride
        self.center_radius, self.coord_scale = center_radius, coord_scale
        self.max_mask_instances = max_mask_instances
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.pre_nms_top_k, self.detections_per_img = pre_nms_top_k, detections_per_img
        self.cls_tower, self.reg_tower = _tower(c, tower_depth), _tower(c, tower_depth)
        self.cls_logits = nn.Conv2d(c, num_classes - 1, 3, padding=1)
        self.box_pred = nn.Conv2d(c, 4, 3, padding=1)
        self.controller = nn.Conv2d(c, NUM_DYN_PARAMS, 3, padding=1)
        self.mask_branch = nn.Sequential(_tower(c, 2), nn.Conv2d(c, MASK_CHANNELS, 1))
        for m in (self.cls_logits, self.box_pred, self.controller):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log(99.0))  # prior 1% foreground: stable start
        nn.init.constant_(self.box_pred.bias, math.log(2.0))  # start with boxes ~4 strides wide

    # --- forward ---------------------------------------------------------------------------------
    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        """Training: dict of losses (``loss_cls``, ``loss_box``, ``loss_mask``). Eval: list of
        ``{boxes, labels, scores, masks}`` per image, in input-image pixels."""
        validate_images(images)
        if self.training:
            validate_targets(images, targets, self.num_classes)
            targets = drop_crowd(list(targets))
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        batch, targets = self.transform(images, targets)
        feat = self.backbone(batch.tensors)["0"]
        if feat.shape[-1] * self.stride != batch.tensors.shape[-1]:
            raise ConfigError(f"backbone level '0' must have stride {self.stride}")
        logits, box_raw, params, mask_feat, points = self._heads(feat)
        if self.training:
            return self._losses(logits, box_raw, params, mask_feat, points, targets, batch.tensors.shape[-2:])
        return self._inference(logits, box_raw, params, mask_feat, points, batch.image_sizes, original_sizes)

    def _heads(self, feat: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Head outputs on the stride-``stride`` features (B, c, h, w): class logits (B, C-1, h, w),
        raw box log-distances (B, 4, h, w), dynamic mask parameters (B, P, h, w), mask features
        (B, 8, h, w) and the locations' xy pixel centres (h*w, 2)."""
        cls_feat, reg_feat = self.cls_tower(feat), self.reg_tower(feat)
        logits = self.cls_logits(cls_feat)
        box_raw = self.box_pred(reg_feat).clamp(max=8.0)  # log-distances in strides; clamp: no overflow
        params = self.controller(reg_feat)
        mask_feat = self.mask_branch(feat)
        return logits, box_raw, params, mask_feat, self._points(feat)

    def export_graph(self) -> nn.Module:
        """The export graph (:mod:`instaseg.export.graphs`): one image in, detections out, running
        :meth:`_detect` like eager inference."""
        return SimpleFPNExportGraph(self)

    def _points(self, feat: Tensor) -> Tensor:
        hw = torch._shape_as_tensor(feat)[-2:]  # a tensor: stays dynamic when traced
        ys = (torch.arange(hw[0], device=feat.device, dtype=torch.float32) + 0.5) * self.stride
        xs = (torch.arange(hw[1], device=feat.device, dtype=torch.float32) + 0.5) * self.stride
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)

    def _decode(self, points: Tensor, box_raw: Tensor) -> Tensor:
        """Boxes XYXY from locations (N, 2) and raw log-distances (N, 4: left, top, right, bottom)."""
        d = box_raw.exp() * self.stride
        return torch.cat([points - d[:, :2], points + d[:, 2:]], 1)

    def _mask_logits(self, mask_feat: Tensor, params: Tensor, centers: Tensor) -> Tensor:
        """Per-instance mask logits (K, h, w) from one image's mask features (8, h, w), dynamic
        parameters (K, P) and instance locations (K, 2) in pixels."""
        k = params.shape[0]
        h, w = mask_feat.shape[-2:]
        ys = (torch.arange(h, device=mask_feat.device, dtype=mask_feat.dtype) + 0.5) * self.stride
        xs = (torch.arange(w, device=mask_feat.device, dtype=mask_feat.dtype) + 0.5) * self.stride
        rel_x = (xs.view(1, 1, 1, w) - centers[:, 0].view(k, 1, 1, 1)) / self.coord_scale
        rel_y = (ys.view(1, 1, h, 1) - centers[:, 1].view(k, 1, 1, 1)) / self.coord_scale
        x = torch.cat([mask_feat[None].expand(k, -1, -1, -1),
                       rel_x.expand(k, 1, h, w), rel_y.expand(k, 1, h, w)], 1)
        x = x.reshape(k, MASK_CHANNELS + 2, h * w)  # explicit sizes: a -1 fails in ORT when K = 0
        offset = 0
        for i, (o, c) in enumerate(DYN_SHAPES):
            weight = params[:, offset: offset + o * c].reshape(k, o, c)
            offset += o * c
            bias = params[:, offset: offset + o]
            offset += o
            # batched matmul, not einsum: ONNX Runtime's Einsum dies (SIGFPE) on K = 0 instances
            x = torch.matmul(weight, x) + bias[:, :, None]
            if i < len(DYN_SHAPES) - 1:
                x = F.relu(x)
        return x[:, 0].reshape(k, h, w)

    # --- training --------------------------------------------------------------------------------
    def _assign(self, points: Tensor, boxes: Tensor) -> Tensor:
        """Index of the object each location is positive for, -1 for background. (N,) int64."""
        n = points.shape[0]
        if boxes.numel() == 0:
            return torch.full((n,), -1, dtype=torch.long, device=points.device)
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        x, y = points[:, 0, None], points[:, 1, None]
        inside = (x > boxes[:, 0]) & (x < boxes[:, 2]) & (y > boxes[:, 1]) & (y < boxes[:, 3])
        r = self.center_radius * self.stride
        near = ((x - centers[:, 0]).abs() <= r) & ((y - centers[:, 1]).abs() <= r)
        cell = ((x - centers[:, 0]).abs() <= self.stride / 2) & ((y - centers[:, 1]).abs() <= self.stride / 2)
        candidate = (inside & near) | cell  # (N, G)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        cost = area[None, :].expand(n, -1).masked_fill(~candidate, math.inf)
        best_cost, best = cost.min(1)
        return best.masked_fill(best_cost == math.inf, -1)

    def _losses(self, logits: Tensor, box_raw: Tensor, params: Tensor, mask_feat: Tensor, points: Tensor,
                targets: list[dict[str, Tensor]], padded: Sequence[int]) -> dict[str, Tensor]:
        b, nc = logits.shape[:2]
        flat_logits = logits.permute(0, 2, 3, 1).reshape(b, -1, nc)
        flat_box = box_raw.permute(0, 2, 3, 1).reshape(b, -1, 4)
        flat_params = params.permute(0, 2, 3, 1).reshape(b, -1, NUM_DYN_PARAMS)
        cls_target = torch.zeros_like(flat_logits)
        box_losses, mask_losses, num_pos = [], [], 0
        for i, t in enumerate(targets):
            boxes, labels = t["boxes"], t["labels"]
            assigned = self._assign(points, boxes)
            pos = torch.nonzero(assigned >= 0).squeeze(1)
            if pos.numel() == 0:
                continue
            gt = assigned[pos]
            num_pos += pos.numel()
            cls_target[i, pos, labels[gt] - 1] = 1.0
            pred_boxes = self._decode(points[pos], flat_box[i, pos])
            box_losses.append(generalized_box_iou_loss(pred_boxes, boxes[gt], reduction="none"))
            # Masks: at most max_mask_instances positives per image (random), loss at stride 2.
            if pos.numel() > self.max_mask_instances:
                pick = torch.randperm(pos.numel(), device=pos.device)[: self.max_mask_instances]
                pos, gt = pos[pick], gt[pick]
            mask_logits = self._mask_logits(mask_feat[i], flat_params[i, pos], points[pos])
            mask_losses.append(self._mask_loss(mask_logits, t["masks"][gt], padded))
        # Sum over locations / number of positives (as FCOS); zero-weighted terms keep every
        # parameter in the graph when a batch has no objects (DDP needs all gradients).
        norm = max(1.0, float(num_pos))
        loss_cls = sigmoid_focal_loss(flat_logits, cls_target, reduction="sum") / norm
        zero = (flat_box.sum() + flat_params.sum() + mask_feat.sum()) * 0.0
        loss_box = torch.cat(box_losses).mean() + zero if box_losses else zero
        loss_mask = torch.cat(mask_losses).mean() + zero if mask_losses else zero
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_mask": loss_mask}

    def _mask_loss(self, mask_logits: Tensor, gt_masks: Tensor, padded: Sequence[int]) -> Tensor:
        """Dice + BCE per instance, (K,), comparing at stride 2 (logits upsampled x2, targets pooled)."""
        h, w = gt_masks.shape[-2:]
        gt = F.pad(gt_masks.float(), (0, padded[1] - w, 0, padded[0] - h))[:, None]
        gt = F.avg_pool2d(gt, 2)[:, 0]
        pred = F.interpolate(mask_logits[:, None], size=gt.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]
        bce = F.binary_cross_entropy_with_logits(pred, gt, reduction="none").flatten(1).mean(1)
        prob = pred.sigmoid().flatten(1)
        gt = gt.flatten(1)
        dice = 1 - (2 * (prob * gt).sum(1) + 1) / (prob.pow(2).sum(1) + gt.pow(2).sum(1) + 1)
        return dice + bce

    # --- inference -------------------------------------------------------------------------------
    def _inference(self, logits: Tensor, box_raw: Tensor, params: Tensor, mask_feat: Tensor, points: Tensor,
                   image_sizes: list[tuple[int, int]], original_sizes: list[tuple[int, int]]) -> list[dict]:
        b, nc = logits.shape[:2]
        scores_all = logits.sigmoid().permute(0, 2, 3, 1).reshape(b, -1, nc)
        flat_box = box_raw.permute(0, 2, 3, 1).reshape(b, -1, 4)
        flat_params = params.permute(0, 2, 3, 1).reshape(b, -1, NUM_DYN_PARAMS)
        results = []
        for i in range(b):
            h, w = image_sizes[i]
            boxes, scores, labels, probs = self._detect(
                scores_all[i], flat_box[i], flat_params[i], mask_feat[i], points,
                torch.tensor([h, w], device=points.device), self.score_thresh)
            oh, ow = original_sizes[i]
            masks = F.interpolate(probs[:, None], size=(oh, ow), mode="bilinear", align_corners=False)
            results.append({"boxes": resize_boxes(boxes, (h, w), (oh, ow)), "labels": labels,
                            "scores": scores, "masks": masks})
        return results

    def _detect(self, scores: Tensor, box_raw: Tensor, params: Tensor, mask_feat: Tensor, points: Tensor,
                size: Tensor, score_thresh: float | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One image's detections: score threshold, top-k, class-wise NMS, masks of the survivors.

        Tensor-only (no Python branching on data or sizes), so the export graph traces this very code
        with dynamic sizes. Inputs: ``scores`` (N, C-1) probabilities, ``box_raw`` (N, 4), ``params``
        (N, P) per location, ``mask_feat`` (8, h', w') at stride ``stride`` over the padded batch,
        ``points`` (N, 2), ``size`` int64 (2,) (h, w) of the resized image before padding; locations
        scoring at or below ``score_thresh`` are dropped.

        Returns boxes (K, 4) XYXY resized-image pixels, scores (K,) decreasing, labels (K,) int64
        1..C-1 and mask probabilities (K, h, w) covering the resized image.
        """
        nc = self.num_classes - 1
        flat = scores.reshape(-1)
        keep = torch.nonzero(flat > score_thresh).squeeze(1)
        top = flat[keep].topk(_topk_min(flat[keep], self.pre_nms_top_k, 0)).indices
        keep = keep[top.sort().values]  # location order, as when all fit (ties reach NMS alike)
        loc, cls = keep // nc, keep % nc
        scores = flat[keep]
        limits = size.flip(0).repeat(2).to(box_raw.dtype)  # (w, h, w, h)
        boxes = torch.minimum(self._decode(points[loc], box_raw[loc]).clamp(min=0), limits)
        order = batched_nms(boxes, scores, cls, self.nms_thresh)[: self.detections_per_img]
        loc, cls, scores, boxes = loc[order], cls[order], scores[order], boxes[order]
        m = self._mask_logits(mask_feat, params[loc], points[loc])
        m = F.interpolate(m[:, None], scale_factor=self.stride, mode="bilinear", align_corners=False)[:, 0]
        # crop the padding: index_select keeps (h, w) dynamic where slicing would freeze it in a trace
        m = m.index_select(1, torch.arange(size[0], device=m.device))
        m = m.index_select(2, torch.arange(size[1], device=m.device))
        return boxes, scores, cls + 1, m.sigmoid()


class SimpleFPNExportGraph(nn.Module):
    """Export graph of :class:`SimpleFPN` (protocol: :mod:`instaseg.export.graphs`).

    Normalises, resizes (eager sizes, :func:`instaseg.export.graphs.resize_like_eager`) and pads one
    image as the model's ``transform`` does, then runs the model's own :meth:`SimpleFPN._heads` and
    :meth:`SimpleFPN._detect`; boxes are mapped back as ``resize_boxes`` does. Masks (``mask_kind``
    "image") are the probabilities over the resized image, which eager inference also resizes
    bilinearly to the input size."""

    mask_kind = "image"

    def __init__(self, model: SimpleFPN) -> None:
        super().__init__()
        self.model = model
        t = model.transform
        self.min_size, self.max_size = int(t.min_size[-1]), int(t.max_size)
        self.size_divisible = int(t.size_divisible)
        self.default_score_threshold = float(model.score_thresh)
        self.preprocessing = {
            "normalize_mean": [float(v) for v in t.image_mean],
            "normalize_std": [float(v) for v in t.image_std],
            "resize": f"shorter side to {self.min_size}, longer side at most {self.max_size}",
            "pad_to_multiple": self.size_divisible,
            "default_size": [self.min_size, self.max_size],
        }

    def forward(self, image: Tensor, score_threshold: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from instaseg.export.graphs import resize_like_eager

        m = self.model
        x = resize_like_eager(m.transform.normalize(image), self.min_size, self.max_size)
        size = torch._shape_as_tensor(x)[-2:]
        d = self.size_divisible
        pad = (size + (d - 1)) // d * d - size  # zeros bottom/right, as batch_images
        x = F.pad(x[None], (0, pad[1], 0, pad[0]))
        logits, box_raw, params, mask_feat, points = m._heads(m.backbone(x)["0"])
        nc = m.num_classes - 1
        boxes, scores, labels, probs = m._detect(
            logits[0].sigmoid().permute(1, 2, 0).reshape(-1, nc),
            box_raw[0].permute(1, 2, 0).reshape(-1, 4),
            params[0].permute(1, 2, 0).reshape(-1, NUM_DYN_PARAMS),
            mask_feat[0], points, size, score_threshold)
        ratio = torch._shape_as_tensor(image)[-2:].to(torch.float32) / size.to(torch.float32)
        return boxes * ratio.flip(0).repeat(2), scores, labels, probs


@register_model()
def simple_fpn(
    *,
    num_classes: int = 4,
    min_size: int = 128,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
    depth: int = 18,
    fpn_channels: int = 128,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
    **head_kwargs: Any,
) -> SimpleFPN:
    """Single-stage ResNet-18 FPN: FCOS-style boxes and CondInst-style masks on one level.

    ``depth`` picks the ResNet (18, 34, 50, 101); see :class:`SimpleFPN` for the design.

    ``weights``: None or a local checkpoint path (no published weights). ``head_kwargs`` go to
    :class:`SimpleFPN` (``center_radius``, ``tower_depth``, ``max_mask_instances``, ``pre_nms_top_k``...).
    """
    backbone = resnet_fpn(depth=depth, out_channels=fpn_channels, backbone_weights=backbone_weights,
                          trainable_layers=trainable_backbone_layers)
    transform = GeneralizedRCNNTransform(min_size, max_size, list(image_mean or IMAGENET_MEAN),
                                         list(image_std or IMAGENET_STD))
    model = SimpleFPN(backbone, transform, num_classes=num_classes, score_thresh=score_thresh,
                      nms_thresh=nms_thresh, detections_per_img=detections_per_img, **head_kwargs)
    if weights is not None:
        state = load_state_dict_file(weights)
        load_matching(model, state, source=str(weights), skip_mismatched=("cls_logits.",))
    return model
