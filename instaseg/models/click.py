"""A trainable click model (RITM-style): image crop + click disks + previous mask -> mask logits.

The network sees one square crop around the object (``crop_size`` x ``crop_size``): RGB, a disk map of
the positive clicks, one of the negative clicks and the previous mask. The click/mask maps are added
to the stem features of an EfficientNet-Lite0 trunk (RITM's "Conv1S" fusion keeps the pretrained RGB
path intact); a small top-down decoder predicts logits at stride 4, upsampled to the crop.

Crops are axis-aligned squares ``(x0, y0, side)`` in image pixels (they may leave the image: outside
is zero). :func:`crop_matrix` maps crop pixel centres to image pixel coordinates, so cropping and
pasting back are one ``cv2.warpAffine`` each.

Training (``model(images, targets)``, the engine's contract) simulates the user: per image one
random instance, a crop around it (or, sometimes, around the whole image: the first click of a
session is answered on the whole image, see :class:`instaseg.predict.interactive.ModelSegmenter`),
a first click, then 0..``max_train_clicks`` no-grad rounds that each add the protocol's next click on
the current error (:func:`instaseg.ops.clicks.next_click` picks the same point in the crop),
and a final round with the loss (BCE + soft IoU).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from instaseg.models.backbones import MultiScaleBackbone
from instaseg.models.registry import register_model

CropBox = tuple[float, float, float]
"""``(x0, y0, side)``: a square crop's top-left corner and side in image pixels."""


def crop_matrix(box: CropBox, size: int) -> np.ndarray:
    """``(2, 3)`` affine matrix mapping crop pixel ``(j, i)`` (of a ``size`` crop) to image ``(x, y)``,
    pixel centres aligned: the crop samples the square ``box`` evenly."""
    x0, y0, side = box
    a = side / size
    return np.array([[a, 0.0, x0 + 0.5 * a - 0.5], [0.0, a, y0 + 0.5 * a - 0.5]], dtype=np.float64)


def crop_image(image: np.ndarray, box: CropBox, size: int, *, nearest: bool = False) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``image`` (``(H, W[, C])``, any dtype cv2 warps) over ``box``;
    zero outside the image."""
    import cv2

    flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(image, crop_matrix(box, size), (size, size), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def paste_crop(values: np.ndarray, box: CropBox, height: int, width: int) -> np.ndarray:
    """Paste a ``(S, S)`` float map computed on crop ``box`` into an ``(height, width)`` image
    (bilinear; 0 outside the crop)."""
    import cv2

    size = values.shape[0]
    return cv2.warpAffine(values.astype(np.float32), crop_matrix(box, size), (width, height),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def square_around(x1: float, y1: float, x2: float, y2: float, *, expand: float = 1.4,
                  min_side: float = 24.0) -> CropBox:
    """A square crop centred on the XYXY box, its side ``expand`` times the longer box side (at least
    ``min_side``)."""
    side = max((x2 - x1) * expand, (y2 - y1) * expand, min_side)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return cx - side / 2, cy - side / 2, side


def whole_image_box(height: int, width: int) -> CropBox:
    """The square crop covering the whole image, centred."""
    side = float(max(height, width))
    return (width - side) / 2, (height - side) / 2, side


def to_crop_points(points: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Image ``(x, y)`` points ``(P, 2)`` in crop pixel coordinates (inverse of :func:`crop_matrix`)."""
    x0, y0, side = box
    a = side / size
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return np.stack([(pts[:, 0] + 0.5 - x0) / a - 0.5, (pts[:, 1] + 0.5 - y0) / a - 0.5], axis=1)


