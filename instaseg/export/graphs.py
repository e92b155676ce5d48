"""Export graphs: the one exportable view of every model, and the registry that finds it.

Every exported model (ONNX or TorchScript) is a trace of an *export graph*: an ``nn.Module`` with

``forward(image: Tensor[3, H, W] float RGB in [0, 1], score_threshold: Tensor[] float)
-> (boxes [K, 4] XYXY input-image pixels, scores [K], labels [K] int64, masks [K, h, w] float)``

- normalisation and resizing happen inside the graph, so callers feed raw RGB in [0, 1] of any size;
- ``score_threshold`` is a graph input: detections scoring at or below it are dropped *inside* the
  graph, so the (costly) mask head only runs on what is kept, and a threshold of 1 exercises the
  "no detections" path;
- the masks stay at the model's native low resolution and are fixed-size per detection; pasting them
  into the image is post-processing shared with the PyTorch path (:mod:`instaseg.export.postprocess`).
  The module's ``mask_kind`` says what they cover:

  * ``"box"``: ``[K, M, M]`` probabilities relative to each box (Mask R-CNN's RoI masks);
  * ``"image"``: ``[K, h, w]`` probabilities covering the whole input image at a lower resolution
    (one-stage models such as YOLACT); they are resized bilinearly to ``H x W``.

The module also carries ``default_score_threshold`` (the model's own) and ``preprocessing`` (a JSON-able
dict describing what the graph does to its input, stored in the exported file's metadata).

How a model gets its export graph (:func:`export_graph`), first match wins:

1. the model defines ``export_graph() -> nn.Module`` (new models plug in this way);
2. an adapter registered with :func:`register_export_graph` for the model's class or a base class;
3. built in: any torchvision ``GeneralizedRCNN`` with a mask head (every Mask R-CNN variant here),
   and any letterbox model with ``input_size``, ``score_threshold`` and the fixed-shape
   ``forward_tensor(batch [B, 3, S, S]) -> (boxes, scores, labels, canvas masks)`` of
   :mod:`instaseg.models.rt_common` (YOLACT, SOLOv2).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from instaseg.errors import ConfigError

MASK_KINDS = ("box", "image")

_GRAPHS: dict[type, Callable[[nn.Module], nn.Module]] = {}


def register_export_graph(model_class: type) -> Callable[[Callable[[nn.Module], nn.Module]], Any]:
    """Decorator registering ``fn(model) -> export graph`` for instances of ``model_class`` (and its
    subclasses). Raises ValueError if the class already has one."""

    def wrapper(fn: Callable[[nn.Module], nn.Module]) -> Callable[[nn.Module], nn.Module]:
        if model_class in _GRAPHS:
            raise ValueError(f"an export graph is already registered for {model_class.__name__}")
        _GRAPHS[model_class] = fn
        return fn

    return wrapper


def export_graph(model: nn.Module) -> nn.Module:
    """The export graph of ``model`` (see the module docstring), in eval mode.

    Raises ConfigError naming the model class when it has no export path."""
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    own = getattr(model, "export_graph", None)
    if callable(own):
        graph = own()
    else:
        graph = None
        for klass in type(model).__mro__:
            if klass in _GRAPHS:
                graph = _GRAPHS[klass](model)
                break
        if graph is None and isinstance(model, GeneralizedRCNN):
            graph = _rcnn_graph(model)
        letterbox = callable(getattr(model, "forward_tensor", None)) and hasattr(model, "input_size")
        if graph is None and letterbox:
            graph = LetterboxExportGraph(model)
        if graph is None:
            raise ConfigError(
                f"model {type(model).__name__} cannot be exported: give it an export_graph() method or "
                "register one with instaseg.export.graphs.register_export_graph"
            )
    kind = getattr(graph, "mask_kind", None)
    if kind not in MASK_KINDS:
        raise ConfigError(
            f"export graph of {type(model).__name__} has mask_kind {kind!r}, not one of {MASK_KINDS}"
        )
    return graph.eval()


class RCNNExportGraph(nn.Module):
    """Export graph of a torchvision ``GeneralizedRCNN`` with a mask head (every Mask R-CNN variant).

    Runs transform -> backbone -> RPN -> RoI heads exactly as ``forward`` does (torchvision takes its
    ONNX-friendly code paths while tracing: symbolic resize and padding), then rescales the boxes to
    the input size and stops before ``paste_masks_in_image``: masks are the ``[K, 28, 28]`` RoI
    probabilities."""

    mask_kind = "box"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.default_score_threshold = float(model.roi_heads.score_thresh)
        t = model.transform
        self.preprocessing = {
            "normalize_mean": [float(v) for v in t.image_mean],
            "normalize_std": [float(v) for v in t.image_std],
            "resize": f"shorter side to {int(t.min_size[-1])}, longer side at most {int(t.max_size)}",
            "pad_to_multiple": int(t.size_divisible),
            "default_size": [int(t.min_size[-1]), int(t.max_size)],
        }

    def forward(self, image: Tensor, score_threshold: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from torchvision.models.detection.transform import resize_boxes

        m = self.model
        height, width = image.shape[-2:]
        if m.transform.fixed_size is None:
            # torchvision's traced resize computes the output size in float32, eager PyTorch in
            # double: e.g. 479 px -> 128 vs 127, a different image. Resize as eager does instead.
            m.transform.resize = self._resize
        try:
            image_list, _ = m.transform([image])
        finally:
            m.transform.__dict__.pop("resize", None)
        features = m.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, _ = m.rpn(image_list, features)
        # roi_heads compares ``scores > self.score_thresh``: a tensor here makes it a graph input.
        saved = m.roi_heads.score_thresh
        m.roi_heads.score_thresh = score_threshold
        try:
            detections, _ = m.roi_heads(features, proposals, image_list.image_sizes)
        finally:
            m.roi_heads.score_thresh = saved
        det = detections[0]
        boxes = resize_boxes(det["boxes"], list(image_list.image_sizes[0]), [height, width])
        return boxes, det["scores"], det["labels"], det["masks"][:, 0]

    def _resize(self, image: Tensor, target: Any = None) -> tuple[Tensor, Any]:
        t = self.model.transform
        return resize_like_eager(image, int(t.min_size[-1]), int(t.max_size)), target


def resize_like_eager(image: Tensor, min_size: int, max_size: int) -> Tensor:
    """GeneralizedRCNNTransform.resize of a [3, H, W] image in eval mode with eager PyTorch's sizes:
    ``floor(side * min(min_size / short, max_size / long))`` in double precision, as tensor ops so the
    size stays dynamic in a trace. (torchvision's traced resize computes the size in float32: e.g.
    479 px -> 128 vs eager's 127, a different image.)"""
    import torch.nn.functional as F

    hw = torch._shape_as_tensor(image)[-2:].to(torch.float64)
    # double like eager; the ONNX exporter casts to float32 around Python or 0-d constants
    limits = torch.tensor([float(min_size), float(max_size)], dtype=torch.float64)
    scale = (limits / torch.stack([hw.min(), hw.max()])).min()  # [2] / [2]: no scalar promotion
    size = torch.floor(hw * scale).to(torch.int64)
    return F.interpolate(image[None], size=(size[0], size[1]), mode="bilinear", align_corners=False)[0]


class LetterboxExportGraph(nn.Module):
    """Export graph of a one-stage letterbox model (``forward_tensor`` on an ``S x S`` canvas).

    Letterboxes inside the graph exactly as :func:`instaseg.models.rt_common.letterbox` (longer side
    to ``S``, rounded; bilinear; zero padding bottom/right), runs ``forward_tensor``, keeps detections
    scoring above the threshold, maps boxes back to the image and crops the canvas masks to the image
    region, as :func:`instaseg.models.rt_common.postprocess` does: masks are ``[K, h, w]`` covering the
    whole image (``mask_kind`` "image"), resized to ``H x W`` afterwards. Sizes are computed with
    tensor ops so they stay dynamic in the trace."""

    mask_kind = "image"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.size = int(model.input_size)
        self.default_score_threshold = float(model.score_threshold)
        from instaseg.models.rt_common import IMAGENET_MEAN, IMAGENET_STD

        self.preprocessing = {
            "normalize_mean": list(IMAGENET_MEAN),
            "normalize_std": list(IMAGENET_STD),
            "resize": f"longer side to {self.size}, zero-padded bottom/right to {self.size}x{self.size}",
            "default_size": [self.size, self.size],
        }

    def forward(self, image: Tensor, score_threshold: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        import torch.nn.functional as F

        size = self.size
        hw = torch._shape_as_tensor(image)[-2:]
        hw_f = hw.to(torch.float32)
        hw_d = hw.to(torch.float64)  # sizes in double like the eager Python code; [1]-shaped constants
        scale_d = torch.tensor([float(size)], dtype=torch.float64) / hw_d.max().reshape(1)
        new_hw = torch.round(hw_d * scale_d).clamp(min=1).to(torch.int64)
        scale = scale_d.to(torch.float32)[0]  # letterbox's float32 ``scales``
        resized = F.interpolate(image[None], size=(new_hw[0], new_hw[1]), mode="bilinear",
                                align_corners=False)
        pad = size - new_hw
        canvas = F.pad(resized, (0, pad[1], 0, pad[0]))
        boxes, scores, labels, masks = self.model.forward_tensor(canvas)
        keep = torch.nonzero(scores[0] > score_threshold).flatten()  # already sorted by score
        limits = hw_f.flip(0).repeat(2)  # (w, h, w, h)
        out_boxes = torch.minimum((boxes[0][keep] / scale).clamp(min=0), limits)
        mh, mw = masks.shape[-2:]
        cells = torch.tensor([mh / size, mw / size], dtype=torch.float64)
        crop = torch.round(hw_d * scale.to(torch.float64) * cells)
        crop = torch.minimum(crop.clamp(min=1), torch.tensor([float(mh), float(mw)], dtype=torch.float64))
        crop = crop.to(torch.int64)
        m = masks[0][keep]
        m = m.index_select(1, torch.arange(crop[0])).index_select(2, torch.arange(crop[1]))
        return out_boxes, scores[0][keep], labels[0][keep].to(torch.int64), m


def _rcnn_graph(model: nn.Module) -> nn.Module:
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is None or getattr(roi_heads, "mask_predictor", None) is None:
        raise ConfigError(f"model {type(model).__name__} has no mask head; only instance models export")
    return RCNNExportGraph(model)


def trace_inputs(image_size: tuple[int, int], seed: int = 0) -> tuple[Tensor, Tensor]:
    """A deterministic example input (random RGB image of ``image_size`` (H, W), threshold 0)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(3, *image_size, generator=gen)
    return image, torch.tensor(0.0)
