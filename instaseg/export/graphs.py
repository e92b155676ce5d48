"""Export graphs: every exported model (ONNX or TorchScript) is a trace of its model's export graph.

A model implementing the contract (:class:`instaseg.models.protocol.InstanceSegmentationModel`)
provides its own graph with ``model.export_graph()`` (an :class:`~instaseg.models.protocol.ExportGraph`
that lives with the model and runs the model's own inference code):

``forward(image: Tensor[3, H, W] float RGB in [0, 1], score_thresh: Tensor[] float)
-> (boxes [K, 4] XYXY input-image pixels, scores [K], labels [K] int64, masks [K, M, M] float)``

- normalisation and resizing happen inside the graph, so callers feed raw RGB in [0, 1] of any size;
- ``score_thresh`` is a graph input: detections scoring below it are dropped *inside* the graph, so
  the (costly) mask head only runs on what is kept, and a threshold above 1 gives "no detections";
- masks are box-relative probabilities (``mask_kind`` "box"), pasted into the image by
  :mod:`instaseg.structures.paste` (or :func:`instaseg.predict.runtime.raw_to_detections`), as for the
  PyTorch model.

The graph also carries ``default_score_thresh`` (the model's own) and ``preprocessing`` (a JSON-able
description of what it does to its input, from ``model.input_spec``), stored in the exported file.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from instaseg.errors import ConfigError
from instaseg.models.protocol import ExportGraph, InstanceSegmentationModel


def export_graph(model: nn.Module) -> ExportGraph:
    """``model.export_graph()`` in eval mode; ConfigError naming the class for a model without the
    contract."""
    if not isinstance(model, InstanceSegmentationModel):
        raise ConfigError(
            f"model {type(model).__name__} cannot be exported: it does not implement "
            "instaseg.models.protocol.InstanceSegmentationModel (export_graph)"
        )
    graph = model.export_graph()
    if graph.mask_kind != "box":  # "image" (whole-image masks) only in files of earlier exports
        raise ConfigError(f"export graph of {type(model).__name__} has mask_kind {graph.mask_kind!r}, "
                          "not 'box'")
    return graph.eval()


def trace_inputs(image_size: tuple[int, int], seed: int = 0) -> tuple[Tensor, Tensor]:
    """A deterministic example input (random RGB image of ``image_size`` (H, W), threshold 0)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(3, *image_size, generator=gen)
    return image, torch.tensor(0.0)