def click_disks(points: np.ndarray, labels: np.ndarray, size: int, radius: float) -> np.ndarray:
    """``(2, size, size)`` float32 maps: disks of ``radius`` around the positive (channel 0) and the
    negative (channel 1) crop-pixel points ``(P, 2)`` ``(x, y)``; points off the crop draw nothing."""
    maps = np.zeros((2, size, size), dtype=np.float32)
    if len(points) == 0:
        return maps
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    for (x, y), lab in zip(np.asarray(points, dtype=np.float32), np.asarray(labels), strict=True):
        ch = 0 if int(lab) == 1 else 1
        maps[ch] = np.maximum(maps[ch], ((xs - x) ** 2 + (ys - y) ** 2 <= radius * radius))
    return maps


class _FusedFrozenBN(FrozenBatchNorm2d):
    """FrozenBatchNorm2d as one fused ``batch_norm`` kernel (same buffers, same result): torchvision's
    Python version makes four passes over each feature map, ~10% of a CPU training step here."""

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                            self.eps)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


@dataclass
class _Sample:
    """One training crop: ``crop`` (3, S, S) float32, ``gt`` (S, S) bool, clicks so far (crop pixels),
    ``prev`` (S, S) bool previous mask, ``refine``: whether model rounds may add clicks (False for
    whole-image crops, which only ever answer a first click)."""

    crop: np.ndarray
    gt: np.ndarray
    clicks: list[tuple[int, int, bool]]
    prev: np.ndarray
    refine: bool


