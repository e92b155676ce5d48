"""ONNX export of a click model (``task="interactive"``): the crop network
``(crops [B, 3, S, S] RGB in [0, 1], maps [B, 3, S, S]) -> probabilities [B, 1, S, S]``.

The maps are the positive click disks, the negative click disks and the previous mask, drawn on the
crop as :func:`instaseg.models.click.click_disks` does (disk radius in the metadata). Cropping and
pasting back (:func:`instaseg.models.click.crop_image` / ``paste_crop``) stay outside the graph.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from instaseg.errors import ConfigError
from instaseg.export.onnx_export import ExportResult, check_output_path
from instaseg.fileio import atomic_path
from instaseg.models.click import ClickCropGraph

INPUTS = ("crops", "maps")
OUTPUTS = ("probs",)


def export_click_onnx(model: nn.Module, output: str | Path, *, meta: dict[str, Any] | None = None,
                      opset: int = 17, overwrite: bool = False, verify: bool = True) -> ExportResult:
    """Export the crop network of click model ``model`` to ``output`` (atomically); with ``verify``,
    run it in ONNX Runtime on a batch of 1 and of 2 and compare with PyTorch (``checks``: max abs
    probability difference, ok when < 1e-4)."""
    import onnx

    if not hasattr(model, "forward_crops"):
        raise ConfigError(f"{type(model).__name__} is not a click model (no forward_crops)")
    output = check_output_path(output, overwrite)
    model = model.cpu().eval()
    graph = ClickCropGraph(model).eval()
    s = int(model.crop_size)
    example = (torch.rand(1, 3, s, s), torch.zeros(1, 3, s, s))
    spec = (meta or {}).get("model_spec") or {"name": type(model).__name__}
    metadata = {"instaseg.task": "interactive", "instaseg.model_name": str(spec.get("name")),
                "instaseg.crop_size": str(s), "instaseg.click_radius": str(float(model.radius)),
                "instaseg.inputs": json.dumps({
                    "crops": "[B,3,S,S] RGB in [0,1]",
                    "maps": "[B,3,S,S] positive disks, negative disks, previous mask"})}
    with atomic_path(output) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, example, str(tmp), dynamo=False, opset_version=int(opset),
                              input_names=list(INPUTS), output_names=list(OUTPUTS),
                              dynamic_axes={n: {0: "batch"} for n in (*INPUTS, *OUTPUTS)})
        proto = onnx.load(str(tmp))
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto)
        with open(tmp, "wb") as f:
            f.write(proto.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        checks = verify_click_onnx(tmp, graph) if verify else []
    return ExportResult(output, output.stat().st_size, int(opset), metadata, checks)


@torch.no_grad()
def verify_click_onnx(path: str | Path, graph: nn.Module, *, tol: float = 1e-4) -> list[dict[str, Any]]:
    """Compare ONNX Runtime with PyTorch on random crops with clicks, batch 1 and 2."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    s = int(graph.model.crop_size)
    g = torch.Generator().manual_seed(0)
    checks = []
    for batch in (1, 2):
        crops = torch.rand(batch, 3, s, s, generator=g)
        maps = torch.zeros(batch, 3, s, s)
        maps[:, 0, s // 3: s // 3 + 6, s // 3: s // 3 + 6] = 1.0
        maps[:, 2, s // 4: s // 2, s // 4: s // 2] = 1.0
        ref = graph(crops, maps).numpy()
        (got,) = sess.run(None, {"crops": crops.numpy(), "maps": maps.numpy()})
        diff = float(np.abs(ref - got).max())
        checks.append({"batch": batch, "max_abs_diff": diff, "ok": diff < tol, "size": (s, s),
                       "torch": batch, "onnx": int(got.shape[0])})
    return checks
