"""Export a model to ONNX through its export graph (:mod:`instaseg.export.graphs`).

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The dynamo exporter
(torch 2.14) fails on Mask R-CNN's data-dependent shapes (``batched_nms`` branches on the number of
boxes, a guard on an unbacked size), while tracing follows torchvision's ONNX code paths and keeps the
image height and width dynamic. Opset: 17 by default (16 is the lowest accepted: it is the first
with RoiAlign's ``coordinate_transformation_mode``, which torchvision uses for ``aligned=True``).

The file is one self-contained ``.onnx`` (no external data); its ``metadata_props`` hold, as strings
(JSON where structured), under the ``instaseg.`` prefix: ``format_version``, ``version`` (instaseg),
``model_name``, ``model_spec``, ``class_names``, ``category_ids``, ``mask_kind``, ``mask_thresh``,
``score_thresh``, ``preprocessing``, ``inputs``, ``outputs``, ``opset``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instaseg.errors import ConfigError
from instaseg.export.graphs import export_graph, trace_inputs
from instaseg.fileio import atomic_path
from instaseg.predict.runtime import (
    FORMAT_VERSION,
    INPUT_NAMES,
    MASK_THRESHOLD,
    META_PREFIX,
    OUTPUT_NAMES,
    PANOPTIC_OUTPUT_NAMES,
)

DEFAULT_OPSET = 17
MIN_OPSET = 16
MAX_OPSET = 20

INPUTS_DOC = {
    "image": "float32 [3, H, W] RGB in [0, 1], any H and W (normalisation and resizing are in the graph)",
    "score_thresh": "float32 scalar []: detections scoring below it are dropped (score >= it is kept)",
}
OUTPUTS_DOC = {
    "boxes": "float32 [K, 4] XYXY pixels of the input image",
    "scores": "float32 [K], sorted decreasing",
    "labels": "int64 [K], 1..C-1 (index into class_names)",
    "masks": "float32 [K, M, M] probabilities relative to each box (mask_kind 'box': paste into the box); "
    "foreground where >= mask_thresh",
}
SEM_SEG_DOC = ("int64 [H, W] (panoptic models only): semantic argmax at the input size, 0 = things, "
               "i = panoptic.stuff_category_ids[i - 1]; fuse with instaseg.ops.panoptic_fusion")


def _is_panoptic(graph: nn.Module) -> bool:
    return bool(getattr(graph, "panoptic", False))


@dataclass
class ExportResult:
    """What an export wrote: the file, its size and the self-check against PyTorch."""

    path: Path
    size_bytes: int
    opset: int
    metadata: dict[str, str]
    checks: list[dict[str, Any]] = field(default_factory=list)


def default_image_size(graph: nn.Module) -> tuple[int, int]:
    """A sample (H, W) at the model's default resolution (4:3 landscape within its max size)."""
    size = (getattr(graph, "preprocessing", {}) or {}).get("default_size") or [512, 512]
    short, long = int(size[0]), int(size[-1])
    return short, max(short, min(long, round(short * 4 / 3)))