class ClickSegModel(nn.Module):
    """RITM-style click model on a crop (see the module docstring).

    Args:
        crop_size: side of the square crop the network sees.
        max_size: longest image side in training (the engine resizes training images to it).
        backbone_weights: None, ``"imagenet"`` (the EfficientNet-Lite0 file shipped offline) or a file.
        max_train_clicks: most no-grad click rounds before the loss round in training.
        whole_image_p: fraction of training crops that cover the whole image instead of the object.
        objects_per_image: training crops drawn from each image (distinct instances when it has
            enough): fewer images to decode per step.
        sim_p: fraction of object crops that get a simulated correction session.
        sim_clicks: most correction clicks in a simulated session.
        zoom_expand: range of the training crop's side over the simulated answer's box side, for
            objects no larger than the crop (the inference crop uses ``ModelSegmenter(expand=...)``,
            inside this range).
        zoom_expand_large: the range for objects of at least twice the crop's side (linear in
            between), as ``ModelSegmenter(expand_large=...)`` at inference: objects shrunk into the
            crop get tighter crops, small ones more context.
        head_lr_scale: learning-rate factor of the new layers over the pretrained trunk's.
        num_classes: accepted for the engine's contract; the model is class-agnostic.
    """

    task = "interactive"

    def __init__(self, *, crop_size: int = 160, max_size: int = 512, backbone_weights: Any = None,
                 max_train_clicks: int = 3, whole_image_p: float = 0.25, objects_per_image: int = 1,
                 sim_p: float = 0.5, sim_clicks: int = 10, zoom_expand: tuple[float, float] = (1.3, 2.0),
                 zoom_expand_large: tuple[float, float] = (1.1, 1.6),
                 head_lr_scale: float = 6.0, num_classes: int = 2) -> None:
        super().__init__()
        self.zoom_expand = (float(zoom_expand[0]), float(zoom_expand[1]))
        self.zoom_expand_large = (float(zoom_expand_large[0]), float(zoom_expand_large[1]))
        # The engine's optimizer gives these (randomly initialised) layers a larger learning rate than
        # the pretrained trunk: at one rate they were the bottleneck (loss 1.01 vs 0.40 after 150 steps).
        self.lr_scales = {prefix: float(head_lr_scale) for prefix in ("maps_in.", "lat.", "head.")}
        self.crop_size, self.max_size = int(crop_size), int(max_size)
        self.max_train_clicks, self.whole_image_p = int(max_train_clicks), float(whole_image_p)
        self.objects_per_image = int(objects_per_image)
        self.sim_p, self.sim_clicks = float(sim_p), int(sim_clicks)
        self.num_classes = num_classes
        self.radius = max(3.0, crop_size / 32)
        trunk = MultiScaleBackbone("efficientnet_lite0", weights=backbone_weights)
        for module in trunk.modules():
            if type(module) is FrozenBatchNorm2d:
                module.__class__ = _FusedFrozenBN
        self.net = trunk.stem  # EfficientNetLite0: _conv_stem, _bn0, _blocks, taps
        self.register_buffer("mean", torch.tensor(trunk.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(trunk.pixel_std).view(1, 3, 1, 1), persistent=False)
        # Click/mask maps enter after the stem conv (32 channels, stride 2); zero-initialised so the
        # pretrained trunk starts unchanged.
        self.maps_in = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(16, 32, 3, 1, 1))
        nn.init.zeros_(self.maps_in[2].weight)
        nn.init.zeros_(self.maps_in[2].bias)
        self.lat = nn.ModuleList([nn.Conv2d(c, 64, 1) for c in (24, 40, 112, 320)])
        self.head = nn.Sequential(_conv(64 + 3, 48), _conv(48, 48), nn.Conv2d(48, 1, 1))
        self.stride4_block = 2  # index of the last 24-channel (stride 4) block of Lite0

    def forward_crops(self, crops: Tensor, maps: Tensor) -> Tensor:
        """Mask logits ``(B, 1, S, S)`` for crops ``(B, 3, S, S)`` RGB in [0, 1] and maps ``(B, 3, S,
        S)`` (positive disks, negative disks, previous mask in [0, 1])."""
        net = self.net
        x = net._bn0(net._conv_stem((crops - self.mean) / self.std)) + self.maps_in(maps)
        x = F.relu6(x)
        feats = []
        for i, block in enumerate(net._blocks):
            x = block(x)
            if i == self.stride4_block or i in net.taps:
                feats.append(x)
        y = self.lat[3](feats[3])
        for lvl in (2, 1, 0):
            lat = self.lat[lvl](feats[lvl])
            y = lat + F.interpolate(y, size=lat.shape[-2:], mode="bilinear", align_corners=False)
        small = F.interpolate(maps, size=y.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.head(torch.cat([y, small], dim=1))
        return F.interpolate(logits, size=crops.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, images: list[Tensor], targets: list[dict[str, Any]] | None = None) -> dict[str, Tensor]:
        """Training: simulated click sessions on one random instance per image -> ``{"loss_mask",
        "loss_iou"}``. Only training is supported here; inference goes through :meth:`forward_crops`."""
        if targets is None:
            raise ValueError("ClickSegModel.forward is the training path; use forward_crops to predict")
        samples = [s for im, t in zip(images, targets, strict=True) for s in self._sample(im, t)]
        if not samples:  # no usable instance in the batch: a zero loss keeps the step valid
            zero = sum(p.sum() * 0.0 for p in self.parameters())
            return {"loss_mask": zero, "loss_iou": zero}
        device = images[0].device
        crops = torch.from_numpy(np.stack([s.crop for s in samples])).to(device)
        gts = np.stack([s.gt for s in samples])
        clicks = [s.clicks for s in samples]
        prev = np.stack([s.prev for s in samples]).astype(np.float32)
        rounds = random.randint(0, self.max_train_clicks)
        refine = [b for b, s in enumerate(samples) if s.refine]
        if rounds and refine:
            from instaseg.ops.clicks import next_click

            was = self.training
            self.eval()  # BatchNorm statistics from the real rounds only
            with torch.no_grad():
                for _ in range(rounds):
                    maps = self._maps([clicks[b] for b in refine], prev[refine], device)
                    # binarised as the protocol's previous answer is at inference
                    pred = (self.forward_crops(crops[refine], maps)[:, 0] > 0).cpu().numpy()
                    for j, b in enumerate(refine):
                        prev[b] = pred[j]
                        c = next_click(gts[b], pred[j])
                        if c is not None:
                            clicks[b].append(c)
            self.train(was)
        logits = self.forward_crops(crops, self._maps(clicks, prev, device))[:, 0]
        target = torch.from_numpy(gts.astype(np.float32)).to(device)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        prob = torch.sigmoid(logits)
        inter = (prob * target).flatten(1).sum(1)
        union = (prob + target - prob * target).flatten(1).sum(1)
        return {"loss_mask": bce, "loss_iou": (1 - (inter + 1) / (union + 1)).mean()}

    def _maps(self, clicks: list[list[tuple[int, int, bool]]], prev: np.ndarray,
              device: torch.device) -> Tensor:
        out = []
        for b, cl in enumerate(clicks):
            pts = np.array([[c[0], c[1]] for c in cl], dtype=np.float32)
            labels = np.array([1 if c[2] else 0 for c in cl])
            disks = click_disks(pts, labels, self.crop_size, self.radius)
            out.append(np.concatenate([disks, prev[b][None].astype(np.float32)], axis=0))
        return torch.from_numpy(np.stack(out)).to(device)

    def _sample(self, image: Tensor, target: dict[str, Any]) -> list[_Sample]:
        """Up to ``objects_per_image`` training samples from one image (none without a usable
        instance)."""
        masks = target["masks"]
        crowd = target.get("iscrowd")
        keep = [i for i in range(masks.shape[0])
                if int(masks[i].sum()) >= 16 and (crowd is None or not int(crowd[i]))]
        if not keep:
            return []
        img = image.detach().cpu().permute(1, 2, 0).numpy().astype(np.float32)
        chosen = random.sample(keep, min(len(keep), self.objects_per_image))
        chosen += random.choices(keep, k=self.objects_per_image - len(chosen))
        out = [self._one(img, masks[i].cpu().numpy().astype(np.uint8)) for i in chosen]
        return [s for s in out if s is not None]

    def _one(self, img: np.ndarray, mask: np.ndarray) -> _Sample | None:
        """One crop of ``img`` ``(H, W, 3)`` for instance ``mask`` ``(H, W)`` uint8, with clicks.

        Object crops are chosen as at inference: the session (first click, maybe a simulated
        correction session) is simulated on a wide working crop around the object, then the crop is
        the square around the previous answer and the positive clicks (``zoom_expand`` times its
        size), where the answer is a perturbed mask (no previous mask is given for a first click).
        So the model also sees objects cut by the crop, too large or too small in it, as it will."""
        from instaseg.ops.click_sim import perturb_mask, simulate_session

        h, w = mask.shape
        size = self.crop_size
        if random.random() < self.whole_image_p:
            box = whole_image_box(h, w)
            gt = crop_image(mask, box, size, nearest=True).astype(bool)
            if not gt.any():
                return None
            crop = crop_image(img, box, size).transpose(2, 0, 1)
            return _Sample(np.ascontiguousarray(crop), gt, [_user_click(gt)], np.zeros_like(gt), False)
        ys, xs = np.nonzero(mask)
        work = square_around(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, expand=2.5, min_side=24)
        wsize = 2 * size
        wgt = crop_image(mask, work, wsize, nearest=True).astype(bool)
        click = _user_click(wgt)
        if self.sim_clicks > 0 and random.random() < self.sim_p:
            clicks, prev = simulate_session(wgt, click, random.randint(1, self.sim_clicks), random)
            answer = prev
        else:
            clicks, prev, answer = [click], np.zeros_like(wgt), perturb_mask(wgt, random)
        pos = np.array([c[:2] for c in clicks if c[2]], dtype=np.float64).reshape(-1, 2)
        ay, ax = np.nonzero(answer)
        bx, by = np.concatenate([ax, pos[:, 0]]), np.concatenate([ay, pos[:, 1]])
        a = work[2] / wsize  # working-crop pixels -> image pixels (corner convention)
        # the object's size in image pixels picks the zoom range, as ModelSegmenter.expand_for does
        t = min(1.0, max(0.0, max(bx.max() - bx.min(), by.max() - by.min()) * a / size - 1.0))
        lo, hi = (z + t * (zl - z) for z, zl in zip(self.zoom_expand, self.zoom_expand_large, strict=True))
        zb = square_around(bx.min(), by.min(), bx.max() + 1, by.max() + 1, expand=random.uniform(lo, hi),
                           min_side=wsize * 0.1)
        box = (work[0] + zb[0] * a, work[1] + zb[1] * a, zb[2] * a)
        gt = crop_image(mask, box, size, nearest=True).astype(bool)
        if not gt.any():
            return None
        crop = crop_image(img, box, size).transpose(2, 0, 1)
        m = crop_matrix(work, wsize)
        pts = np.array([c[:2] for c in clicks], dtype=np.float64) @ m[:, :2].T + m[:, 2]
        pts = np.rint(to_crop_points(pts, box, size)).astype(int)
        clicks = [(int(x), int(y), c[2]) for (x, y), c in zip(pts, clicks, strict=True)]
        if prev.any():  # working crop -> image -> this crop
            prev = crop_image(paste_crop(prev.astype(np.float32), work, h, w), box, size) > 0.5
        else:
            prev = np.zeros_like(gt)
        return _Sample(np.ascontiguousarray(crop), gt, clicks, prev, True)


def _user_click(gt: np.ndarray) -> tuple[int, int, bool]:
    """A first click on ``gt`` (non-empty bool): half the time the protocol's (the interior point
    farthest from the boundary), else a random interior point away from the edge (users do not all
    click the centre)."""
    import cv2

    from instaseg.ops.clicks import first_click

    if random.random() < 0.5:
        return first_click(gt)
    dist = cv2.distanceTransform(np.pad(gt.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    ys, xs = np.nonzero(dist >= 0.4 * dist.max())
    j = random.randrange(len(xs))
    return int(xs[j]), int(ys[j]), True


class ClickCropGraph(nn.Module):
    """The exported graph: ``(crops [B, 3, S, S] in [0, 1], maps [B, 3, S, S]) -> probabilities
    [B, 1, S, S]``."""

    def __init__(self, model: ClickSegModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, crops: Tensor, maps: Tensor) -> Tensor:
        return torch.sigmoid(self.model.forward_crops(crops, maps))


@register_model("click_lite0", task="interactive")
def click_lite0(*, crop_size: int = 160, max_size: int = 512, backbone_weights: Any = None,
                max_train_clicks: int = 3, whole_image_p: float = 0.25, objects_per_image: int = 1,
                sim_p: float = 0.5, sim_clicks: int = 10, zoom_expand: tuple[float, float] = (1.3, 2.0),
                zoom_expand_large: tuple[float, float] = (1.1, 1.6),
                head_lr_scale: float = 6.0, num_classes: int = 2) -> ClickSegModel:
    """Click model (RITM-style) on an EfficientNet-Lite0 trunk: crop + clicks + previous mask -> mask."""
    if crop_size < 32 or crop_size % 32:
        from instaseg.errors import ConfigError

        raise ConfigError(f"model.kwargs.crop_size must be a multiple of 32 (>= 32), got {crop_size}")
    return ClickSegModel(crop_size=crop_size, max_size=max_size, backbone_weights=backbone_weights,
                         max_train_clicks=max_train_clicks, whole_image_p=whole_image_p,
                         objects_per_image=objects_per_image, sim_p=sim_p, sim_clicks=sim_clicks,
                         zoom_expand=tuple(zoom_expand), zoom_expand_large=tuple(zoom_expand_large),
                         head_lr_scale=head_lr_scale, num_classes=num_classes)


__all__ = ["ClickCropGraph", "ClickSegModel", "click_lite0", "crop_image", "paste_crop", "square_around",
           "whole_image_box", "to_crop_points", "click_disks", "crop_matrix"]
