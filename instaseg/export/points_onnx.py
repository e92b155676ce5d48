"""ONNX export of a point-cloud model's network (task ``points``).

The graph is :class:`~instaseg.models.pointgroup.PointNetwork`: ``(grid [1, F, X, Y, Z], cell [N] int64,
point_features [N, 7]) -> (semantic_logits [N, C], offsets [N, 3])`` with dynamic X, Y, Z, N.
Voxelisation (:func:`~instaseg.models.pointgroup.voxelize`) and clustering
(:func:`~instaseg.models.pointgroup.cluster_instances`) stay outside, in Python/NumPy; the ONNX file's
metadata holds what they need (``voxel``, ``cluster_cell``, ``min_points``, ``stuff_classes``,
``class_names``). :func:`export_points_onnx` verifies the export with ONNX Runtime on a synthetic scene:
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
from instaseg.models.pointgroup import cluster_instances, voxelize


def _inputs(model: nn.Module, num_points: int, seed: int) -> tuple[Any, np.ndarray]:
    scene = generate_scene(seed, num_points)
    points = torch.from_numpy(np.concatenate([scene.xyz, scene.rgb], 1))
    return voxelize(points, model.voxel), scene.xyz


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
    (grid, cell, pf), _ = _inputs(model, 3000, 11)
    torch.onnx.export(
        model.net,
        (grid, cell, pf),
        str(output),
        opset_version=opset,
        dynamo=False,
        input_names=["grid", "cell", "point_features"],
        output_names=["semantic_logits", "offsets"],
        dynamic_axes={
            "grid": {2: "X", 3: "Y", 4: "Z"},
            "cell": {0: "N"},
            "point_features": {0: "N"},
            "semantic_logits": {0: "N"},
            "offsets": {0: "N"},
        },
    )
    props = {
        "instaseg.task": "points",
        "instaseg.model_name": str(meta.get("model_spec", {}).get("name", "")),
        "instaseg.class_names": json.dumps(list(meta.get("class_names", []))),
        "instaseg.points": json.dumps(
            {
                "voxel": model.voxel,
                "cluster_cell": model.cluster_cell,
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

    (grid, cell, pf), xyz = _inputs(model, num_points, seed)
    with torch.no_grad():
        t_logits, t_off = model.net(grid, cell, pf)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    o_logits, o_off = sess.run(
        None, {"grid": grid.numpy(), "cell": cell.numpy(), "point_features": pf.numpy()}
    )
    kw = {"stuff": model.stuff_classes, "cell": model.cluster_cell, "min_points": model.min_points}

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
        "size": [num_points, int(grid.shape[2] * grid.shape[3] * grid.shape[4])],
        "torch": len(a),
        "onnx": len(b),
        "max_logit_diff": logit_diff,
        "max_offset_diff": offset_diff,
        "same_instance_fraction": same,
        "ok": ok,
    }