def other_size(size: tuple[int, int]) -> tuple[int, int]:
    """A second, differently shaped (H, W) for checks: transposed, or 3:4 of the height if square."""
    h, w = size
    return (w, h) if h != w else (max(32, h * 3 // 4), w)


def _package_version() -> str:
    """The installed instaseg version (package metadata, so this layer needs no package-face import)."""
    try:
        return version("instaseg")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_metadata(graph: nn.Module, meta: dict[str, Any], *, opset: int) -> dict[str, str]:
    """The ``metadata_props`` of an exported model (all values strings)."""
    spec = dict(meta.get("model_spec") or {})
    class_names = list(meta.get("class_names") or [])
    if not class_names:
        n = int((spec.get("kwargs") or {}).get("num_classes") or 2)
        class_names = ["background"] + [f"class_{i}" for i in range(1, n)]
    category_ids = meta.get("category_ids")
    if category_ids is None:
        category_ids = list(range(len(class_names)))
    preprocessing = {
        "input": "image",
        "layout": "CHW",
        "dtype": "float32",
        "color": "RGB",
        "range": [0.0, 1.0],
        "normalization": "inside the graph",
        **dict(getattr(graph, "preprocessing", {}) or {}),
    }
    values: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "version": _package_version(),
        "model_name": str(spec.get("name") or type(getattr(graph, "model", graph)).__name__),
        "model_spec": json.dumps(_jsonable(spec)),
        "class_names": json.dumps(class_names),
        "category_ids": json.dumps([int(c) for c in category_ids]),
        "mask_kind": graph.mask_kind,
        "mask_thresh": str(MASK_THRESHOLD),
        "score_thresh": str(float(graph.default_score_thresh)),
        "preprocessing": json.dumps(preprocessing),
        "inputs": json.dumps(INPUTS_DOC),
        "outputs": json.dumps({**OUTPUTS_DOC, **({"sem_seg": SEM_SEG_DOC} if _is_panoptic(graph) else {})}),
        "opset": str(opset),
    }
    if _is_panoptic(graph):  # what the predictor needs to fuse the outputs into a panoptic result
        values["panoptic"] = json.dumps(_jsonable(meta.get("panoptic") or {}))
        values["fusion"] = json.dumps(graph.model.fusion.to_dict())
    return {META_PREFIX + k: str(v) for k, v in values.items()}


def _jsonable(value: Any) -> Any:
    """``value`` with anything JSON cannot hold turned into a string."""
    return json.loads(json.dumps(value, default=str))


def check_output_path(output: str | Path, overwrite: bool) -> Path:
    """ConfigError if ``output`` exists (and ``overwrite`` is off) or its folder cannot be made."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise ConfigError(f"{output}: already exists; pass --overwrite to replace it")
    if output.is_dir():
        raise ConfigError(f"{output}: is a directory, expected a file path")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{output}: cannot create its folder ({exc.strerror})") from None
    return output


def export_onnx(
    model: nn.Module,
    output: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    image_size: tuple[int, int] | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> ExportResult:
    """Export ``model`` (eval mode, CPU) to ONNX at ``output``, atomically.

    Args:
        meta: checkpoint metadata (``model_spec``, ``class_names``, ``category_ids``).
        opset: ONNX opset, ``MIN_OPSET..MAX_OPSET``.
        image_size: (H, W) of the example image traced; any size works afterwards (dynamic H and W).
        overwrite: replace an existing ``output``; otherwise ConfigError.
        verify: run the file with ONNX Runtime on two image sizes and compare with PyTorch
            (``ExportResult.checks``).
    """
    import onnx

    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ConfigError(f"--opset {opset}: supported opsets are {MIN_OPSET}..{MAX_OPSET}")
    output = check_output_path(output, overwrite)
    model = model.cpu().eval()
    graph = export_graph(model)
    size = tuple(image_size) if image_size else default_image_size(graph)
    inputs = trace_inputs(size)
    metadata = build_metadata(graph, dict(meta or {}), opset=int(opset))
    dynamic_axes = {"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in OUTPUT_NAMES}}
    dynamic_axes["masks"] = {0: "detections", 1: "mask_height", 2: "mask_width"}
    output_names = list(OUTPUT_NAMES)
    if _is_panoptic(graph):
        output_names = list(PANOPTIC_OUTPUT_NAMES)
        dynamic_axes["sem_seg"] = {0: "height", 1: "width"}
    with atomic_path(output) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about torchvision's shape arithmetic
            torch.onnx.export(
                graph, inputs, str(tmp), dynamo=False, opset_version=int(opset),
                input_names=list(INPUT_NAMES), output_names=output_names,
                dynamic_axes=dynamic_axes, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        proto.doc_string = f"instaseg {metadata[META_PREFIX + 'model_name']}: see metadata_props instaseg.*"
        onnx.checker.check_model(proto)
        with open(tmp, "wb") as f:
            f.write(proto.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        checks = verify_onnx(tmp, graph, [size, other_size(size)]) if verify else []
        if output.exists() and not overwrite:  # appeared while we exported
            raise ConfigError(f"{output}: already exists; pass --overwrite to replace it")
    return ExportResult(output, output.stat().st_size, int(opset), metadata, checks)


@torch.no_grad()
def verify_onnx(path: str | Path, graph: nn.Module, sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Run the exported graph with ONNX Runtime and PyTorch on random images of ``sizes`` at the
    model's default score threshold; per size: detection counts and the largest box/score gaps."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    thr = torch.tensor(float(graph.default_score_thresh))
    checks = []
    for i, size in enumerate(sizes):
        image, _ = trace_inputs(tuple(size), seed=i + 1)
        ref = [t.numpy() for t in graph(image, thr)]
        got = session.run(None, {"image": image.numpy(), "score_thresh": thr.numpy()})
        check: dict[str, Any] = {"size": list(size), "torch": len(ref[0]), "onnx": len(got[0])}
        check.update(compare_detections(ref, got))
        if len(ref) > len(OUTPUT_NAMES):  # panoptic: the semantic maps agree pixel for pixel (ties aside)
            agree = float((ref[4] == got[4]).mean()) if ref[4].shape == got[4].shape else 0.0
            check["sem_seg_agreement"] = agree
            check["ok"] = bool(check["ok"] and agree >= 0.999)
        checks.append(check)
    return checks


def compare_detections(ref: list[Any], got: list[Any]) -> dict[str, Any]:
    """Compare two (boxes, scores, labels, ...) outputs, ignoring the order of equal-score detections
    (random weights give ties that two runtimes may order differently): each reference detection is
    greedily paired with the nearest unused detection of the same label (largest coordinate gap).

    Returns ``max_box_diff`` (px), ``max_score_diff`` (absent when either side is empty) and ``ok``:
    same count, every pair within 1 px and 1e-3."""
    import numpy as np

    rb, rs, rl = (np.asarray(v) for v in ref[:3])
    gb, gs, gl = (np.asarray(v) for v in got[:3])
    if len(rb) != len(gb):
        return {"ok": False}
    if not len(rb):
        return {"ok": True}
    dist = np.abs(rb[:, None, :] - gb[None, :, :]).max(-1)
    dist[rl[:, None] != gl[None, :]] = np.inf
    used = np.zeros(len(gb), dtype=bool)
    box_diff = score_diff = 0.0
    for i in range(len(rb)):
        row = np.where(used, np.inf, dist[i])
        j = int(row.argmin())
        used[j] = True
        box_diff = max(box_diff, float(row[j]))
        score_diff = max(score_diff, float(abs(rs[i] - gs[j])))
    ok = box_diff <= 1.0 and score_diff <= 1e-3
    return {"max_box_diff": box_diff, "max_score_diff": score_diff, "ok": ok}
