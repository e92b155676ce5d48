"""YOLACT / YOLACT++-style real-time instance segmentation (Bolya et al., 2019; 2020), written from
the papers.

One-stage detector on an FPN (P3-P7) whose shared head predicts, per anchor, class scores, a box and
``k`` mask coefficients; a "protonet" on P3 predicts ``k`` prototype masks for the whole image. An
instance's mask is ``sigmoid(prototypes . coefficients)`` cropped to its box. Duplicates are removed
with Fast NMS (one IoU matrix, upper triangle, column max). From YOLACT++ we keep the mask re-scoring
branch: a tiny conv net predicts each mask's IoU with the ground truth, and the final score is
``class score * predicted mask IoU``. Training adds YOLACT's semantic-segmentation auxiliary loss on P3.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from instaseg.errors import ConfigError
from instaseg.models.box_supervision import image_box_mask_losses
from instaseg.models.onestage import LetterboxModel, Raw, build_letterbox_model, check_mask_stride
from instaseg.models.registry import register_model
from instaseg.ops.boxes import cxcywh_to_xyxy, decode_boxes, encode_boxes
from instaseg.ops.masks import crop_masks, downsample_masks
from instaseg.ops.nms import fast_nms_keep

STRIDES = (8, 16, 32, 64, 128)


def make_anchors(input_size: int, anchor_scale: float, aspect_ratios: tuple[float, ...]) -> Tensor:
    """Anchors [A, 4] as (cx, cy, w, h) canvas pixels, ordered level, y, x, aspect ratio (the order in
    which the head's outputs are flattened). Level sizes follow ``ceil(S / stride)``."""
    out = []
    for stride in STRIDES:
        n = math.ceil(input_size / stride)
        c = (torch.arange(n, dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        base = anchor_scale * stride
        for_level = []
        for ar in aspect_ratios:
            w, h = base * math.sqrt(ar), base / math.sqrt(ar)
            for_level.append(torch.stack([cx, cy, torch.full_like(cx, w), torch.full_like(cy, h)], -1))
        out.append(torch.stack(for_level, 2).reshape(-1, 4))  # (y, x, a) order
    return torch.cat(out)


class ProtoNet(nn.Module):
    """P3 -> k prototype masks at stride ``8 / upsample`` (convs, upsample, optional conv, 1x1)."""

    def __init__(
        self, channels: int, num_protos: int, num_convs: int = 3, conv_after_up: bool = True,
        upsample: int = 2,
    ):
        super().__init__()
        self.upsample = upsample
        layers: list[nn.Module] = []
        for _ in range(num_convs):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.pre = nn.Sequential(*layers)
        post: list[nn.Module] = []
        if conv_after_up:
            post += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        # Linear prototypes: a final ReLU (as in the paper) can die when training from scratch.
        post += [nn.Conv2d(channels, num_protos, 1)]
        self.post = nn.Sequential(*post)

    def forward(self, p3: Tensor) -> Tensor:
        x = self.pre(p3)
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=float(self.upsample), mode="bilinear", align_corners=False)
        return self.post(x)


class PredictionHead(nn.Module):
    """Shared over FPN levels: class logits, box deltas and tanh mask coefficients per anchor."""

    def __init__(
        self, channels: int, num_anchors: int, num_classes: int, num_protos: int, num_convs: int,
        kernel: int = 3,
    ):
        super().__init__()
        tower: list[nn.Module] = []
        for _ in range(num_convs):
            tower += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.tower = nn.Sequential(*tower)
        self.num_classes, self.num_protos = num_classes, num_protos
        pad = kernel // 2
        self.cls = nn.Conv2d(channels, num_anchors * num_classes, kernel, padding=pad)
        self.box = nn.Conv2d(channels, num_anchors * 4, kernel, padding=pad)
        self.coef = nn.Conv2d(channels, num_anchors * num_protos, kernel, padding=pad)
        for conv in (self.cls, self.box, self.coef):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        cls, box, coef = [], [], []
        for f in feats:
            x = self.tower(f)
            b = x.shape[0]
            cls.append(self.cls(x).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes))
            box.append(self.box(x).permute(0, 2, 3, 1).reshape(b, -1, 4))
            coef.append(self.coef(x).permute(0, 2, 3, 1).reshape(b, -1, self.num_protos))
        return torch.cat(cls, 1), torch.cat(box, 1), torch.tanh(torch.cat(coef, 1))


class MaskIoUNet(nn.Module):
    """YOLACT++ mask re-scoring: [N, 1, h, w] cropped mask -> [N, C-1] predicted IoU per class."""

    def __init__(self, num_fg_classes: int, widths: tuple[int, ...] = (8, 16, 32, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        c = 1
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c = w
        layers += [nn.Conv2d(c, num_fg_classes, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, masks: Tensor) -> Tensor:
        # A fixed 32x32 input keeps its cost independent of the canvas size (x25 cheaper at 640).
        masks = F.interpolate(masks, size=(32, 32), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.net(masks).amax(dim=(2, 3)))


class YOLACT(LetterboxModel):
    """YOLACT(++) on any multi-scale backbone + FPN; see the module docstring.

    Args:
        backbone: returns [C3, C4, C5]; fpn: maps them to [P3..P7] with ``fpn.out_channels``.
        num_classes: including background. input_size: letterbox canvas side (multiple of 32).
        proto_stride: canvas pixels per prototype pixel (8, 4 or 2); 2 gives finer masks (small
            objects, high-IoU AP) at 4x the prototype cost.
        score_thresh: detections scoring below it are dropped (final score, after re-scoring).
        mask_size: side of the box-relative output masks (default: the prototype map's side).
    """

    def __init__(
        self,
        backbone: nn.Module,
        fpn: nn.Module,
        *,
        num_classes: int,
        input_size: int = 544,
        num_protos: int = 32,
        head_convs: int = 1,
        head_kernel: int = 3,
        proto_convs: int = 3,
        proto_conv_after_up: bool = True,
        proto_stride: int = 4,
        aspect_ratios: tuple[float, ...] = (1.0, 0.5, 2.0),
        anchor_scale: float = 4.0,
        use_maskiou: bool = True,
        score_thresh: float = 0.05,
        nms_threshold: float = 0.5,
        pre_nms_top_k: int = 200,
        max_detections: int = 100,
        mask_size: int | None = None,
        loss_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__(backbone, fpn, num_classes=num_classes, input_size=input_size,
                         score_thresh=score_thresh, max_detections=max_detections, mask_size=mask_size)
        ch = fpn.out_channels
        upsample = check_mask_stride(proto_stride, "proto_stride")
        self.head = PredictionHead(ch, len(aspect_ratios), num_classes, num_protos, head_convs, head_kernel)
        self.protonet = ProtoNet(ch, num_protos, proto_convs, proto_conv_after_up, upsample)
        self.semantic = nn.Conv2d(ch, num_classes - 1, 1)  # training-only auxiliary head
        self.maskiou = MaskIoUNet(num_classes - 1) if use_maskiou else None
        self.nms_threshold, self.pre_nms_top_k = nms_threshold, pre_nms_top_k
        self.loss_weights = {"cls": 1.0, "box": 1.5, "mask": 6.0, "semantic": 1.0, "maskiou": 1.0}
        self.loss_weights.update(loss_weights or {})
        self.register_buffer(
            "anchors", make_anchors(input_size, anchor_scale, tuple(aspect_ratios)), persistent=False
        )

    @LetterboxModel.supervision.setter  # type: ignore[attr-defined]
    def supervision(self, value: str) -> None:
        if value == "boxes" and self.maskiou is not None:
            raise ConfigError("yolact: train.supervision=boxes needs model.kwargs use_maskiou: false "
                              "(the mask re-scoring head learns from true masks)")
        LetterboxModel.supervision.fset(self, value)  # type: ignore[attr-defined]

    # ---- shared trunk -------------------------------------------------------------------------
    def _features(self, batch: Tensor) -> tuple[list[Tensor], Tensor, Tensor, Tensor, Tensor]:
        feats = self.features(batch)
        cls, box, coef = self.head(feats)
        protos = self.protonet(feats[0])  # [B, k, S/p, S/p], p = proto_stride
        return feats, cls, box, coef, protos

    def _proto_stride(self, protos: Tensor) -> float:
        return self.input_size / protos.shape[-1]

    # ---- inference (fixed shapes, tensor-only: the export graph runs it too) ------------------
    def detect_canvas(self, batch: Tensor, score_thresh: Tensor | float) -> Raw:
        """See :meth:`LetterboxModel.detect_canvas`; masks are at the prototype stride, uncropped: the
        box-relative output samples them inside the box only, which crops each mask to its box at the
        output resolution (YOLACT's crop) rather than at the prototype cells. ``score_thresh`` is
        applied later (:meth:`LetterboxModel.finish`)."""
        _, cls, box, coef, protos = self._features(batch)
        probs = cls.softmax(-1)[..., 1:]
        best, label = probs.max(-1)
        k = min(self.pre_nms_top_k, best.shape[1])
        scores, idx = best.topk(k, dim=1)  # sorted descending
        boxes = decode_boxes(_gather(box, idx), self.anchors[idx]).clamp(0, self.input_size)
        labels = torch.gather(label, 1, idx) + 1
        keep = fast_nms_keep(boxes, scores, labels, self.nms_threshold)
        scores = scores * keep.to(scores.dtype)
        # Masks (and their re-scoring) only for the survivors: the expensive part scales with K.
        n = min(self.max_detections, k)
        scores, order = scores.topk(n, dim=1)
        boxes, labels = _gather(boxes, order), torch.gather(labels, 1, order)
        coefs = _gather(_gather(coef, idx), order)
        logits = torch.einsum("bkc,bchw->bkhw", coefs, protos)
        masks = torch.sigmoid(logits)
        if self.maskiou is not None:  # re-scoring sees masks cropped at the prototype stride, as trained
            b, kk, h, w = masks.shape
            cropped = crop_masks(masks, boxes, self._proto_stride(protos)).reshape(b * kk, 1, h, w)
            iou = self.maskiou(cropped).reshape(b, kk, -1)
            scores = scores * torch.gather(iou, 2, (labels - 1)[..., None])[..., 0]
            scores, order = scores.sort(dim=1, descending=True)
            boxes, labels = _gather(boxes, order), torch.gather(labels, 1, order)
            masks = _gather(masks, order)
        scores = torch.where(scores > 0, scores, -torch.ones_like(scores))  # suppressed by NMS
        return boxes, scores, labels, masks

    # ---- training -----------------------------------------------------------------------------
    def compute_losses(self, batch: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        feats, cls, box, coef, protos = self._features(batch)
        anchors_xyxy = cxcywh_to_xyxy(self.anchors)
        stride = self._proto_stride(protos)
        zero = cls.sum() * 0.0
        cls_loss, box_loss, mask_loss, miou_loss = zero, zero, zero, zero
        num_pos = 0
        sem_logits = self.semantic(feats[0])
        sem_loss = zero
        boxes_only = self.box_supervision
        box_logits: list[Tensor] = []
        box_targets: list[Tensor] = []
        for i, t in enumerate(targets):
            gt_boxes, gt_labels, gt_masks = t["boxes"], t["labels"], t["masks"]
            cls_t, matched = _match(anchors_xyxy, gt_boxes, gt_labels)
            pos = cls_t > 0
            n_pos = int(pos.sum())
            num_pos += n_pos
            cls_loss = cls_loss + _ohem_ce(cls[i], cls_t, pos)
            if not boxes_only:  # the semantic target is the masks' union: no box-only stand-in
                sem_loss = sem_loss + _semantic_loss(sem_logits[i], gt_masks, gt_labels)
            if n_pos == 0:
                continue
            pos_idx = pos.nonzero()[:, 0]
            gt_idx = matched[pos_idx]
            box_loss = box_loss + F.smooth_l1_loss(
                box[i, pos_idx], encode_boxes(gt_boxes[gt_idx], self.anchors[pos_idx]), reduction="sum"
            )
            if pos_idx.numel() > 100:  # bound memory: masks for at most 100 positives per image
                sel = torch.randperm(pos_idx.numel(), device=pos_idx.device)[:100]
                pos_idx, gt_idx = pos_idx[sel], gt_idx[sel]
            logits = torch.einsum("nc,chw->nhw", coef[i, pos_idx], protos[i])
            if boxes_only:
                box_logits.append(logits)
                box_targets.append(gt_boxes[gt_idx])
                continue
            small = downsample_masks(gt_masks, tuple(protos.shape[-2:]))[gt_idx]
            crop = crop_masks(torch.ones_like(logits), gt_boxes[gt_idx], stride)
            bce = F.binary_cross_entropy_with_logits(logits, small, reduction="none")
            per_inst = (bce * crop).sum((1, 2)) / crop.sum((1, 2)).clamp(min=1.0)
            mask_loss = mask_loss + per_inst.sum() * (n_pos / pos_idx.numel())
            if self.maskiou is not None:
                pred = (torch.sigmoid(logits) * crop).detach()
                inter = ((pred > 0.5) & (small > 0.5)).sum((1, 2)).float()
                union = ((pred > 0.5) | (small > 0.5)).sum((1, 2)).float().clamp(min=1.0)
                iou_pred = self.maskiou(pred[:, None])
                iou_pred = torch.gather(iou_pred, 1, (gt_labels[gt_idx] - 1)[:, None])[:, 0]
                miou_loss = miou_loss + F.smooth_l1_loss(iou_pred, inter / union, reduction="sum") * (
                    n_pos / pos_idx.numel()
                )
        denom = max(num_pos, 1)
        w = self.loss_weights
        losses = {
            "loss_cls": w["cls"] * cls_loss / denom,
            "loss_box": w["box"] * box_loss / denom,
            "loss_mask": w["mask"] * mask_loss / denom,
            "loss_semantic": w["semantic"] * sem_loss / len(targets),
        }
        if self.maskiou is not None:
            losses["loss_maskiou"] = w["maskiou"] * miou_loss / denom
        if boxes_only:
            del losses["loss_mask"], losses["loss_semantic"]
            losses.update(image_box_mask_losses(box_logits, box_targets, batch, step=self.box_step(),
                                                warmup=self.box_pairwise_warmup))
        return losses


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    """x [B, N, ...] indexed by idx [B, K] along dim 1 -> [B, K, ...]."""
    view = idx.reshape(*idx.shape, *([1] * (x.dim() - 2))).expand(*idx.shape, *x.shape[2:])
    return torch.gather(x, 1, view)


def _match(
    anchors_xyxy: Tensor, gt_boxes: Tensor, gt_labels: Tensor, pos: float = 0.5, neg: float = 0.4
) -> tuple[Tensor, Tensor]:
    """Per-anchor class target (label, 0 background, -1 ignore) and matched GT index."""
    n_anchors = anchors_xyxy.shape[0]
    if gt_boxes.shape[0] == 0:
        z = torch.zeros(n_anchors, dtype=torch.long, device=anchors_xyxy.device)
        return z, z
    iou = box_iou(anchors_xyxy, gt_boxes)
    best_iou, best_gt = iou.max(1)
    # Every GT gets at least its best anchor, so small or odd-shaped objects are never unmatched.
    forced = iou.argmax(0)
    best_iou[forced] = 2.0
    best_gt[forced] = torch.arange(gt_boxes.shape[0], device=iou.device)
    cls_t = gt_labels[best_gt].clone()
    cls_t[best_iou < pos] = -1
    cls_t[best_iou < neg] = 0
    return cls_t, best_gt


def _ohem_ce(logits: Tensor, cls_t: Tensor, pos: Tensor, neg_ratio: int = 3) -> Tensor:
    """Softmax cross-entropy summed over positives and the hardest ``neg_ratio`` x negatives."""
    ce = F.cross_entropy(logits, cls_t.clamp(min=0), reduction="none")
    neg_score = ce.detach().clone()
    neg_score[cls_t != 0] = -1.0
    n_neg = min(max(neg_ratio * int(pos.sum()), 8), int((cls_t == 0).sum()))
    hard = neg_score.topk(n_neg).indices if n_neg > 0 else neg_score.new_zeros(0, dtype=torch.long)
    return ce[pos].sum() + ce[hard].sum()


def _semantic_loss(logits: Tensor, gt_masks: Tensor, gt_labels: Tensor) -> Tensor:
    """Per-class BCE between P3 logits [C-1, h, w] and the union of each class's GT masks."""
    target = logits.new_zeros(logits.shape)
    if gt_masks.shape[0]:
        small = downsample_masks(gt_masks, tuple(logits.shape[-2:])) >= 0.5
        for m, lab in zip(small, gt_labels.tolist(), strict=True):
            target[lab - 1] = torch.maximum(target[lab - 1], m.float())
    return F.binary_cross_entropy_with_logits(logits, target, reduction="mean")


def build_yolact(**kwargs: Any) -> YOLACT:
    """Build a :class:`YOLACT` (see :func:`instaseg.models.onestage.build_letterbox_model`)."""
    return build_letterbox_model(YOLACT, class_specific=("head.cls.", "semantic.", "maskiou."), **kwargs)


@register_model()
def yolact(
    *,
    num_classes: int = 81,
    backbone: str = "resnet50",
    input_size: int = 544,
    fpn_channels: int = 256,
    num_protos: int = 32,
    backbone_weights: str | None = None,
    **kwargs: Any,
) -> YOLACT:
    """YOLACT++-style model, paper-sized: ResNet-50 FPN (256 ch), 32 prototypes, ~550 px canvas."""
    return build_yolact(
        num_classes=num_classes, backbone=backbone, fpn_channels=fpn_channels, input_size=input_size,
        num_protos=num_protos, backbone_weights=backbone_weights, **kwargs,
    )


@register_model()
def yolact_lite(
    *,
    num_classes: int = 81,
    backbone: str = "mobilenet_v3_large",
    input_size: int = 512,
    fpn_channels: int = 64,
    num_protos: int = 16,
    proto_convs: int = 1,
    proto_conv_after_up: bool = False,
    head_kernel: int = 1,
    backbone_weights: str | None = None,
    **kwargs: Any,
) -> YOLACT:
    """Fastest YOLACT: MobileNetV3 FPN (64 ch), 16 prototypes, light protonet, 1x1 predictors."""
    return build_yolact(
        num_classes=num_classes, backbone=backbone, fpn_channels=fpn_channels, input_size=input_size,
        num_protos=num_protos, proto_convs=proto_convs, proto_conv_after_up=proto_conv_after_up,
        head_kernel=head_kernel,
        backbone_weights=backbone_weights, **kwargs,
    )


@register_model()
def yolact_nano(
    *,
    num_classes: int = 81,
    backbone: str = "mobilenet_v3_small",
    input_size: int = 512,
    backbone_weights: str | None = None,
    **kwargs: Any,
) -> YOLACT:
    """The fastest instaseg real-time configuration: :func:`yolact_lite` on MobileNetV3-Small (its CPU
    latency against YOLO11n-seg is in ``benchmarks/results/realtime.json``; see BENCHMARKS.md)."""
    return yolact_lite(
        num_classes=num_classes, backbone=backbone, input_size=input_size,
        backbone_weights=backbone_weights, **kwargs,
    )
