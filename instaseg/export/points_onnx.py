"""ONNX export of a point-cloud model's network (task ``points``).

The graph is :class:`~instaseg.models.pointgroup.PointNetwork`: ``(features [M0, F], cell [N] int64,
point_features [N, 7], nbr_0, nbr_1, down_1, up_1, ...) -> (semantic_logits [N, C], offsets [N, 3])``
with every size dynamic (the voxel tables of :func:`~instaseg.models.sparse_unet.sparse_inputs`).
Building the voxel tables and clustering
(:func:`~instaseg.models.pointgroup.cluster_instances`) stay outside, in Python/NumPy; the ONNX file's
metadata holds what they need (``voxel``, ``levels``, ``shape_features``, ``cluster_radius``, ``per_class``,
``smooth_iters``, ``min_points``, ``stuff_classes``, ``class_names``). :func:`export_points_onnx` verifies
the export with ONNX Runtime on a synthetic scene:
the raw outputs and the final instances must agree with PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from instaseg.data.points.synthetic import generate_scene
from instaseg.export.onnx_export import ExportResult, check_output_path
from instaseg.models.pointgroup import cluster_instances


def _inputs(model: nn.Module, num_points: int, seed: int) -> tuple[Any, np.ndarray]:
    scene = generate_scene(seed, num_points)
    points = torch.from_numpy(np.concatenate([scene.xyz, scene.rgb], 1))
    return model.inputs(points), scene.xyz


def input_names(levels: int) -> list[str]:
    """Names of the graph's inputs, in order, for a network of ``levels`` levels."""
    names = ["features", "cell", "point_features", "nbr_0"]
    for i in range(1, levels):
        names += [f"nbr_{i}", f"down_{i}", f"up_{i}"]
    return names


def export_points_onnx(
    model: nn.Module,
    output: str | Path,
    *,
    meta: dict[str, Any],
    opset: int = 17,
    overwrite: bool = False,
    verify: bool = True,
) -> ExportResult:
    """Write ``output`` (.onnx) for a point model; ``meta`` is the checkpoint's (class names, spec)."""
    import onnx

    if not hasattr(model, "net") or not hasattr(model, "voxel"):
        from instaseg.errors import ConfigError

        raise ConfigError(f"model {type(model).__name__} has no point network to export (e.g. dbscan_points)")
    output = check_output_path(output, overwrite)
    model = model.eval()
    inputs, _ = _inputs(model, 3000, 11)
    names = input_names(model.levels)
    dynamic = {name: {0: f"{name}_rows"} for name in names}
    for name in ("cell", "point_features"):
        dynamic[name] = {0: "N"}
    torch.onnx.export(
        model.net,
        inputs,
        str(output),
        opset_version=opset,
        dynamo=False,
        input_names=names,
        output_names=["semantic_logits", "offsets"],
        dynamic_axes={**dynamic, "semantic_logits": {0: "N"}, "offsets": {0: "N"}},
    )
    props = {
        "instaseg.task": "points",
        "instaseg.model_name": str(meta.get("model_spec", {}).get("name", "")),
        "instaseg.class_names": json.dumps(list(meta.get("class_names", []))),
        "instaseg.points": json.dumps(
            {
                "voxel": model.voxel,
                "levels": model.levels,
                "cluster_radius": model.cluster_radius,
                "per_class": model.per_class,
                "smooth_iters": model.smooth_iters,
                "shape_features": model.shape_features,
                "min_points": model.min_points,
                "stuff_classes": list(model.stuff_classes),
            }
        ),
    }
    proto = onnx.load(str(output))
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(output))
    checks = [verify_points_onnx(model, output, n, s) for n, s in ((2000, 21), (7000, 22))] if verify else []
    return ExportResult(
        path=output, opset=opset, size_bytes=output.stat().st_size, metadata=props, checks=checks
    )


def verify_points_onnx(model: nn.Module, path: str | Path, num_points: int, seed: int) -> dict[str, Any]:
    """ONNX Runtime vs PyTorch on one synthetic scene of another size than the traced one."""
    import onnxruntime as ort

    inputs, xyz = _inputs(model, num_points, seed)
    with torch.no_grad():
        t_logits, t_off = model.net(*inputs)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {n: t.numpy() for n, t in zip(input_names(model.levels), inputs, strict=True)}
    o_logits, o_off = sess.run(None, feed)
    kw = {
        "stuff": model.stuff_classes,
        "radius": model.cluster_radius,
        "min_points": model.min_points,
        "per_class": model.per_class,
        "smooth_iters": model.smooth_iters,
    }

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    a = cluster_instances(xyz, softmax(t_logits.numpy()), t_off.numpy(), **kw)
    b = cluster_instances(xyz, softmax(o_logits), o_off, **kw)
    same = float((a.instance_ids == b.instance_ids).mean())
    logit_diff = float(np.abs(t_logits.numpy() - o_logits).max())
    offset_diff = float(np.abs(t_off.numpy() - o_off).max())
    ok = logit_diff < 1e-3 and offset_diff < 1e-3 and same > 0.999
    return {
        "size": [num_points, int(inputs[0].shape[0])],
        "torch": len(a),
        "onnx": len(b),
        "max_logit_diff": logit_diff,
        "max_offset_diff": offset_diff,
        "same_instance_fraction": same,
        "ok": ok,
    }
