"""Panoptic FPN (Kirillov et al. 2019): the Mask R-CNN instance branch plus a semantic head on the
same FPN levels.

The instance branch is one of the Mask R-CNN recipes of :mod:`instaseg.models.mask_rcnn` (built by
:func:`~instaseg.models.mask_rcnn.build_mask_rcnn`: r18 slim, EfficientNet-Lite0, ResNet-50). The
semantic head maps every FPN level (the max-pool level aside) through a 3x3 conv + GroupNorm + ReLU,
upsamples each to the finest level, sums them and classifies each pixel with a 1x1 conv over
``1 + num_stuff_classes`` classes: index 0 is "things" (any instance pixel), 1..S the stuff classes;
target pixels at 255 (VOID) carry no loss. Logits are upsampled bilinearly to the input resolution.

Training targets add ``sem_seg`` (int64 [H, W], see :mod:`instaseg.structures.panoptic`) to the
instance targets. Losses: the Mask R-CNN losses times ``instance_loss_weight`` and ``loss_sem_seg``
(cross-entropy) times ``semantic_loss_weight``.

Inference: :meth:`PanopticFPN.forward_panoptic` gives the instance detections (box-relative masks, as
:meth:`forward_lowres`) plus ``sem_seg``, the semantic argmax [H, W] int64 at the input image's size;
:func:`instaseg.ops.panoptic_fusion.panoptic_fusion` turns both into a panoptic segmentation with the
model's :attr:`PanopticFPN.fusion` parameters (config keys ``overlap_threshold``,
``stuff_area_thresh``, ``instances_score_thresh``). The instance contract (``forward_lowres``,
``forward`` in eval mode) is unchanged, so every instance tool works on a panoptic model too.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.transform import resize_boxes

from instaseg.errors import ConfigError
from instaseg.models.common import drop_crowd, validate_images, validate_targets
from instaseg.models.mask_rcnn import (
    EFFNET_LITE,
    R18_SLIM,
    R50,
    InstanceMaskRCNN,
    Variant,
    _is_path,
    build_mask_rcnn,
    fetch_model_weights,
    load_model_weights,
)
from instaseg.models.protocol import Detections, ExportGraph
from instaseg.models.registry import register_model
from instaseg.ops.panoptic_fusion import FUSION_KEYS, FusionParams
from instaseg.ops.resize import resize_shorter_side
from instaseg.structures.panoptic import SEM_IGNORE

PANOPTIC_DEFAULTS: dict[str, Any] = {
    "num_stuff_classes": 3,
    "semantic_loss_weight": 0.5,  # Detectron2's PANOPTIC_FPN recipe: 0.5 on the semantic loss
    "instance_loss_weight": 1.0,
    "sem_head_dims": None,  # None: the FPN width
    **FusionParams().to_dict(),
}


class SemSegHead(nn.Module):
    """Per level 3x3 conv + GroupNorm + ReLU, upsample to the finest level, sum, 1x1 classifier.

    ``forward(features: list of [B, C, h_i, w_i], finest first) -> logits [B, num_classes, h_0, w_0]``.
    """

    def __init__(self, in_channels: int, num_levels: int, num_classes: int, dims: int) -> None:
        super().__init__()
        groups = math.gcd(32, dims)
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, dims, 3, padding=1, bias=False), nn.GroupNorm(groups, dims),
                          nn.ReLU(inplace=True))
            for _ in range(num_levels)
        )
        self.predictor = nn.Conv2d(dims, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = self.levels[0](features[0])
        for head, f in zip(self.levels[1:], features[1:], strict=True):
            x = x + F.interpolate(head(f), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.predictor(x)


def _levels(features: OrderedDict[str, Tensor] | Tensor) -> list[Tensor]:
    """FPN levels without the max-pool level, finest first."""
    if isinstance(features, Tensor):
        return [features]
    return [v for k, v in features.items() if k != "pool"]


class PanopticFPN(InstanceMaskRCNN):
    """Mask R-CNN (:class:`InstanceMaskRCNN`) + :class:`SemSegHead` (see the module docstring).
    Built by :func:`build_panoptic_fpn`, which attaches the head with :meth:`attach_semantic_head`."""

    sem_seg_head: SemSegHead
    num_stuff_classes: int
    fusion: FusionParams

    def attach_semantic_head(
        self, num_stuff_classes: int, dims: int, *, semantic_loss_weight: float, instance_loss_weight: float,
        fusion: FusionParams,
    ) -> None:
        """Add the semantic head sized from a probe of the backbone (number of FPN levels)."""
        was_training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            num_levels = len(_levels(self.backbone(torch.zeros(1, 3, 64, 64))))
        self.backbone.train(was_training)
        self.sem_seg_head = SemSegHead(self.backbone.out_channels, num_levels, num_stuff_classes + 1, dims)
        self.num_stuff_classes = int(num_stuff_classes)
        self.semantic_loss_weight = float(semantic_loss_weight)
        self.instance_loss_weight = float(instance_loss_weight)
        self.fusion = fusion

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        """Training: Mask R-CNN's losses (times ``instance_loss_weight``) and ``loss_sem_seg`` (times
        ``semantic_loss_weight``); every target needs ``sem_seg``. Eval: the instance contract."""
        validate_images(images)
        if not self.training:
            return self.paste_full_size(images)
        validate_targets(images, targets, self.num_classes)
        targets = drop_crowd(list(targets))
        for i, (img, t) in enumerate(zip(images, targets, strict=True)):
            sem = t.get("sem_seg")
            if not isinstance(sem, Tensor) or tuple(sem.shape) != tuple(img.shape[-2:]):
                shape = tuple(img.shape[-2:])
                raise ValueError(f"target {i}: a panoptic model needs sem_seg of shape {shape}")
        image_list, tv_targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, features, tv_targets)
        _, roi_losses = self.roi_heads(features, proposals, image_list.image_sizes, tv_targets)
        logits = self.sem_seg_head(_levels(features))
        target = self._sem_target(targets, image_list.image_sizes, tuple(image_list.tensors.shape[-2:]))
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        sem_loss = F.cross_entropy(logits, target, ignore_index=SEM_IGNORE)
        if not bool((target != SEM_IGNORE).any()):  # all VOID: a zero that keeps the graph connected
            sem_loss = logits.sum() * 0.0
        losses = {k: v * self.instance_loss_weight for k, v in {**rpn_losses, **roi_losses}.items()}
        losses["loss_sem_seg"] = sem_loss * self.semantic_loss_weight
        return losses

    @staticmethod
    def _sem_target(
        targets: list[dict[str, Tensor]], sizes: list[tuple[int, int]], padded: tuple[int, int]
    ) -> Tensor:
        """The ``sem_seg`` targets resized (nearest) as the transform resized the images, padded with
        VOID to the batch tensor: int64 [B, H_pad, W_pad]."""
        device = targets[0]["sem_seg"].device
        out = torch.full((len(targets), *padded), SEM_IGNORE, dtype=torch.int64, device=device)
        for i, (t, (h, w)) in enumerate(zip(targets, sizes, strict=True)):
            sem = t["sem_seg"]
            if tuple(sem.shape) != (h, w):
                sem = F.interpolate(sem[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
            out[i, :h, :w] = sem
        return out

    def _detect_panoptic(self, images: list[Tensor]) -> list[Detections]:
        """Per image: the instance detections (boxes in input-image pixels, labels, scores,
        ``mask_lowres`` [K, 28, 28]) and ``sem_seg`` int64 [H, W], the semantic argmax at the input size."""
        image_list, _ = self.transform(images)
        features = self.backbone(image_list.tensors)
        proposals, _ = self.rpn(image_list, features)
        detections, _ = self.roi_heads(features, proposals, image_list.image_sizes)
        logits = self.sem_seg_head(_levels(features))
        padded = image_list.tensors.shape[-2:]
        logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        out = []
        sizes = image_list.image_sizes
        for i, (det, resized, image) in enumerate(zip(detections, sizes, images, strict=True)):
            size = image.shape[-2:]  # no int(): an export trace keeps the sizes dynamic
            crop = logits[i : i + 1, :, : resized[0], : resized[1]]
            sem = F.interpolate(crop, size=size, mode="bilinear", align_corners=False)[0].argmax(0)
            boxes = resize_boxes(det["boxes"], list(resized), list(size))
            out.append({"boxes": boxes, "labels": det["labels"], "scores": det["scores"],
                        "mask_lowres": det["masks"][:, 0], "sem_seg": sem})
        return out

    def forward_panoptic(self, images: list[Tensor]) -> list[Detections]:
        """Eval-mode panoptic outputs: :meth:`forward_lowres`'s detections plus ``sem_seg`` int64 [H, W]
        (0 things, 1..S stuff) per image; fuse with :func:`instaseg.ops.panoptic_fusion.panoptic_fusion`."""
        validate_images(images)
        return self._detect_panoptic(images)

    def export_graph(self) -> ExportGraph:
        return PanopticExportGraph(self)


class PanopticExportGraph(ExportGraph):
    """Export graph of :class:`PanopticFPN`: the instance outputs of
    :class:`~instaseg.models.mask_rcnn.RCNNExportGraph` plus a fifth output ``sem_seg`` int64 [H, W]
    (the semantic argmax at the input image's size), from :meth:`PanopticFPN._detect_panoptic`."""

    panoptic = True

    def forward(self, image: Tensor, score_thresh: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        m = self.model
        spec = m.input_spec
        saved = m.roi_heads.score_thresh
        if m.transform.fixed_size is None:  # the exact resize of eager inference (see RCNNExportGraph)
            m.transform.resize = lambda img, target=None: (
                resize_shorter_side(img, spec.min_size, spec.max_size), target)
        m.roi_heads.score_thresh = score_thresh
        try:
            det = m._detect_panoptic([image])[0]
        finally:
            m.transform.__dict__.pop("resize", None)
            m.roi_heads.score_thresh = saved
        return det["boxes"], det["scores"], det["labels"], det["mask_lowres"], det["sem_seg"]


def build_panoptic_fpn(variant: Variant, name: str, **kwargs: Any) -> PanopticFPN:
    """Build the Panoptic FPN on ``variant``'s Mask R-CNN: the Mask R-CNN keywords of
    :func:`~instaseg.models.mask_rcnn.build_mask_rcnn` plus ``num_stuff_classes``,
    ``semantic_loss_weight``, ``instance_loss_weight``, ``sem_head_dims`` and the fusion keys.
    ``weights`` that name a local file (e.g. a Panoptic FPN checkpoint) are loaded after the semantic
    head exists; a torchvision name (COCO Mask R-CNN weights) loads into the instance branch."""
    own = {k: kwargs.pop(k, v) for k, v in PANOPTIC_DEFAULTS.items()}
    if int(own["num_stuff_classes"]) < 1:
        raise ConfigError(f"{name}: num_stuff_classes must be >= 1, got {own['num_stuff_classes']}")
    weights = kwargs.get("weights")
    fetched = None
    if weights is not None and _is_path(weights):
        fetched = fetch_model_weights(kwargs.pop("weights"), None, name)
    try:
        fusion = FusionParams(**{k: own[k] for k in FUSION_KEYS})
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    model = build_mask_rcnn(variant, model_cls=PanopticFPN, **kwargs)
    assert isinstance(model, PanopticFPN)
    dims = int(own["sem_head_dims"] or model.backbone.out_channels)
    model.attach_semantic_head(
        int(own["num_stuff_classes"]), dims, semantic_loss_weight=own["semantic_loss_weight"],
        instance_loss_weight=own["instance_loss_weight"], fusion=fusion,
    )
    load_model_weights(model, fetched)
    return model


@register_model(task="panoptic")
def panoptic_fpn_r18_slim(*, num_classes: int = 4, min_size: int = 128, max_size: int = 128,
                          **kwargs: Any) -> PanopticFPN:
    """Panoptic FPN on the CPU default Mask R-CNN (``maskrcnn_r18_slim``: ResNet-18 to layer3,
    64-channel FPN); the semantic head is 64 channels wide."""
    return build_panoptic_fpn(R18_SLIM, "panoptic_fpn_r18_slim", num_classes=num_classes, min_size=min_size,
                              max_size=max_size, **kwargs)


@register_model(task="panoptic")
def panoptic_fpn_effnet_lite0(*, num_classes: int = 91, min_size: int = 320, max_size: int = 512,
                              **kwargs: Any) -> PanopticFPN:
    """Panoptic FPN on ``maskrcnn_effnet_lite0`` (EfficientNet-Lite0 FPN, 128 channels;
    ``backbone_weights="imagenet"`` offline)."""
    return build_panoptic_fpn(EFFNET_LITE[0], "panoptic_fpn_effnet_lite0", num_classes=num_classes,
                              min_size=min_size, max_size=max_size, **kwargs)


@register_model(task="panoptic")
def panoptic_fpn_r50(*, num_classes: int = 81, min_size: int = 800, max_size: int = 1333,
                     num_stuff_classes: int = 53, **kwargs: Any) -> PanopticFPN:
    """Panoptic FPN on ``maskrcnn_r50_fpn`` (ResNet-50 FPN, 256 channels), COCO panoptic's 80 things
    and 53 stuff classes by default; ``weights="DEFAULT"`` starts the instance branch from
    torchvision's COCO Mask R-CNN when cached (its box/mask predictors are re-sized to ``num_classes``)."""
    return build_panoptic_fpn(R50, "panoptic_fpn_r50", num_classes=num_classes, min_size=min_size,
                              max_size=max_size, num_stuff_classes=num_stuff_classes, **kwargs)
