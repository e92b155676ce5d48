"""SOLOv2-style location-based instance segmentation (Wang et al., 2020), written from the paper.

Each FPN level's feature map is resized to an ``G x G`` grid. For every grid cell a category branch
predicts class scores (an object "is" at the cell holding its centre) and a kernel branch predicts a
dynamic 1x1 convolution kernel of ``E`` weights. A mask-feature branch fuses P3-P5 into one ``E``-channel
map at stride 4 (or 2/8: ``mask_stride``); the mask of cell ``c`` is ``sigmoid(kernel_c . mask_features)``
(dynamic convolution).
Training: focal loss on categories, Dice loss on the masks of positive cells. Inference: point-NMS on
category maps, top-k cells, mask scoring by "maskness", then Matrix NMS (parallel soft score decay).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from instaseg.errors import ConfigError
from instaseg.models.box_supervision import image_box_mask_losses
from instaseg.models.onestage import LetterboxModel, Raw, build_letterbox_model, check_mask_stride
from instaseg.models.registry import register_model
from instaseg.ops.boxes import boxes_of_masks
from instaseg.ops.losses import dice_loss
from instaseg.ops.masks import downsample_masks
from instaseg.ops.nms import matrix_nms

STRIDES = (8, 16, 32, 64, 128)


def coord_channels(x: Tensor) -> Tensor:
    """Concatenate normalised x and y coordinates in [-1, 1] (CoordConv) to ``x`` [B, C, H, W]."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.cat([x, xx.expand(b, 1, h, w), yy.expand(b, 1, h, w)], 1)


