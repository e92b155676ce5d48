"""Run an exported model (ONNX Runtime or TorchScript, CPU) behind the model contract's inference side:
the runtime half of the export file format, so the predictor can load exports without the exporter.

>>> model, meta = load_onnx_model("model.onnx")
>>> outputs = model([image])  # list of Tensor[3, H, W] RGB in [0, 1]
>>> outputs[0]["boxes"], outputs[0]["labels"], outputs[0]["scores"], outputs[0]["masks"]  # (K,1,H,W)

``model.forward_lowres`` gives box-relative low-resolution masks instead (``mask_lowres``), the cheap
path :func:`instaseg.ops.lowres.lowres_inference` takes. The graph runs one image at a time, so a
batch of any size (and of mixed image sizes) is a loop over images. :class:`ExportedDetector` is the
base of the ONNX Runtime and TorchScript runtimes; :func:`raw_to_detections` turns one image's graph
outputs into the contract's detection dict (files from earlier exports with whole-image masks,
``mask_kind`` "image", are converted to box-relative masks).
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision  # noqa: F401  (registers the torchvision:: ops that loaded TorchScript graphs call)
from torch import Tensor

from instaseg.errors import CheckpointError
from instaseg.ops.masks import masks_in_boxes, paste_in_image

# The export file format (written by instaseg.export, read here).
# Format 2 names the threshold as everywhere else (``score_thresh``, ``mask_thresh``); format 1 files
# (``score_threshold``, ``mask_threshold``) still load.
FORMAT_VERSION = "2"
META_PREFIX = "instaseg."
INPUT_NAMES = ("image", "score_thresh")
FORMAT1_INPUT_NAMES = ("image", "score_threshold")
OUTPUT_NAMES = ("boxes", "scores", "labels", "masks")
PANOPTIC_OUTPUT_NAMES = (*OUTPUT_NAMES, "sem_seg")  # panoptic models: + the semantic argmax [H, W]
MASK_THRESHOLD = 0.5
EXTRA_FILE = "instaseg.json"  # TorchScript: the metadata file inside the archive
IMAGE_MASK_SIZE = 56  # box-relative side for whole-image masks of earlier exports


def _tensor(value: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(dtype)
    return torch.from_numpy(np.ascontiguousarray(value)).to(dtype)


def raw_to_detections(
    boxes: Any, scores: Any, labels: Any, masks: Any, *, mask_kind: str, image_size: tuple[int, int],
    paste: bool,
) -> dict[str, Tensor]:
    """One image's graph outputs -> a detection dict.

    Args:
        boxes: [K, 4] XYXY input pixels; scores: [K]; labels: [K]; masks: [K, M, M] probabilities
            relative to each box (``mask_kind`` "box"), or [K, h, w] covering the whole image ("image").
        image_size: the input image's (H, W).
        paste: True -> ``masks`` [K, 1, H, W] probabilities; False -> ``mask_lowres`` [K, M, M].
    """
    height, width = image_size
    out = {
        "boxes": _tensor(boxes, torch.float32).reshape(-1, 4),
        "labels": _tensor(labels, torch.int64).reshape(-1),
        "scores": _tensor(scores, torch.float32).reshape(-1),
    }
    k = out["boxes"].shape[0]
    m = _tensor(masks, torch.float32)
    m = m.reshape(k, *m.shape[-2:]) if k else m.new_zeros(0, *(m.shape[-2:] if m.ndim == 3 else (28, 28)))
    if mask_kind == "image":
        # the masks cover the whole image at a lower resolution: cut each box out, in mask cells
        cells = out["boxes"].new_tensor([m.shape[-1] / width, m.shape[-2] / height]).repeat(2)
        m = masks_in_boxes(m, out["boxes"] * cells, 1.0, IMAGE_MASK_SIZE)
    elif mask_kind != "box":
        raise ValueError(f"unknown mask_kind {mask_kind!r}")
    if paste:
        out["masks"] = paste_in_image(m, out["boxes"], height, width)[:, None]
    else:
        out["mask_lowres"] = m
    return out


REQUIRED_KEYS = ("format_version", "class_names", "mask_kind")
OLD_KEYS = {"score_threshold": "score_thresh", "mask_threshold": "mask_thresh"}  # format 1 -> 2


def parse_metadata(props: dict[str, str], path: str | Path) -> dict[str, Any]:
    """Our ``instaseg.*`` metadata_props -> a meta dict like the checkpoint loader's (``class_names``,
    ``category_ids``, ``model_spec``, ``mask_kind``, ``score_thresh``, ...). CheckpointError if they are
    missing/bad."""
    ours = {k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    ours = {OLD_KEYS.get(k, k): v for k, v in ours.items()}
    missing = [k for k in (*REQUIRED_KEYS, "score_thresh") if k not in ours]
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
            "mask_thresh": float(ours.get("mask_thresh", 0.5)),
            "score_thresh": float(ours["score_thresh"]),
            "preprocessing": json.loads(ours.get("preprocessing", "{}")),
            "opset": int(ours["opset"]) if "opset" in ours else None,
            "panoptic": json.loads(ours["panoptic"]) if "panoptic" in ours else None,  # panoptic exports
            "fusion": json.loads(ours["fusion"]) if "fusion" in ours else None,
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
            boxes, scores, labels, masks = self.run_raw(image)[:4]
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

    def forward_panoptic(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Panoptic exports: :meth:`forward_lowres`'s detections plus ``sem_seg`` int64 [H, W]."""
        out = []
        for image in images:
            raw = self.run_raw(image)
            if len(raw) < len(PANOPTIC_OUTPUT_NAMES):
                raise CheckpointError(f"{self.meta.get('path')}: not a panoptic export (no sem_seg output)")
            size = (int(image.shape[-2]), int(image.shape[-1]))
            det = raw_to_detections(*raw[:4], mask_kind=self.mask_kind, image_size=size, paste=False)
            det["sem_seg"] = _tensor(raw[4], torch.int64)
            out.append(det)
        return out


