"""The model contract: what every registered instaseg model implements.

:class:`InstanceSegmentationModel` is an abstract ``nn.Module``. A model subclasses it (Mask R-CNN
variants subclass torchvision's ``MaskRCNN`` and it) and implements:

- **training** ``forward(images, targets) -> dict[str, Tensor]`` of scalar losses. ``images`` is a list
  of float Tensor[3, H, W] RGB in [0, 1] (normalisation happens inside), ``targets`` one dict per image
  with ``boxes`` Tensor[N, 4] XYXY pixels, ``labels`` Tensor[N] int64 in 1..num_classes-1 and ``masks``
  Tensor[N, H, W] (see :mod:`instaseg.data.base`);
- **inference, cheap path** :meth:`forward_lowres` ``(images) -> list[dict]``, per image ``boxes``
  Tensor[K, 4] XYXY input-image pixels, ``labels`` Tensor[K] int64, ``scores`` Tensor[K] (decreasing,
  all ``>= score_thresh``) and ``mask_lowres`` Tensor[K, M, M] probabilities relative to each box. No
  full-image mask is built: memory is ``K x M x M``, whatever the image size;
  :mod:`instaseg.structures.paste` pastes them (:func:`instaseg.ops.lowres.lowres_inference` is the one entry
  point callers use);
- **inference, torchvision contract** ``forward(images)`` in eval mode: the same detections with
  ``masks`` Tensor[K, 1, H, W] probabilities pasted into the image (:meth:`paste_full_size`: the
  predictor's pixel-centre sampling; for evaluation code that wants dense masks);
- **export** :meth:`export_graph`: a tensor-only module ``(image [3, H, W], score_thresh []) -> (boxes
  [K, 4], scores [K], labels [K] int64, masks [K, M, M] box-relative)`` that runs the model's own
  inference code, for ONNX/TorchScript (see :class:`ExportGraph`);
- **input size** :attr:`input_spec`: how images are resized and normalised inside the model.

``score_thresh`` is a plain attribute: detections scoring below it are dropped (``score >= score_thresh``
is kept), in eager inference and as the default of an exported graph.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from instaseg.ops.masks import paste_in_image

Detections = dict[str, Tensor]


@dataclass(frozen=True)
class InputSpec:
    """How a model resizes and normalises its input.

    Either ``min_size``/``max_size`` (shorter side resized to ``min_size``, longer side at most
    ``max_size``; padded to a multiple of ``size_divisible``) or ``fixed_size`` (letterbox: longer side
    to ``fixed_size``, zero-padded bottom/right to a square canvas). ``mean``/``std`` normalise RGB in
    [0, 1].
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    min_size: int | None = None
    max_size: int | None = None
    fixed_size: int | None = None
    size_divisible: int = 32

    def __post_init__(self) -> None:
        if (self.fixed_size is None) == (self.min_size is None or self.max_size is None):
            raise ValueError("InputSpec needs either min_size and max_size, or fixed_size")

    @classmethod
    def from_transform(cls, transform: Any) -> InputSpec:
        """The spec of a torchvision ``GeneralizedRCNNTransform`` (its eval-mode resize)."""
        t = transform
        return cls(tuple(t.image_mean), tuple(t.image_std), min_size=int(t.min_size[-1]),
                   max_size=int(t.max_size), size_divisible=int(t.size_divisible))

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (stored in exported files' metadata as ``preprocessing``)."""
        out: dict[str, Any] = {"normalize_mean": [float(v) for v in self.mean],
                               "normalize_std": [float(v) for v in self.std]}
        if self.fixed_size is not None:
            s = self.fixed_size
            out.update(resize=f"longer side to {s}, zero-padded bottom/right to {s}x{s}", default_size=[s, s])
        else:
            out.update(resize=f"shorter side to {self.min_size}, longer side at most {self.max_size}",
                       pad_to_multiple=self.size_divisible, default_size=[self.min_size, self.max_size])
        return out


class ExportGraph(nn.Module):
    """Base of every model's export graph (see the module docstring for the signature).

    Subclasses set ``self.model`` and implement ``forward(image, score_thresh)``; ``mask_kind`` is
    ``"box"``: masks are ``[K, M, M]`` probabilities relative to each box.
    """

    mask_kind = "box"

    def __init__(self, model: InstanceSegmentationModel) -> None:
        super().__init__()
        self.model = model

    @property
    def default_score_thresh(self) -> float:
        return float(self.model.score_thresh)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.model.input_spec.describe()


class InstanceSegmentationModel(nn.Module, ABC):
    """The contract every registered model implements (see the module docstring)."""

    num_classes: int
    score_thresh: float

    @property
    @abstractmethod
    def input_spec(self) -> InputSpec:
        """How the model resizes and normalises its input images."""

    @abstractmethod
    def forward_lowres(self, images: list[Tensor]) -> list[Detections]:
        """Eval-mode detections with box-relative ``mask_lowres`` [K, M, M] (no full-size masks)."""

    @abstractmethod
    def export_graph(self) -> ExportGraph:
        """The tensor-only module exported to ONNX/TorchScript."""

    def paste_full_size(self, images: list[Tensor]) -> list[Detections]:
        """:meth:`forward_lowres` with ``masks`` [K, 1, H, W] pasted into each image by
        :func:`instaseg.ops.masks.paste_in_image` (memory ``K x H x W`` floats per image: for callers
        that need dense masks)."""
        out = []
        for image, det in zip(images, self.forward_lowres(images), strict=True):
            h, w = int(image.shape[-2]), int(image.shape[-1])
            det["masks"] = paste_in_image(det.pop("mask_lowres"), det["boxes"], h, w)[:, None]
            out.append(det)
        return out
