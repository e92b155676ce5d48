"""Instance-segmentation models, all implementing one contract
(:class:`instaseg.models.protocol.InstanceSegmentationModel`):

- training: ``model(images: list[Tensor[3, H, W]], targets: list[dict]) -> dict[str, Tensor]`` of losses;
- eval: ``model.forward_lowres(images)`` -> per image ``boxes`` (Tensor[K, 4] XYXY input-image pixels),
  ``labels`` (Tensor[K] int64, 1..num_classes-1), ``scores`` (Tensor[K]) and ``mask_lowres``
  (Tensor[K, M, M] box-relative probabilities); ``model(images)`` gives the same with full-size
  ``masks`` (Tensor[K, 1, H, W]);
- export: ``model.export_graph()``; input size: ``model.input_spec``.

``num_classes`` counts the background class, as in torchvision. Importing this package registers the
built-in models (the model modules below import only the registry, never this package's names).
"""

from instaseg.models import (  # noqa: F401  (they register)
    click,
    dbscan_points,
    mask_rcnn,
    panoptic_fpn,
    pointgroup,
    simple_fpn,
    solov2,
    video_rcnn,
    yolact,
)
from instaseg.models.protocol import InputSpec, InstanceSegmentationModel
from instaseg.models.registry import (
    TASKS,
    get_model,
    get_model_builder,
    list_models,
    model_task,
    register_model,
)

__all__ = [
    "TASKS",
    "InputSpec",
    "InstanceSegmentationModel",
    "get_model",
    "get_model_builder",
    "list_models",
    "model_task",
    "register_model",
]
