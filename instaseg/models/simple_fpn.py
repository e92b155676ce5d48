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
- **Inference**: score threshold, top-k, class-wise NMS, then masks for the survivors only, cut
  out of their boxes as ``mask_size x mask_size`` box-relative probabilities (the cheap path of the
  model contract; ``model(images)`` pastes them into the image).

Inputs are resized and normalised inside (torchvision's ``GeneralizedRCNNTransform``: ``min_size``,
``max_size``, ``image_mean``, ``image_std``) and padded to a multiple of 32, so a batch may mix image
sizes; outputs follow the model contract (:mod:`instaseg.models.protocol`), in input-image pixels.
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
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import batched_nms, generalized_box_iou_loss, sigmoid_focal_loss

from instaseg.errors import ConfigError
from instaseg.models.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone
from instaseg.models.common import TolerantBatchNormLoading, drop_crowd, validate_images, validate_targets
from instaseg.models.protocol import Detections, ExportGraph, InputSpec, InstanceSegmentationModel
from instaseg.models.registry import register_model
from instaseg.models.weights import load_full_weights
from instaseg.ops.losses import dice_loss
from instaseg.ops.masks import masks_in_boxes
from instaseg.ops.resize import resize_shorter_side

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


class SimpleFPN(TolerantBatchNormLoading, InstanceSegmentationModel):
    """Single-stage instance segmentation on one FPN level (see the module docstring).

    ``backbone`` is a feature-pyramid backbone whose output "0" has stride ``stride`` and
    ``backbone.out_channels`` channels; ``transform`` resizes, normalises and batches the inputs.
    Detections scoring below ``score_thresh`` are dropped; ``mask_size`` is the side of the
    box-relative output masks.
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
        mask_size: int = 56,
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
        if mask_size < 1:
            raise ConfigError(f"mask_size must be a positive number of cells, got {mask_size}")
        self.mask_size = mask_size
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
    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_transform(self.transform)

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        """Training: dict of losses (``loss_cls``, ``loss_box``, ``loss_mask``). Eval: list of
        ``{boxes, labels, scores, masks}`` per image, in input-image pixels."""
        validate_images(images)
        if not self.training:
            return self.paste_full_size(images)
        validate_targets(images, targets, self.num_classes)
        batch, targets = self.transform(images, drop_crowd(list(targets)))
        logits, box_raw, params, mask_feat, points = self._heads(self._level(batch.tensors))
        return self._losses(logits, box_raw, params, mask_feat, points, targets, batch.tensors.shape[-2:])

    def _level(self, batch: Tensor) -> Tensor:
        feat = self.backbone(batch)["0"]
        if feat.shape[-1] * self.stride != batch.shape[-1]:
            raise ConfigError(f"backbone level '0' must have stride {self.stride}")
        return feat

    def forward_lowres(self, images: list[Tensor]) -> list[Detections]:
        validate_images(images)
        batch, _ = self.transform(images)
        logits, box_raw, params, mask_feat, points = self._heads(self._level(batch.tensors))
        out = []
        for i, image in enumerate(images):
            size = torch.tensor(batch.image_sizes[i], device=points.device)
            boxes, scores, labels, low = self._detect_one(
                logits[i], box_raw[i], params[i], mask_feat[i], points, size, self.score_thresh)
            out.append({"boxes": _to_input(boxes, size, torch._shape_as_tensor(image)[-2:]), "labels": labels,
                        "scores": scores, "mask_lowres": low})
        return out

    def _detect_one(self, logits: Tensor, box_raw: Tensor, params: Tensor, mask_feat: Tensor, points: Tensor,
                    size: Tensor, score_thresh: float | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`_detect` on one image's head maps (C-1, h, w), (4, h, w), (P, h, w), (8, h, w)."""
        nc = self.num_classes - 1
        return self._detect(logits.sigmoid().permute(1, 2, 0).reshape(-1, nc),
                            box_raw.permute(1, 2, 0).reshape(-1, 4),
                            params.permute(1, 2, 0).reshape(-1, NUM_DYN_PARAMS), mask_feat, points, size,
                            score_thresh)

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

    def export_graph(self) -> ExportGraph:
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
        return dice_loss(pred.sigmoid(), gt, smooth=1.0, eps=0.0) + bce

    # --- inference -------------------------------------------------------------------------------
    def _detect(self, scores: Tensor, box_raw: Tensor, params: Tensor, mask_feat: Tensor, points: Tensor,
                size: Tensor, score_thresh: float | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One image's detections: score threshold, top-k, class-wise NMS, masks of the survivors.

        Tensor-only (no Python branching on data or sizes), so the export graph traces this very code
        with dynamic sizes. Inputs: ``scores`` (N, C-1) probabilities, ``box_raw`` (N, 4), ``params``
        (N, P) per location, ``mask_feat`` (8, h', w') at stride ``stride`` over the padded batch,
        ``points`` (N, 2), ``size`` int64 (2,) (h, w) of the resized image before padding; locations
        scoring below ``score_thresh`` are dropped.

        Returns boxes (K, 4) XYXY resized-image pixels, scores (K,) decreasing, labels (K,) int64
        1..C-1 and box-relative mask probabilities (K, M, M), ``M = mask_size``.
        """
        loc, cls, scores, boxes = self._select(scores, box_raw, points, size, score_thresh)
        logits = self._mask_logits(mask_feat, params[loc], points[loc])
        low = masks_in_boxes(logits, boxes, self.stride, self.mask_size, sampling_ratio=2)
        return boxes, scores, cls + 1, low.sigmoid()

    def _select(self, scores: Tensor, box_raw: Tensor, points: Tensor, size: Tensor,
                score_thresh: float | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The detections :meth:`_detect` keeps: location index (K,), class index 0..C-2 (K,), score
        (K,) and box (K, 4) XYXY resized-image pixels."""
        nc = self.num_classes - 1
        flat = scores.reshape(-1)
        keep = torch.nonzero(flat >= score_thresh).squeeze(1)
        top = flat[keep].topk(_topk_min(flat[keep], self.pre_nms_top_k, 0)).indices
        keep = keep[top.sort().values]  # location order, as when all fit (ties reach NMS alike)
        loc, cls = keep // nc, keep % nc
        scores = flat[keep]
        limits = size.flip(0).repeat(2).to(box_raw.dtype)  # (w, h, w, h)
        boxes = torch.minimum(self._decode(points[loc], box_raw[loc]).clamp(min=0), limits)
        order = batched_nms(boxes, scores, cls, self.nms_thresh)[: self.detections_per_img]
        return loc[order], cls[order], scores[order], boxes[order]


def _to_input(boxes: Tensor, size: Tensor, image_hw: Tensor) -> Tensor:
    """XYXY ``boxes`` [K, 4] on the resized image of (h, w) ``size`` -> input-image pixels (``image_hw``
    (H, W)), in float32 as torchvision's ``resize_boxes``."""
    ratio = image_hw.to(size.device, torch.float32) / size.to(torch.float32)
    return boxes * ratio.flip(0).repeat(2)


class SimpleFPNExportGraph(ExportGraph):
    """Export graph of :class:`SimpleFPN`: normalise, resize (eager sizes,
    :func:`instaseg.ops.resize.resize_shorter_side`) and pad one image as the model's ``transform``
    does, then the same :meth:`SimpleFPN._heads` and :meth:`SimpleFPN._detect_one` as
    :meth:`SimpleFPN.forward_lowres`."""

    def forward(self, image: Tensor, score_thresh: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m, spec = self.model, self.model.input_spec
        x = resize_shorter_side(m.transform.normalize(image), spec.min_size, spec.max_size)
        size = torch._shape_as_tensor(x)[-2:]
        d = spec.size_divisible
        pad = (size + (d - 1)) // d * d - size  # zeros bottom/right, as batch_images
        x = F.pad(x[None], (0, pad[1], 0, pad[0]))
        logits, box_raw, params, mask_feat, points = m._heads(m.backbone(x)["0"])
        boxes, scores, labels, low = m._detect_one(
            logits[0], box_raw[0], params[0], mask_feat[0], points, size, score_thresh)
        return _to_input(boxes, size, torch._shape_as_tensor(image)[-2:]), scores, labels, low


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
    backbone = build_backbone("resnet_fpn", depth=depth, out_channels=fpn_channels,
                              backbone_weights=backbone_weights, trainable_layers=trainable_backbone_layers)
    transform = GeneralizedRCNNTransform(min_size, max_size, list(image_mean or IMAGENET_MEAN),
                                         list(image_std or IMAGENET_STD))
    model = SimpleFPN(backbone, transform, num_classes=num_classes, score_thresh=score_thresh,
                      nms_thresh=nms_thresh, detections_per_img=detections_per_img, **head_kwargs)
    load_full_weights(model, weights, ("cls_logits.",))
    return model
