"""The skeleton shared by the letterbox one-stage models (YOLACT, SOLOv2).

Both work on a fixed ``S x S`` canvas: each image is letterboxed (:func:`instaseg.ops.resize.letterbox_image`)
and the network's inference part, :meth:`LetterboxModel.detect_canvas`, has fixed shapes and no
data-dependent Python control flow. Eager inference and the export graph run the *same* tensor-only
code per image (:meth:`LetterboxModel.detect_image`): letterbox, ``detect_canvas``, keep scores
``>= score_thresh``, map boxes to the image and cut each detection's box out of its canvas mask map as
a ``[M, M]`` box-relative mask (:func:`instaseg.ops.masks.masks_in_boxes`). No full-image mask is
ever built: memory is ``K x M x M`` (``M`` = the mask map's side by default) whatever the image size.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.errors import ConfigError
from instaseg.models.backbones import IMAGENET_MEAN, IMAGENET_STD, PyramidP3P7, build_backbone
from instaseg.models.common import validate_images, validate_targets
from instaseg.models.protocol import Detections, ExportGraph, InputSpec, InstanceSegmentationModel
from instaseg.models.weights import load_full_weights
from instaseg.ops.box_losses import boxes_to_masks
from instaseg.ops.masks import masks_in_boxes
from instaseg.ops.resize import letterbox_image, letterbox_size

Raw = tuple[Tensor, Tensor, Tensor, Tensor]


def check_input_size(input_size: int) -> None:
    """The canvas side must be a positive multiple of 32 (the coarsest backbone stride)."""
    if input_size <= 0 or input_size % 32:
        raise ConfigError(f"input_size must be a positive multiple of 32, got {input_size}")


def check_mask_stride(stride: int, name: str) -> int:
    """Upsampling factor from P3 (stride 8) to a mask output at ``stride`` (2, 4 or 8) canvas pixels."""
    if stride not in (2, 4, 8):
        raise ConfigError(f"{name} must be 2, 4 or 8 canvas pixels, got {stride}")
    return 8 // stride


def normalize(batch: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Normalise a [B, 3, H, W] batch in [0, 1]."""
    return (batch - batch.new_tensor(mean).view(1, 3, 1, 1)) / batch.new_tensor(std).view(1, 3, 1, 1)


