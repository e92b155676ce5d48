"""Run an exported ONNX model with ONNX Runtime (CPU) behind the torch detection-model interface.

>>> model, meta = load_onnx_model("model.onnx")
>>> outputs = model([image])  # list of Tensor[3, H, W] RGB in [0, 1]
>>> outputs[0]["boxes"], outputs[0]["labels"], outputs[0]["scores"], outputs[0]["masks"]  # (K,1,H,W)

``model.forward_lowres`` gives box-relative low-resolution masks instead (``mask_lowres``), the cheap
path :func:`instaseg.ops.lowres.lowres_inference` takes. The graph runs one image at a time, so a
batch of any size (and of mixed image sizes) is a loop over images. :class:`ExportedDetector` is the
base of the ONNX Runtime and TorchScript runtimes.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from instaseg.errors import CheckpointError
from instaseg.export.onnx_export import INPUT_NAMES, META_PREFIX, OUTPUT_NAMES
from instaseg.export.postprocess import raw_to_detections

REQUIRED_KEYS = ("format_version", "class_names", "mask_kind", "score_threshold")  # file format 1


def parse_metadata(props: dict[str, str], path: str | Path) -> dict[str, Any]:
    """Our ``instaseg.*`` metadata_props -> a meta dict like the checkpoint loader's (``class_names``,
    ``category_ids``, ``model_spec``, ``mask_kind``, ``score_thresh``, ...). CheckpointError if they are
    missing/bad."""
    ours = {k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    missing = [k for k in REQUIRED_KEYS if k not in ours]
    if missing:
        raise CheckpointError(
            f"{path}: not an instaseg export (its metadata lacks {META_PREFIX}{missing[0]}); "
            "export it with `instaseg export`"
        )
    try:
        meta: dict[str, Any] = {
            "format_version": ours["format_version"],
            "version": ours.get("version"),
            "model_name": ours.get("model_name"),
            "model_spec": json.loads(ours.get("model_spec", "{}")),
            "class_names": list(json.loads(ours["class_names"])),
            "category_ids": [int(c) for c in json.loads(ours.get("category_ids", "null") or "null") or []],
            "mask_kind": ours["mask_kind"],
            "mask_threshold": float(ours.get("mask_threshold", 0.5)),
            "score_thresh": float(ours["score_threshold"]),
            "preprocessing": json.loads(ours.get("preprocessing", "{}")),
            "opset": int(ours["opset"]) if "opset" in ours else None,
        }
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: malformed instaseg metadata in the ONNX file ({exc})") from None
    if meta["mask_kind"] not in ("box", "image"):
        raise CheckpointError(f"{path}: unknown mask_kind {meta['mask_kind']!r} in the ONNX metadata")
    if not meta["category_ids"]:
        meta["category_ids"] = list(range(len(meta["class_names"])))
    if not meta["model_spec"]:
        meta["model_spec"] = {"name": meta["model_name"]}
    return meta


class ExportedDetector(ABC):
    """An exported model behind the inference side of the model contract: ``forward_lowres`` (the
    cheap path, ``mask_lowres`` [K, M, M]) and ``__call__`` (full-size ``masks`` [K, 1, H, W]).

    Subclasses run one image through the graph (:meth:`run_raw`). ``score_thresh``: detections
    scoring below it are dropped inside the graph (default: the model's own, from the metadata).
    """

    training = False

    def __init__(self, meta: dict[str, Any], *, score_thresh: float | None = None) -> None:
        self.meta = meta
        self.mask_kind = meta["mask_kind"]
        self.score_thresh = meta["score_thresh"] if score_thresh is None else float(score_thresh)

    @abstractmethod
    def run_raw(self, image: Tensor) -> list[Any]:
        """The graph's raw outputs (boxes, scores, labels, masks) for one [3, H, W] image."""

    # torch-module look-alikes so callers can treat it like a model
    def eval(self) -> ExportedDetector:
        return self

    def to(self, device: Any) -> ExportedDetector:
        if str(device) != "cpu":
            raise CheckpointError(f"{type(self).__name__} runs on the CPU only, not {device}")
        return self

    def _run(self, images: list[Tensor], paste: bool) -> list[dict[str, Tensor]]:
        out = []
        for image in images:
            boxes, scores, labels, masks = self.run_raw(image)
            size = (int(image.shape[-2]), int(image.shape[-1]))
            out.append(raw_to_detections(boxes, scores, labels, masks, mask_kind=self.mask_kind,
                                         image_size=size, paste=paste))
        return out

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Per image: boxes [K, 4], labels [K], scores [K], masks [K, 1, H, W] probabilities."""
        return self._run(list(images), paste=True)

    def forward_lowres(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Per image: boxes [K, 4], labels [K], scores [K], mask_lowres [K, M, M] box-relative."""
        return self._run(list(images), paste=False)


class OnnxDetector(ExportedDetector):
    """An exported model in ONNX Runtime (``session``: an ``onnxruntime.InferenceSession``)."""

    def __init__(self, session: Any, meta: dict[str, Any], *, score_thresh: float | None = None) -> None:
        super().__init__(meta, score_thresh=score_thresh)
        self.session = session

    def run_raw(self, image: Tensor | np.ndarray) -> list[np.ndarray]:
        array = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim != 3 or array.shape[0] != 3:
            raise ValueError(f"expected an image Tensor[3, H, W], got shape {tuple(array.shape)}")
        feeds = {INPUT_NAMES[0]: array, INPUT_NAMES[1]: np.array(self.score_thresh, dtype=np.float32)}
        return self.session.run(list(OUTPUT_NAMES), feeds)


class TorchScriptDetector(ExportedDetector):
    """A TorchScript export (``module``: the loaded ``torch.jit`` module)."""

    def __init__(self, module: Any, meta: dict[str, Any], *, score_thresh: float | None = None) -> None:
        super().__init__(meta, score_thresh=score_thresh)
        self.module = module

    def to(self, device: Any) -> TorchScriptDetector:
        self.module.to(device)
        return self

    @torch.no_grad()
    def run_raw(self, image: Tensor) -> list[Tensor]:
        return list(self.module(image.float(), torch.tensor(self.score_thresh)))


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options used here: all graph optimisations, ``threads`` intra-op threads
    (default: ORT's choice), sequential execution."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3  # errors only
    return opts


def load_onnx_model(
    path: str | Path, *, threads: int | None = None, score_thresh: float | None = None
) -> tuple[OnnxDetector, dict[str, Any]]:
    """Load an instaseg ONNX export for CPU inference.

    Returns ``(model, meta)``: ``model`` is an :class:`OnnxDetector`; ``meta`` has ``class_names``,
    ``category_ids``, ``model_spec``, ``mask_kind``, ``score_thresh``, ``preprocessing``, ``path``.
    Raises CheckpointError (one line, naming the file) for a missing, corrupt or foreign file.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX model file does not exist")
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
        first = (str(exc).strip().splitlines() or ["unknown error"])[0]
        raise CheckpointError(f"{path}: not a loadable ONNX model ({first[:300]})") from None
    meta = parse_metadata(dict(session.get_modelmeta().custom_metadata_map), path)
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != list(INPUT_NAMES) or outputs != list(OUTPUT_NAMES):
        raise CheckpointError(
            f"{path}: unexpected graph signature (inputs {inputs}, outputs {outputs}); "
            f"expected inputs {list(INPUT_NAMES)} and outputs {list(OUTPUT_NAMES)}"
        )
    meta["path"] = str(path)
    return OnnxDetector(session, meta, score_thresh=score_thresh), meta
