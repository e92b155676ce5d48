"""TorchScript export: a trace of the same export graph the ONNX export uses (:mod:`.graphs`).

The file is a ``torch.jit`` archive with the metadata (same keys as the ONNX ``metadata_props``) in the
extra file ``instaseg.json``. Loading it needs torch and torchvision (for the ``torchvision::nms`` and
``roi_align`` ops), but not instaseg's model code. Tracing follows torchvision's ONNX-friendly paths,
which keep the image height and width dynamic.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torchvision  # noqa: F401  (registers the torchvision:: ops the loaded graphs call)
from torch import nn

from instaseg.export.graphs import export_graph, trace_inputs
from instaseg.export.onnx_export import (
    META_PREFIX,
    ExportResult,
    build_metadata,
    check_output_path,
    compare_detections,
    default_image_size,
    other_size,
)
from instaseg.fileio import atomic_path
from instaseg.predict.runtime import EXTRA_FILE, load_torchscript_model


def export_torchscript(
    model: nn.Module,
    output: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    image_size: tuple[int, int] | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> ExportResult:
    """Trace ``model``'s export graph and save it atomically at ``output`` (see the module docstring).
    With ``verify``, the saved file is reloaded and compared with the eager graph on the transposed size."""
    output = check_output_path(output, overwrite)
    graph = export_graph(model.cpu().eval())
    size = tuple(image_size) if image_size else default_image_size(graph)
    metadata = build_metadata(graph, dict(meta or {}), opset=0)
    metadata.pop(META_PREFIX + "opset")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, trace_inputs(size), check_trace=False)
    checks = []
    with atomic_path(output) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(traced, str(tmp), _extra_files={EXTRA_FILE: json.dumps(metadata)})
        if verify:
            checks = _verify(tmp, graph, other_size(size))
    return ExportResult(output, output.stat().st_size, 0, metadata, checks)


@torch.no_grad()
def _verify(path: Path, graph: nn.Module, size: tuple[int, int]) -> list[dict[str, Any]]:
    loaded, _ = load_torchscript_model(path)
    image, thr = trace_inputs(tuple(size), seed=1)
    thr = torch.tensor(float(graph.default_score_thresh))
    ref = graph(image, thr)
    got = loaded.module(image, thr)
    check: dict[str, Any] = {"size": list(size), "torch": len(ref[0]), "torchscript": len(got[0])}
    check.update(compare_detections([t.numpy() for t in ref], [t.numpy() for t in got]))
    return [check]