class OnnxDetector(ExportedDetector):
    """An exported model in ONNX Runtime (``session``: an ``onnxruntime.InferenceSession``)."""

    def __init__(self, session: Any, meta: dict[str, Any], *, score_thresh: float | None = None) -> None:
        super().__init__(meta, score_thresh=score_thresh)
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]  # format 1 or 2 (see INPUT_NAMES)
        self.output_names = [o.name for o in session.get_outputs()]  # OUTPUT_NAMES (+ sem_seg: panoptic)

    def run_raw(self, image: Tensor | np.ndarray) -> list[np.ndarray]:
        array = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim != 3 or array.shape[0] != 3:
            raise ValueError(f"expected an image Tensor[3, H, W], got shape {tuple(array.shape)}")
        image_name, thresh_name = self.input_names
        feeds = {image_name: array, thresh_name: np.array(self.score_thresh, dtype=np.float32)}
        return self.session.run(self.output_names, feeds)


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
    if tuple(inputs) not in (INPUT_NAMES, FORMAT1_INPUT_NAMES) or tuple(outputs) not in (
        OUTPUT_NAMES, PANOPTIC_OUTPUT_NAMES
    ):
        raise CheckpointError(
            f"{path}: unexpected graph signature (inputs {inputs}, outputs {outputs}); "
            f"expected inputs {list(INPUT_NAMES)} and outputs {list(OUTPUT_NAMES)}"
        )
    meta["path"] = str(path)
    return OnnxDetector(session, meta, score_thresh=score_thresh), meta


def load_torchscript_model(
    path: str | Path, *, score_thresh: float | None = None
) -> tuple[TorchScriptDetector, dict[str, Any]]:
    """Load a TorchScript export: ``(model, meta)`` as :func:`load_onnx_model`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: TorchScript file does not exist")
    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError/zipfile errors for junk
        first = (str(exc).strip().splitlines() or ["unknown error"])[0]
        raise CheckpointError(f"{path}: not a loadable TorchScript file ({first[:300]})") from None
    try:
        props = json.loads(extra[EXTRA_FILE] or "{}")
    except ValueError:
        props = {}
    meta = parse_metadata(props if isinstance(props, dict) else {}, path)
    meta["path"] = str(path)
    return TorchScriptDetector(module.eval(), meta, score_thresh=score_thresh), meta
