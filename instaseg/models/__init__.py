"""Instance-segmentation models. Every model follows torchvision's detection contract:

- training: ``model(images: list[Tensor[3, H, W]], targets: list[dict]) -> dict[str, Tensor]`` of losses;
- eval: ``model(images) -> list[dict]`` with ``boxes`` (Tensor[K, 4] XYXY pixels of the input image),
  ``labels`` (Tensor[K] int64, 1..num_classes-1), ``scores`` (Tensor[K]) and ``masks``
  (Tensor[K, 1, H, W] float probabilities in [0, 1], thresholded at 0.5 downstream).

``num_classes`` counts the background class, as in torchvision.
"""

from instaseg.models.registry import get_model, get_model_builder, list_models, register_model

__all__ = ["get_model", "get_model_builder", "list_models", "register_model"]