class LetterboxModel(InstanceSegmentationModel):
    """Base of the letterbox models: ``backbone`` returns [C3, C4, C5], ``fpn`` maps them to [P3..P7].

    Subclasses implement :meth:`detect_canvas` (inference) and :meth:`compute_losses` (training).
    ``mask_size``: side ``M`` of the box-relative output masks (default: the mask map's side, so no
    detail is lost).

    ``supervision = "boxes"`` trains from boxes alone: the targets' masks are replaced by their filled
    boxes before anything reads them (so assignments that use a mask's centre use the box's), and
    subclasses swap their mask loss for BoxInst's (:func:`~instaseg.models.box_supervision.
    image_box_mask_losses`), its pairwise term ramped in over ``box_pairwise_warmup`` steps.
    """

    box_supervision = False
    box_pairwise_warmup = 100
    _box_steps = 0

    def __init__(self, backbone: nn.Module, fpn: nn.Module, *, num_classes: int, input_size: int,
                 score_thresh: float, max_detections: int, mask_size: int | None) -> None:
        super().__init__()
        check_input_size(input_size)
        if num_classes < 2:
            raise ConfigError(f"num_classes includes background and must be >= 2, got {num_classes}")
        self.backbone, self.fpn = backbone, fpn
        self.pixel_mean = tuple(getattr(backbone, "pixel_mean", IMAGENET_MEAN))
        self.pixel_std = tuple(getattr(backbone, "pixel_std", IMAGENET_STD))
        self.num_classes, self.input_size = num_classes, input_size
        self.score_thresh, self.max_detections = float(score_thresh), max_detections
        if mask_size is not None and mask_size < 1:
            raise ConfigError(f"mask_size must be a positive number of cells, got {mask_size}")
        self.mask_size = mask_size

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.pixel_mean, self.pixel_std, fixed_size=self.input_size)

    @property
    def supervision(self) -> str:
        """``"masks"`` (the default) or ``"boxes"``: learn the masks from the boxes alone."""
        return "boxes" if self.box_supervision else "masks"

    @supervision.setter
    def supervision(self, value: str) -> None:
        if value not in ("masks", "boxes"):
            raise ConfigError(f"supervision must be 'masks' or 'boxes', got {value!r}")
        self.box_supervision = value == "boxes"

    def box_step(self) -> int:
        """Count a box-supervised training step; the count (from 1) ramps the pairwise term."""
        self._box_steps += 1
        return self._box_steps

    def features(self, batch: Tensor) -> list[Tensor]:
        """[B, 3, S, S] canvas RGB in [0, 1] -> [P3..P7]."""
        return self.fpn(self.backbone(normalize(batch, self.pixel_mean, self.pixel_std)))

    @abstractmethod
    def detect_canvas(self, batch: Tensor, score_thresh: Tensor | float) -> Raw:
        """[B, 3, S, S] canvas -> (boxes [B, K, 4] XYXY canvas px, scores [B, K] decreasing with -1 where
        suppressed, labels [B, K] int64 1..C-1, mask maps [B, K, h, w] probabilities over the canvas)."""

    @abstractmethod
    def compute_losses(self, batch: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Training losses for a canvas batch and letterboxed targets (:func:`letterbox_targets`)."""

    # ---- inference: one tensor-only path for eager and export ---------------------------------
    def finish(self, raw: Raw, image_hw: Tensor, scale: Tensor, score_thresh: Tensor | float) -> Raw:
        """One image's ``detect_canvas`` outputs (batch dimension dropped) -> (boxes [K, 4] XYXY image
        px, scores [K], labels [K] int64, mask_lowres [K, M, M]), keeping ``score >= score_thresh``.
        ``image_hw`` is the int64 (H, W) of the image, ``scale`` its canvas/image scale."""
        boxes, scores, labels, maps = raw
        keep = torch.nonzero(scores >= score_thresh).flatten()  # already sorted by score
        limits = image_hw.to(boxes.device, boxes.dtype).flip(0).repeat(2)  # (w, h, w, h)
        out_boxes = torch.minimum((boxes[keep] / scale).clamp(min=0), limits)
        stride = self.input_size / maps.shape[-1]
        low = masks_in_boxes(maps[keep], out_boxes * scale, stride, self.mask_size or maps.shape[-1])
        return out_boxes, scores[keep], labels[keep].to(torch.int64), low

    def detect_image(self, image: Tensor, score_thresh: Tensor | float) -> Raw:
        """One [3, H, W] image -> (boxes, scores, labels, mask_lowres), see :meth:`finish`."""
        canvas, scale = letterbox_image(image, self.input_size)
        raw = self.detect_canvas(canvas[None], score_thresh)
        return self.finish(tuple(r[0] for r in raw), torch._shape_as_tensor(image)[-2:], scale, score_thresh)

    def forward_lowres(self, images: list[Tensor]) -> list[Detections]:
        validate_images(images)
        canvases, scales = zip(*(letterbox_image(img, self.input_size) for img in images), strict=True)
        raw = self.detect_canvas(torch.stack(canvases), self.score_thresh)
        out = []
        for i, image in enumerate(images):
            hw = torch.tensor(image.shape[-2:], device=image.device)
            boxes, scores, labels, low = self.finish(tuple(r[i] for r in raw), hw, scales[i],
                                                     self.score_thresh)
            out.append({"boxes": boxes, "labels": labels, "scores": scores, "mask_lowres": low})
        return out

    def export_graph(self) -> ExportGraph:
        return LetterboxExportGraph(self)

    def forward(self, images: list[Tensor], targets: list[dict[str, Any]] | None = None) -> Any:
        """Training: dict of losses. Eval: per image boxes, labels, scores and full-size ``masks``."""
        validate_images(images)
        if not self.training:
            return self.paste_full_size(images)
        validate_targets(images, targets, self.num_classes, need_masks=not self.box_supervision)
        if self.box_supervision:  # the masks are never read: filled boxes stand in for them
            targets = [{**t, "masks": boxes_to_masks(t["boxes"].float(), *img.shape[-2:])}
                       for t, img in zip(targets, images, strict=True)]
        canvases = [letterbox_image(img, self.input_size)[0] for img in images]
        return self.compute_losses(torch.stack(canvases), letterbox_targets(targets, images, self.input_size))


class LetterboxExportGraph(ExportGraph):
    """Export graph of a :class:`LetterboxModel`: :meth:`LetterboxModel.detect_image`, the very code
    eager inference runs per image."""

    def forward(self, image: Tensor, score_thresh: Tensor) -> Raw:
        return self.model.detect_image(image, score_thresh)


def letterbox_targets(targets: Any, images: list[Tensor], size: int) -> list[dict[str, Tensor]]:
    """Map targets onto the letterbox canvas of their images: boxes scaled; masks [N, size, size]
    float in {0, 1}; crowd instances dropped."""
    out = []
    for t, img in zip(targets, images, strict=True):
        nh, nw, s = letterbox_size(int(img.shape[-2]), int(img.shape[-1]), size)
        masks = t["masks"].float()
        canvas = masks.new_zeros(masks.shape[0], size, size)
        if masks.shape[0]:
            resized = F.interpolate(masks[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            canvas[:, :nh, :nw] = (resized >= 0.5).float()
        crowd = t.get("iscrowd")
        keep = torch.ones(masks.shape[0], dtype=torch.bool, device=masks.device)
        if crowd is not None and crowd.numel():
            keep = crowd == 0
        boxes = t["boxes"].float()[keep] * s
        out.append({"boxes": boxes, "labels": t["labels"][keep], "masks": canvas[keep]})
    return out


def build_letterbox_model(
    cls: type[LetterboxModel],
    *,
    num_classes: int,
    backbone: str,
    fpn_channels: int,
    class_specific: tuple[str, ...],
    backbone_weights: str | None = None,
    weights: str | None = None,
    **kwargs: Any,
) -> Any:
    """Build ``cls`` on trunk ``backbone`` (see :data:`instaseg.models.backbones.TRUNKS`) with a P3-P7
    pyramid of ``fpn_channels``. ``backbone_weights``: None, "imagenet" or a local file; ``weights``: a
    local full-model checkpoint (layers under ``class_specific`` are re-initialised when the number of
    classes differs)."""
    check_input_size(kwargs.get("input_size", 512))  # fail before building the backbone
    trunk = build_backbone(backbone, weights=backbone_weights)
    model = cls(trunk, PyramidP3P7(trunk.out_channels, fpn_channels), num_classes=num_classes, **kwargs)
    load_full_weights(model, weights, class_specific)
    return model