def conv_gn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(min(32, cout // 4), cout),
        nn.ReLU(inplace=True),
    )


class MaskFeatureBranch(nn.Module):
    """Fuse P3-P5 (CoordConv on P5) into ``E`` channels at stride ``8 / upsample``."""

    def __init__(self, cin: int, mid: int, out: int, upsample: int = 2) -> None:
        super().__init__()
        self.upsample = upsample
        self.lateral = nn.ModuleList([conv_gn(cin, mid), conv_gn(cin, mid), conv_gn(cin + 2, mid)])
        self.out = nn.Sequential(nn.Conv2d(mid, out, 1, bias=False), nn.GroupNorm(min(32, out // 4), out),
                                 nn.ReLU(inplace=True))

    def forward(self, feats: list[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        x = self.lateral[0](feats[0])
        for i in (1, 2):
            f = coord_channels(feats[i]) if i == 2 else feats[i]
            x = x + F.interpolate(self.lateral[i](f), size=size, mode="bilinear", align_corners=False)
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=float(self.upsample), mode="bilinear", align_corners=False)
        return self.out(x)


class SOLOv2Head(nn.Module):
    """Shared over levels: grid-resized features -> category logits [B, G*G, C-1], kernels [B, G*G, E]."""

    def __init__(self, cin: int, channels: int, num_convs: int, num_fg: int, kernel_dim: int) -> None:
        super().__init__()
        self.kernel_tower = nn.Sequential(*[conv_gn(cin + 2 if i == 0 else channels, channels)
                                            for i in range(num_convs)])
        self.cate_tower = nn.Sequential(*[conv_gn(cin if i == 0 else channels, channels)
                                          for i in range(num_convs)])
        self.kernel_out = nn.Conv2d(channels, kernel_dim, 3, padding=1)
        self.cate_out = nn.Conv2d(channels, num_fg, 3, padding=1)
        nn.init.normal_(self.kernel_out.weight, std=0.01)
        nn.init.zeros_(self.kernel_out.bias)
        nn.init.normal_(self.cate_out.weight, std=0.01)
        nn.init.constant_(self.cate_out.bias, -math.log((1 - 0.01) / 0.01))  # focal-loss prior

    def forward(self, feat: Tensor, grid: int) -> tuple[Tensor, Tensor]:
        x = coord_channels(feat)
        x = F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)
        kernels = self.kernel_out(self.kernel_tower(x))
        cate = self.cate_out(self.cate_tower(x[:, :-2]))
        b = feat.shape[0]
        return cate.permute(0, 2, 3, 1).reshape(b, grid * grid, -1), kernels.flatten(2).transpose(1, 2)


class SOLOv2(LetterboxModel):
    """SOLOv2 on any multi-scale backbone + 5-level FPN (P3-P7); see the module docstring.

    Args:
        backbone: returns [C3, C4, C5]; fpn: maps them to [P3..P7] with ``fpn.out_channels``.
        num_classes: including background. input_size: letterbox canvas side (multiple of 32).
        grids: grid side per FPN level. scale_ranges are fractions of ``input_size``: level ``i``
            takes objects with ``sqrt(box area) / input_size`` in ``scale_ranges[i]``.
        mask_stride: canvas pixels per mask-feature pixel (8, 4 or 2); 2 gives finer masks at 4x the
            cost of the mask branch output and the dynamic convolution.
        score_thresh: detections scoring below it are dropped; since the final score (category score
            x maskness x Matrix-NMS decay) never exceeds the category score, cells whose category
            score is below it are dropped before the masks are scored (the paper's 0.1 by default).
        final_threshold: decayed scores below it are zeroed before the final top-k.
        mask_size: side of the box-relative output masks (default: the mask map's side).
    """

    def __init__(
        self,
        backbone: nn.Module,
        fpn: nn.Module,
        *,
        num_classes: int,
        input_size: int = 512,
        grids: tuple[int, ...] = (40, 36, 24, 16, 12),
        scale_ranges: tuple[tuple[float, float], ...] = (
            (0.0, 0.144), (0.072, 0.288), (0.144, 0.576), (0.288, 1.15), (0.576, 10.0)),
        head_channels: int = 256,
        head_convs: int = 4,
        mask_channels: int = 128,
        kernel_dim: int = 128,
        mask_stride: int = 4,
        center_sigma: float = 0.2,
        score_thresh: float = 0.1,
        pre_nms_top_k: int = 200,
        max_detections: int = 100,
        nms_sigma: float = 2.0,
        final_threshold: float = 0.05,
        mask_size: int | None = None,
        loss_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__(backbone, fpn, num_classes=num_classes, input_size=input_size,
                         score_thresh=score_thresh, max_detections=max_detections, mask_size=mask_size)
        if len(grids) != len(STRIDES) or len(scale_ranges) != len(STRIDES):
            raise ConfigError(f"grids and scale_ranges need {len(STRIDES)} entries (P3-P7)")
        ch = fpn.out_channels
        self.grids, self.scale_ranges = tuple(grids), tuple(tuple(r) for r in scale_ranges)
        self.center_sigma = center_sigma
        self.head = SOLOv2Head(ch, head_channels, head_convs, num_classes - 1, kernel_dim)
        upsample = check_mask_stride(mask_stride, "mask_stride")
        self.mask_branch = MaskFeatureBranch(ch, mask_channels, kernel_dim, upsample)
        self.pre_nms_top_k, self.nms_sigma, self.final_threshold = pre_nms_top_k, nms_sigma, final_threshold
        self.loss_weights = {"cate": 1.0, "mask": 3.0}
        self.loss_weights.update(loss_weights or {})
        # Stride of each flattened cell's level: masks smaller than it are dropped at inference.
        cell_stride = torch.cat([torch.full((g * g,), float(s)) for g, s in zip(grids, STRIDES, strict=True)])
        self.register_buffer("cell_stride", cell_stride, persistent=False)

    def _features(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        feats = self.features(batch)
        cates, kernels = [], []
        for f, g in zip(feats, self.grids, strict=True):
            c, k = self.head(f, g)
            cates.append(c)
            kernels.append(k)
        return cates, kernels, self.mask_branch(feats[:3])

    # ---- inference (fixed shapes, tensor-only: the export graph runs it too) ------------------
    def detect_canvas(self, batch: Tensor, score_thresh: Tensor | float) -> Raw:
        """See :meth:`LetterboxModel.detect_canvas`. Boxes are the tight boxes of ``mask > 0.5`` on the
        mask map (so at its stride); masks are at the mask stride."""
        cates, kernels, mask_feat = self._features(batch)
        b = batch.shape[0]
        probs = []
        for c, g in zip(cates, self.grids, strict=True):
            p = torch.sigmoid(c).transpose(1, 2).reshape(b, -1, g, g)
            # Point NMS: keep a cell's score only where it is a 2x2 local maximum.
            peak = F.max_pool2d(p, 2, stride=1, padding=1)[..., :g, :g]
            probs.append((p * (peak == p).to(p.dtype)).flatten(2).transpose(1, 2))
        probs = torch.cat(probs, 1)  # [B, cells, C-1]
        num_fg = probs.shape[-1]
        k = min(self.pre_nms_top_k, probs.shape[1] * num_fg)
        scores, idx = probs.flatten(1).topk(k, dim=1)
        cell = torch.div(idx, num_fg, rounding_mode="floor")
        labels = idx - cell * num_fg + 1
        kern = torch.gather(torch.cat(kernels, 1), 1, cell[..., None].expand(-1, -1, mask_feat.shape[1]))
        masks = torch.sigmoid(torch.einsum("bke,behw->bkhw", kern, mask_feat))
        seg = masks > 0.5
        area = seg.flatten(2).sum(-1).to(masks.dtype)
        mstride = self.input_size / masks.shape[-1]
        valid = (scores >= score_thresh) & (area * mstride * mstride > self.cell_stride[cell])
        maskness = (masks * seg).flatten(2).sum(-1) / area.clamp(min=1.0)
        scores = scores * maskness * valid.to(scores.dtype)
        scores, order = scores.sort(dim=1, descending=True)
        labels, masks, seg = (torch.gather(labels, 1, order), _take(masks, order), _take(seg, order))
        # IoUs for Matrix NMS on 2x-pooled masks when large: same ranking, a quarter of the matmul.
        nms_seg = F.avg_pool2d(seg.to(masks.dtype), 2) if seg.shape[-1] > 64 else seg
        scores = matrix_nms(nms_seg.flatten(2), labels, scores, self.nms_sigma)
        scores = scores * (scores > self.final_threshold).to(scores.dtype)
        n = min(self.max_detections, k)
        scores, order = scores.topk(n, dim=1)
        masks, seg = _take(masks, order), _take(seg, order)
        scores = torch.where(scores > 0, scores, -torch.ones_like(scores))  # dropped above
        return boxes_of_masks(seg, mstride), scores, torch.gather(labels, 1, order), masks

    # ---- training -----------------------------------------------------------------------------
    def _assign(self, t: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per flattened cell: class target (0 = none) and GT index (-1 = none)."""
        cls_t, gt_t = [], []
        boxes, masks = t["boxes"], t["masks"]
        dev = masks.device
        s = self.input_size
        scale = ((boxes[:, 2] - boxes[:, 0]).clamp(min=1) * (boxes[:, 3] - boxes[:, 1]).clamp(min=1)).sqrt()
        area = masks.sum((1, 2))
        order = area.argsort(descending=True).tolist()  # small objects written last win a shared cell
        ys = torch.arange(masks.shape[1], device=dev, dtype=torch.float32)
        xs = torch.arange(masks.shape[2], device=dev, dtype=torch.float32)
        for g, (lo, hi) in zip(self.grids, self.scale_ranges, strict=True):
            c = torch.zeros(g, g, dtype=torch.long, device=dev)
            gi = torch.full((g, g), -1, dtype=torch.long, device=dev)
            for j in order:
                if not (lo * s <= float(scale[j]) <= hi * s) or float(area[j]) < 1:
                    continue
                m = masks[j]
                cy = float((m.sum(1) * ys).sum() / area[j]) + 0.5
                cx = float((m.sum(0) * xs).sum() / area[j]) + 0.5
                hh = 0.5 * self.center_sigma * float(boxes[j, 3] - boxes[j, 1])
                hw = 0.5 * self.center_sigma * float(boxes[j, 2] - boxes[j, 0])
                ccy, ccx = min(int(cy / s * g), g - 1), min(int(cx / s * g), g - 1)
                top = max(int((cy - hh) / s * g), ccy - 1, 0)
                bot = min(int((cy + hh) / s * g), ccy + 1, g - 1)
                left = max(int((cx - hw) / s * g), ccx - 1, 0)
                right = min(int((cx + hw) / s * g), ccx + 1, g - 1)
                c[top : bot + 1, left : right + 1] = t["labels"][j]
                gi[top : bot + 1, left : right + 1] = j
            cls_t.append(c.flatten())
            gt_t.append(gi.flatten())
        return torch.cat(cls_t), torch.cat(gt_t)

    def compute_losses(self, batch: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        cates, kernels, mask_feat = self._features(batch)
        cate = torch.cat(cates, 1)
        kern = torch.cat(kernels, 1)
        cate_t = torch.zeros_like(cate)
        dice, n_pos = cate.sum() * 0.0, 0
        box_logits: list[Tensor] = []
        box_targets: list[Tensor] = []
        for i, t in enumerate(targets):
            cls_t, gt_t = self._assign(t)
            pos = (cls_t > 0).nonzero()[:, 0]
            box_logits.append(mask_feat.new_zeros(0, *mask_feat.shape[-2:]))
            box_targets.append(t["boxes"][:0])
            if pos.numel() == 0:
                continue
            cate_t[i, pos, cls_t[pos] - 1] = 1.0
            logits = torch.einsum("ne,ehw->nhw", kern[i, pos], mask_feat[i])
            n_pos += pos.numel()
            if self.box_supervision:
                box_logits[-1], box_targets[-1] = logits, t["boxes"][gt_t[pos]]
                continue
            small = downsample_masks(t["masks"], tuple(mask_feat.shape[-2:]))[gt_t[pos]]
            dice = dice + dice_loss(torch.sigmoid(logits), small).sum()
        w = self.loss_weights
        focal = sigmoid_focal_loss(cate, cate_t, alpha=0.25, gamma=2.0, reduction="sum")
        losses = {"loss_cate": w["cate"] * focal / (n_pos + 1)}
        if self.box_supervision:
            return {**losses, **image_box_mask_losses(box_logits, box_targets, batch, step=self.box_step(),
                                                      warmup=self.box_pairwise_warmup)}
        return {**losses, "loss_mask": w["mask"] * dice / max(n_pos, 1)}


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """x [B, N, h, w] indexed by idx [B, K] -> [B, K, h, w]."""
    return torch.gather(x, 1, idx[..., None, None].expand(-1, -1, *x.shape[2:]))


def build_solov2(**kwargs: Any) -> SOLOv2:
    """Build a :class:`SOLOv2` (see :func:`instaseg.models.onestage.build_letterbox_model`)."""
    return build_letterbox_model(SOLOv2, class_specific=("head.cate_out.",), **kwargs)


@register_model()
def solov2(
    *,
    num_classes: int = 81,
    backbone: str = "resnet50",
    input_size: int = 512,
    fpn_channels: int = 256,
    backbone_weights: str | None = None,
    **kwargs: Any,
) -> SOLOv2:
    """SOLOv2, paper-shaped: ResNet-50 FPN, 4-conv 256-channel head, 128-d dynamic kernels."""
    return build_solov2(num_classes=num_classes, backbone=backbone, fpn_channels=fpn_channels,
                        input_size=input_size, backbone_weights=backbone_weights, **kwargs)


@register_model()
def solov2_lite(
    *,
    num_classes: int = 81,
    backbone: str = "mobilenet_v3_large",
    input_size: int = 512,
    fpn_channels: int = 64,
    head_channels: int = 64,
    head_convs: int = 2,
    mask_channels: int = 64,
    kernel_dim: int = 32,
    grids: tuple[int, ...] = (24, 20, 16, 12, 8),
    pre_nms_top_k: int = 100,
    backbone_weights: str | None = None,
    **kwargs: Any,
) -> SOLOv2:
    """Fastest SOLOv2: MobileNetV3 FPN (64 ch), 2-conv 64-channel head, 32-d kernels, coarser grids."""
    return build_solov2(
        num_classes=num_classes, backbone=backbone, fpn_channels=fpn_channels, input_size=input_size,
        head_channels=head_channels, head_convs=head_convs, mask_channels=mask_channels,
        kernel_dim=kernel_dim, grids=tuple(grids), pre_nms_top_k=pre_nms_top_k,
        backbone_weights=backbone_weights, **kwargs,
    )
