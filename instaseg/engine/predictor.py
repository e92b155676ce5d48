"""Inference on new images: a NumPy layer over a torch layer, shared by ``instaseg predict``, the
HTTP service and the browser demo (the same split as segment-anything's ``SamPredictor``).

- :meth:`Predictor.predict_torch` takes ``list[Tensor[3, H, W]]`` RGB in [0, 1] and returns, per image,
  a dict of tensors: ``boxes`` (K, 4) XYXY pixels, ``labels`` (K,), ``scores`` (K,), and the masks in the
  cheapest form the model gives (``mask_lowres`` (K, M, M) box-relative probabilities, or ``masks``
  (K, 1, H, W) full-size probabilities), plus ``image_size`` (H, W). Nothing is pasted at full size.
- :meth:`Predictor.predict` takes one ``(H, W, 3)`` uint8 RGB array and returns plain NumPy/JSON-ready
  results with COCO RLE masks (and dense masks only when asked).

The model is anything callable like a torchvision detection model in eval mode (``list[Tensor]`` ->
``list[dict]``); :mod:`instaseg.ops.lowres` uses a low-resolution mask path when the model has one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from instaseg.errors import CheckpointError, ConfigError
from instaseg.ops.lowres import lowres_inference
from instaseg.ops.paste import dense_masks_to_rles, paste_masks_dense, paste_masks_to_rles
from instaseg.structures.masks import rle_decode

BACKENDS = ("torch", "onnxruntime")


def resolve_classes(
    classes: Sequence[str | int] | str | None, class_names: Sequence[str]
) -> list[int] | None:
    """Turn a class filter (names or label ids, or a comma-separated string of them) into label ids.

    Raises :class:`ConfigError` naming the unknown class and listing the known ones."""
    if classes is None:
        return None
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    labels: list[int] = []
    for c in classes:
        if isinstance(c, int) or (isinstance(c, str) and c.isdigit()):
            label = int(c)
            if not 1 <= label < len(class_names):
                raise ConfigError(f"--classes: label {label} is out of range 1..{len(class_names) - 1}")
        elif c in class_names[1:]:
            label = list(class_names).index(c, 1)
        else:
            known = ", ".join(class_names[1:])
            raise ConfigError(f"--classes: unknown class {c!r} (known: {known})")
        labels.append(label)
    return labels


class Predictor:
    """Run a detection model on images and return instances with COCO RLE masks.

    Args:
        model: an eval-mode callable ``list[Tensor[3, H, W]] -> list[dict]`` (torch or ONNX Runtime).
        class_names: names indexed by label, ``class_names[0] == "background"``.
        device: where input tensors are placed (the model must already be there).
        score_threshold: drop detections scoring below this.
        max_detections: keep at most this many detections per image (highest scores).
        classes: keep only these classes (names or label ids); ``None`` keeps all.
        mask_threshold: mask probability at or above which a pixel is foreground.
        category_ids: ``category_ids[label]`` is the dataset's original category id (COCO results).
    """

    def __init__(
        self,
        model: Any,
        class_names: Sequence[str],
        *,
        device: str | torch.device = "cpu",
        score_threshold: float = 0.5,
        max_detections: int = 100,
        classes: Sequence[str | int] | str | None = None,
        mask_threshold: float = 0.5,
        category_ids: Sequence[int] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ConfigError(f"--score-threshold must be in [0, 1], got {score_threshold}")
        if max_detections < 1:
            raise ConfigError(f"--max-detections must be >= 1, got {max_detections}")
        self.model = model
        self.class_names = list(class_names)
        self.device = torch.device(device)
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        self.classes = resolve_classes(classes, self.class_names)
        self.mask_threshold = float(mask_threshold)
        self.category_ids = list(category_ids) if category_ids is not None else list(range(len(class_names)))
        self.meta = dict(meta or {})
        # One forward at a time: callers from several threads (the service) share one model.
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "cpu", **kwargs: Any) -> Predictor:
        """A predictor for the model in checkpoint file or run directory ``path``."""
        from instaseg.engine.checkpoint import load_model

        model, meta = load_model(path, device=device)
        class_names = meta.get("class_names") or _default_class_names(meta)
        return cls(
            model, class_names, device=device, category_ids=meta.get("category_ids"), meta=meta, **kwargs
        )

    @classmethod
    def from_onnx(cls, path: str | Path, **kwargs: Any) -> Predictor:
        """A predictor for an exported ONNX model (ONNX Runtime, CPU), via ``instaseg.export.runtime``."""
        try:
            from instaseg.export.runtime import load_onnx_model
        except ImportError as exc:
            raise CheckpointError(
                f"{path}: the onnxruntime backend needs instaseg.export.runtime, which is not available "
                f"in this install ({exc})"
            ) from None
        model, meta = load_onnx_model(path)
        meta = dict(meta or {})
        class_names = meta.get("class_names") or _default_class_names(meta)
        meta.setdefault("path", str(path))
        if "mask_threshold" in meta:
            kwargs.setdefault("mask_threshold", float(meta["mask_threshold"]))
        return cls(model, class_names, category_ids=meta.get("category_ids"), meta=meta, **kwargs)

    @classmethod
    def load(
        cls,
        *,
        checkpoint: str | Path | None = None,
        backend: str = "torch",
        model: str | Path | None = None,
        device: str = "cpu",
        **kwargs: Any,
    ) -> Predictor:
        """Build from CLI-style options: ``backend="torch"`` needs ``checkpoint``; ``"onnxruntime"``
        needs ``model`` (an ``.onnx`` file)."""
        if backend not in BACKENDS:
            raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        _check_device(device)
        if backend == "onnxruntime" or (model is not None and checkpoint is None):
            if model is None:
                raise ConfigError("--backend onnxruntime needs --model FILE.onnx")
            if not Path(model).is_file():
                raise CheckpointError(f"{model}: ONNX model file does not exist")
            if device != "cpu":
                raise ConfigError("--backend onnxruntime runs on --device cpu only")
            return cls.from_onnx(model, **kwargs)
        if checkpoint is None:
            raise ConfigError("--checkpoint is required (a checkpoint file or a run directory)")
        return cls.from_checkpoint(checkpoint, device=device, **kwargs)

    @property
    def name(self) -> str:
        spec = self.meta.get("model_spec") or {}
        return str(spec.get("name") or self.meta.get("name") or type(self.model).__name__)

    # ------------------------------------------------------------------ torch layer
    def predict_torch(
        self,
        images: list[Tensor],
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Detections for ``images`` (list of Tensor[3, H, W] float RGB in [0, 1]).

        Returns one dict per image with tensors on the CPU: ``boxes`` (K, 4) XYXY pixels, ``labels``
        (K,) int64, ``scores`` (K,) float, and ``mask_lowres`` (K, M, M) or ``masks`` (K, 1, H, W)
        probabilities, plus ``image_size`` ``(H, W)``; sorted by score, filtered by the thresholds.
        """
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        top = self.max_detections if max_detections is None else int(max_detections)
        keep_classes = self.classes if classes is None else list(classes)
        batch = [img.to(self.device, torch.float32) for img in images]
        with self.lock, torch.inference_mode():
            raw = lowres_inference(self.model, batch)
        out = []
        for img, det in zip(images, raw, strict=True):
            det = {k: _to_cpu_tensor(v) for k, v in det.items()}
            scores = det["scores"].float()
            keep = scores >= thr
            if keep_classes is not None:
                keep &= torch.isin(det["labels"].long(), torch.tensor(keep_classes, dtype=torch.long))
            idx = torch.nonzero(keep).flatten()
            idx = idx[torch.argsort(scores[idx], descending=True)][:top]
            item: dict[str, Any] = {
                "boxes": det["boxes"].float().reshape(-1, 4)[idx],
                "labels": det["labels"].long()[idx],
                "scores": scores[idx],
                "image_size": (int(img.shape[-2]), int(img.shape[-1])),
            }
            if "mask_lowres" in det:
                item["mask_lowres"] = det["mask_lowres"].float()[idx]
            elif "masks" in det:
                item["masks"] = det["masks"][idx]
            out.append(item)
        return out

    # ------------------------------------------------------------------ NumPy layer
    def instances_to_numpy(self, inst: dict[str, Any], *, return_masks: bool = False) -> dict[str, Any]:
        """Turn one :meth:`predict_torch` result into NumPy arrays and COCO RLEs (see :meth:`predict`)."""
        h, w = inst["image_size"]
        boxes = inst["boxes"].numpy().astype(np.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        labels = inst["labels"].numpy().astype(np.int64)
        if "mask_lowres" in inst:
            lowres = inst["mask_lowres"].numpy()
            rles = paste_masks_to_rles(lowres, inst["boxes"].numpy(), h, w, self.mask_threshold)
        elif "masks" in inst:
            rles = dense_masks_to_rles(inst["masks"].float().numpy(), self.mask_threshold)
        else:
            lowres = None
            rles = []
        out: dict[str, Any] = {
            "boxes": boxes,
            "labels": labels,
            "class_names": [self._name(int(label)) for label in labels],
            "scores": inst["scores"].numpy().astype(np.float32),
            "rles": rles,
            "image_size": (h, w),
        }
        if return_masks:
            if "mask_lowres" in inst:
                out["masks"] = paste_masks_dense(lowres, inst["boxes"].numpy(), h, w, self.mask_threshold)
            else:
                out["masks"] = np.stack([rle_decode(r) for r in rles]) if rles else np.zeros((0, h, w), bool)
        return out

    def predict(
        self,
        image: np.ndarray,
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str | int] | str | None = None,
        return_masks: bool = False,
    ) -> dict[str, Any]:
        """Instances in one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            score_threshold, max_detections, classes: override the predictor's defaults for this call.
            return_masks: also return dense ``masks`` (K, H, W) bool (costs K x H x W bytes).

        Returns:
            ``boxes`` (K, 4) float32 XYXY pixels, ``labels`` (K,) int64, ``class_names`` list[str],
            ``scores`` (K,) float32, ``rles`` (K COCO RLEs with str counts), ``image_size`` (H, W), and
            ``masks`` when asked.
        """
        tensor = image_to_tensor(image)
        label_filter = None if classes is None else resolve_classes(classes, self.class_names)
        inst = self.predict_torch(
            [tensor], score_threshold=score_threshold, max_detections=max_detections, classes=label_filter
        )[0]
        return self.instances_to_numpy(inst, return_masks=return_masks)

    def _name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def category_id(self, label: int) -> int:
        """The original dataset category id for ``label`` (for COCO results)."""
        return int(self.category_ids[label]) if 0 <= label < len(self.category_ids) else int(label)


def image_to_tensor(image: np.ndarray) -> Tensor:
    """``(H, W, 3)`` uint8 RGB -> Tensor[3, H, W] float32 in [0, 1]. Raises ValueError on other shapes."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {arr.dtype}")
    if not arr.flags.writeable or not arr.flags.c_contiguous:  # e.g. PIL-backed arrays are read-only
        arr = np.array(arr, order="C")
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def _check_device(device: str) -> None:
    """ConfigError for a device string torch does not know or that this machine does not have."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")


def _to_cpu_tensor(value: Any) -> Tensor:
    return value.detach().cpu() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))


def _default_class_names(meta: dict[str, Any]) -> list[str]:
    spec = meta.get("model_spec") or {}
    n = int((spec.get("kwargs") or {}).get("num_classes") or meta.get("num_classes") or 2)
    return ["background"] + [f"class_{i}" for i in range(1, n)]
