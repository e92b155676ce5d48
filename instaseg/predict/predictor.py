"""Inference on new images: a NumPy layer over a torch layer, shared by ``instaseg predict``, the
HTTP service and the browser demo (the same split as segment-anything's ``SamPredictor``).

- :meth:`Predictor.predict_torch` takes ``list[Tensor[3, H, W]]`` RGB in [0, 1] and returns one
  :class:`~instaseg.structures.instances.Instances` per image: ``boxes`` (K, 4) XYXY pixels, ``labels``,
  ``scores`` and the masks in the cheapest form the model gives (box-relative low-res probabilities, or
  RLEs for models with full-size masks only). Nothing is pasted at full size.
- :meth:`Predictor.predict` takes one ``(H, W, 3)`` uint8 RGB array (or an image path) and returns its
  ``Instances``; ``inst.to_rles()`` gives COCO RLEs, ``inst.to_dense_masks()`` bool masks.

Validation during training, ``instaseg evaluate --checkpoint`` and ``instaseg predict`` all run
:meth:`Predictor.predict_torch`, so they share one mask path and one score filter (``score_thresh``,
kept when ``score >= score_thresh``).

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

from instaseg.data.io import read_image
from instaseg.errors import CheckpointError, ConfigError
from instaseg.models.checkpoint import load_model
from instaseg.ops import tiling
from instaseg.ops.lowres import lowres_inference
from instaseg.ops.panoptic_fusion import FusionParams, panoptic_fusion
from instaseg.ops.refine import MaskRefinement, guide_image, refine_instances
from instaseg.ops.tta import FIELDS, fuse_detections, hflip_detections
from instaseg.predict import runtime
from instaseg.structures.instances import Instances
from instaseg.structures.masks import rle_decode
from instaseg.structures.panoptic import PanopticResult

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
    """Run a detection model on images and return one :class:`Instances` per image.

    Args:
        model: an eval-mode callable ``list[Tensor[3, H, W]] -> list[dict]`` (torch or ONNX Runtime).
        class_names: names indexed by label, ``class_names[0] == "background"``.
        device: where input tensors are placed (the model must already be there).
        score_thresh: keep detections with ``score >= score_thresh`` (the one score filter).
        max_detections: keep at most this many detections per image (highest scores).
        classes: keep only these classes (names or label ids); ``None`` keeps all.
        mask_thresh: mask probability at or above which a pixel is foreground.
        category_ids: ``category_ids[label]`` is the dataset's original category id (COCO results).
        meta: where the model came from (checkpoint metadata: ``model_spec``, ``path``, ...).
        autocast: run the model under ``torch.autocast`` (mixed precision on CUDA).
        tta: also run the mirror image and fuse both views' detections (:mod:`instaseg.ops.tta`;
            two forwards an image, models with box-relative masks).
        refine: refine box-relative masks along image edges and rescore them by their quality
            (:mod:`instaseg.ops.refine`); the masks then come out as RLEs. ``True``: the default
            :class:`~instaseg.ops.refine.MaskRefinement`; ``None`` or ``False``: plain pasting.
    """

    def __init__(
        self,
        model: Any,
        class_names: Sequence[str],
        *,
        device: str | torch.device = "cpu",
        score_thresh: float = 0.5,
        max_detections: int = 100,
        classes: Sequence[str | int] | str | None = None,
        mask_thresh: float = 0.5,
        category_ids: Sequence[int] | None = None,
        meta: dict[str, Any] | None = None,
        autocast: bool = False,
        tta: bool = False,
        refine: MaskRefinement | bool | None = None,
    ) -> None:
        if not 0.0 <= score_thresh <= 1.0:
            raise ConfigError(f"--score-thresh must be in [0, 1], got {score_thresh}")
        if max_detections < 1:
            raise ConfigError(f"--max-detections must be >= 1, got {max_detections}")
        self.model = model
        self.class_names = list(class_names)
        self.device = torch.device(device)
        self.score_thresh = float(score_thresh)
        self.max_detections = int(max_detections)
        self.classes = resolve_classes(classes, self.class_names)
        self.mask_thresh = float(mask_thresh)
        self.autocast = bool(autocast)
        self.tta = bool(tta)
        self.refine = MaskRefinement() if refine is True else (refine or None)
        self.category_ids = list(category_ids) if category_ids is not None else list(range(len(class_names)))
        self.meta = dict(meta or {})
        # One forward at a time: callers from several threads (the service) share one model.
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "cpu", **kwargs: Any) -> Predictor:
        """A predictor for the model in checkpoint file or run directory ``path``."""
        model, meta = load_model(path, device=device)
        return cls.from_model(model, meta, device=device, **kwargs)

    @classmethod
    def from_model(cls, model: Any, meta: dict[str, Any], **kwargs: Any) -> Predictor:
        """A predictor for a loaded ``model`` and its checkpoint ``meta`` (class names, category ids;
        see :func:`instaseg.models.checkpoint.load_model`)."""
        class_names = meta.get("class_names") or _default_class_names(meta)
        return cls(model, class_names, category_ids=meta.get("category_ids"), meta=meta, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, **kwargs: Any) -> Predictor:
        """A predictor for an exported ONNX model (ONNX Runtime, CPU; :mod:`instaseg.predict.runtime`)."""
        model, meta = runtime.load_onnx_model(path)
        meta = dict(meta or {})
        class_names = meta.get("class_names") or _default_class_names(meta)
        meta.setdefault("path", str(path))
        if "mask_thresh" in meta:
            kwargs.setdefault("mask_thresh", float(meta["mask_thresh"]))
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
        check_device(device)
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
        score_thresh: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[int] | None = None,
    ) -> list[Instances]:
        """Detections for ``images`` (list of Tensor[3, H, W] float RGB in [0, 1]), one
        :class:`Instances` per image, on the CPU.

        This is the only place detections are filtered: ``score >= score_thresh``, then the class
        filter, then the ``max_detections`` highest scores, sorted by decreasing score. Masks stay as
        the model gives them cheapest: box-relative low-res probabilities (``mask_lowres``), or, for
        models with full-size masks only, COCO RLEs (thresholded at ``mask_thresh``). With ``refine``,
        masks are refined into RLEs and scores rescaled by mask quality, then filtered again by
        ``score_thresh`` and re-sorted.
        """
        thr = self.score_thresh if score_thresh is None else float(score_thresh)
        top = self.max_detections if max_detections is None else int(max_detections)
        keep_classes = self.classes if classes is None else list(classes)
        batch = [img.to(self.device, torch.float32) for img in images]
        with self.lock, torch.inference_mode(), torch.autocast(self.device.type, enabled=self.autocast):
            raw = lowres_inference(self.model, batch)
            if self.tta:
                raw = self._fuse_mirrored(batch, raw)
        out = [
            self._instances(det, (int(img.shape[-2]), int(img.shape[-1])), thr, top, keep_classes)
            for img, det in zip(images, raw, strict=True)
        ]
        if self.refine is not None:
            out = [refine_instances(inst, guide_image(img.detach().cpu().float().numpy()), self.refine)
                   for img, inst in zip(images, out, strict=True)]
            out = [inst[inst.scores >= thr] for inst in out]
        return out

    def _fuse_mirrored(self, batch: list[Tensor], raw: list[dict[str, Any]]) -> list[dict[str, Tensor]]:
        """``raw`` (the detections of ``batch``) fused with those of the mirrored images."""
        mirrored = lowres_inference(self.model, [img.flip(-1) for img in batch])
        fused = []
        for img, det, mir in zip(batch, raw, mirrored, strict=True):
            det = {k: _to_cpu_tensor(v) for k, v in det.items()}
            mir = {k: _to_cpu_tensor(v) for k, v in mir.items()}
            if "mask_lowres" not in det:
                raise ConfigError(f"test-time flips (tta) need a model with box-relative masks; {self.name} "
                                  "gives full-size masks only")
            fused.append(fuse_detections({k: det[k] for k in FIELDS},
                                         hflip_detections(mir, int(img.shape[-1]))))
        return fused

    def _instances(
        self, det: dict[str, Any], size: tuple[int, int], thr: float, top: int, classes: list[int] | None
    ) -> Instances:
        det = {k: _to_cpu_tensor(v) for k, v in det.items()}
        scores = det["scores"].float().reshape(-1)
        labels = det["labels"].long().reshape(-1)
        keep = scores >= thr
        if classes is not None:
            keep &= torch.isin(labels, torch.tensor(classes, dtype=torch.long))
        idx = torch.nonzero(keep).flatten()
        idx = idx[torch.argsort(scores[idx], descending=True, stable=True)][:top]
        boxes = det["boxes"].float().reshape(-1, 4)
        fields = {"boxes": boxes[idx], "labels": labels[idx], "scores": scores[idx]}
        if "mask_lowres" in det:
            return Instances(size, **fields, mask_lowres=det["mask_lowres"].float()[idx])
        if "masks" in det:
            return Instances.from_dense(size, **fields, masks=det["masks"][idx], mask_thresh=self.mask_thresh)
        return Instances(size, **fields)

    # ------------------------------------------------------------------ NumPy / file layer
    def predict(
        self,
        image: np.ndarray | str | Path,
        *,
        score_thresh: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str | int] | str | None = None,
    ) -> Instances:
        """Instances in one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB, or the path of an image file.
            score_thresh, max_detections, classes: override the predictor's defaults for this call.

        Returns:
            :class:`Instances` of the image: ``boxes`` (K, 4) XYXY pixels, ``labels``, ``scores``,
            masks (``to_rles()`` / ``to_dense_masks()``); ``class_names_of(inst)`` names the labels.
        """
        if isinstance(image, str | Path):
            image = read_image(image)
        tensor = image_to_tensor(image)
        label_filter = None if classes is None else resolve_classes(classes, self.class_names)
        return self.predict_torch(
            [tensor], score_thresh=score_thresh, max_detections=max_detections, classes=label_filter
        )[0]

    # ------------------------------------------------------------------ panoptic
    @property
    def is_panoptic(self) -> bool:
        """Whether the model gives panoptic outputs (``forward_panoptic`` and stuff classes in its meta)."""
        return hasattr(self.model, "forward_panoptic") and bool(self.meta.get("panoptic"))

    @property
    def fusion(self) -> FusionParams:
        """The panoptic fusion parameters: the model's own, else those of its spec's keywords."""
        own = getattr(self.model, "fusion", None)
        if isinstance(own, FusionParams):
            return own
        if self.meta.get("fusion"):  # an export's metadata
            return FusionParams.from_kwargs(self.meta["fusion"])
        return FusionParams.from_kwargs((self.meta.get("model_spec") or {}).get("kwargs"))

    def predict_panoptic_torch(
        self, images: list[Tensor], *, score_thresh: float | None = None
    ) -> list[PanopticResult]:
        """Panoptic segmentations of ``images`` (list of Tensor[3, H, W] RGB in [0, 1]), one
        :class:`PanopticResult` per image: the instances (masks at ``mask_thresh``) and the semantic
        map fused by :func:`instaseg.ops.panoptic_fusion.panoptic_fusion` with :attr:`fusion`.
        ``score_thresh`` overrides the fusion's ``instances_score_thresh``. Category ids are the
        dataset's original ids (things from ``category_ids``, stuff from the ``panoptic`` meta)."""
        if not self.is_panoptic:
            raise ConfigError(f"model {self.name} is not a panoptic model (no semantic branch or stuff ids)")
        fusion = self.fusion
        thr = fusion.instances_score_thresh if score_thresh is None else float(score_thresh)
        stuff = [int(c) for c in self.meta["panoptic"]["stuff_category_ids"]]
        batch = [img.to(self.device, torch.float32) for img in images]
        with self.lock, torch.inference_mode(), torch.autocast(self.device.type, enabled=self.autocast):
            raw = self.model.forward_panoptic(batch)
        out = []
        for img, det in zip(images, raw, strict=True):
            det = dict(det)
            sem = _to_cpu_tensor(det.pop("sem_seg")).long().numpy()
            size = (int(img.shape[-2]), int(img.shape[-1]))
            inst = self._instances(det, size, thr, self.max_detections, None)
            cats = [self.category_id(int(label)) for label in inst.labels.tolist()]
            out.append(panoptic_fusion(
                inst.to_dense_masks(self.mask_thresh), inst.scores.numpy(), cats, sem, stuff,
                overlap_threshold=fusion.overlap_threshold, stuff_area_thresh=fusion.stuff_area_thresh,
                instances_score_thresh=thr,
            ))
        return out

    def predict_panoptic(
        self, image: np.ndarray | str | Path, *, score_thresh: float | None = None
    ) -> PanopticResult:
        """The panoptic segmentation of one image (``(H, W, 3)`` uint8 RGB or a path):
        ``result.id_map`` int32 (H, W), 0 = VOID, and ``result.segments`` (category, isthing, score)."""
        if isinstance(image, str | Path):
            image = read_image(image)
        return self.predict_panoptic_torch([image_to_tensor(image)], score_thresh=score_thresh)[0]

    def category_names(self) -> dict[int, str]:
        """Original category id -> name, things and (for panoptic models) stuff."""
        names = {self.category_id(i): n for i, n in enumerate(self.class_names) if i}
        for cat in (self.meta.get("panoptic") or {}).get("categories") or []:
            names[int(cat["id"])] = str(cat["name"])
        return names

    def predict_tiled(
        self,
        image: np.ndarray | str | Path,
        *,
        tile: int = 640,
        overlap: float = 0.2,
        batch: int = 4,
        global_pass: bool = False,
        merge: str = "nmm",
        match: str = "ios",
        match_thresh: float = 0.5,
        class_agnostic: bool = False,
        score_thresh: float | None = None,
        classes: Sequence[str | int] | str | None = None,
    ) -> Instances:
        """Instances in a large image from overlapping tiles (SAHI's idea; :mod:`instaseg.ops.tiling`).

        The image is cut into ``tile x tile`` windows overlapping by ``overlap`` (a fraction of the
        tile), the model runs on ``batch`` tiles per forward pass at native resolution, and the
        detections are brought back to image pixels and merged across tile borders (``merge``
        ``"nmm"`` ORs matched masks, ``"nms"`` keeps the best; matched when ``match`` ``"ios"``/``"iou"``
        of the masks is ``>= match_thresh``, same class only unless ``class_agnostic``). ``global_pass``
        adds one pass over the whole image shrunk to ``tile`` pixels on its longer side, for objects
        bigger than a tile.
        ``max_detections`` applies per tile (and to the global pass), not to the merged result.

        Memory stays bounded: masks are kept as box-sized crops, never ``H x W`` per detection, and
        each tile's tensor is built only for its batch. Returns :class:`Instances` of the full image
        with boxes (K, 4) XYXY pixels and masks as COCO RLEs (``rles``), in decreasing score.
        Raises ConfigError for a bad ``tile``/``overlap``/``batch``/``merge``/``match``.
        """
        check_tiling(tile, overlap, batch, merge, match)
        if isinstance(image, str | Path):
            image = read_image(image)
        height, width = image.shape[:2]
        label_filter = None if classes is None else resolve_classes(classes, self.class_names)
        opts = {"score_thresh": score_thresh, "classes": label_filter}
        boxes, scores, labels, crops = [], [], [], []
        windows = tiling.tile_grid(height, width, tile, overlap)
        for start in range(0, len(windows), batch):
            chunk = windows[start : start + batch]
            tensors = [image_to_tensor(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in chunk]
            for (x0, y0, _, _), inst in zip(chunk, self.predict_torch(tensors, **opts), strict=True):
                self._collect(inst, (x0, y0), 1.0, (height, width), boxes, scores, labels, crops)
        if global_pass and max(height, width) > tile:
            import cv2

            scale = tile / max(height, width)
            size = (max(round(width * scale), 1), max(round(height * scale), 1))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            inst = self.predict_torch([image_to_tensor(small)], **opts)[0]
            self._collect(inst, (0, 0), width / size[0], (height, width), boxes, scores, labels, crops)
        has_masks = all(c is not None for c in crops)
        merged = tiling.merge_detections(
            np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
            np.concatenate(scores) if scores else np.zeros(0, np.float32),
            np.concatenate(labels) if labels else np.zeros(0, np.int64),
            [c for c in crops if c is not None] if has_masks else None,
            mode=merge, metric=match, threshold=match_thresh, class_agnostic=class_agnostic,
        )
        kept_boxes, kept_scores, kept_labels, kept_crops = merged
        rles = tiling.crops_to_rles(kept_crops, height, width) if kept_crops is not None else None
        return Instances((height, width), boxes=torch.from_numpy(kept_boxes), rles=rles,
                         labels=torch.from_numpy(kept_labels), scores=torch.from_numpy(kept_scores))

    def _collect(
        self, inst: Instances, offset: tuple[int, int], scale: float, image_size: tuple[int, int],
        boxes: list, scores: list, labels: list, crops: list,
    ) -> None:
        """Append one tile's (or the shrunk global view's) detections in full-image pixels; masks as
        crops (``None`` for a box-only model)."""
        full_boxes = tiling.shift_boxes(inst.boxes.numpy(), offset[0], offset[1], scale)
        boxes.append(full_boxes)
        scores.append(inst.scores.numpy())
        labels.append(inst.labels.numpy())
        th, tw = inst.image_size
        if inst.mask_lowres is not None:
            # box-relative masks stay valid on the moved/scaled box: paste at full resolution there
            if scale == 1.0:
                crops.extend(tiling.lowres_to_crops(inst.mask_lowres.numpy(), inst.boxes.numpy(), th, tw,
                                                    offset, self.mask_thresh))
            else:
                crops.extend(tiling.lowres_to_crops(inst.mask_lowres.numpy(), full_boxes, *image_size,
                                                    threshold=self.mask_thresh))
        elif inst.rles is not None:
            for rle in inst.rles:
                crop, (x0, y0, x1, y1) = tiling.mask_to_crop(rle_decode(rle))
                if scale != 1.0 and crop.size:
                    import cv2

                    x0, y0 = int(x0 * scale), int(y0 * scale)
                    x1 = min(max(int(np.ceil(x1 * scale)), x0 + 1), image_size[1])
                    y1 = min(max(int(np.ceil(y1 * scale)), y0 + 1), image_size[0])
                    crop = cv2.resize(crop.astype(np.uint8), (x1 - x0, y1 - y0),
                                      interpolation=cv2.INTER_NEAREST).astype(bool)
                crops.append((crop, (x0 + offset[0], y0 + offset[1], x1 + offset[0], y1 + offset[1])))
        else:
            crops.extend([None] * len(inst))

    def class_names_of(self, inst: Instances) -> list[str]:
        """The class name of each instance of ``inst``."""
        return [self._name(int(label)) for label in inst.labels.tolist()]

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


def check_tiling(tile: int, overlap: float, batch: int = 1, merge: str = "nmm", match: str = "ios") -> None:
    """ConfigError for tiling options :meth:`Predictor.predict_tiled` cannot use."""
    if tile < 32:
        raise ConfigError(f"--tile must be >= 32 pixels, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"--overlap must be in [0, 1), got {overlap}")
    if batch < 1:
        raise ConfigError(f"tile batch must be >= 1, got {batch}")
    if merge not in tiling.MERGE_MODES or match not in tiling.MATCH_METRICS:
        raise ConfigError(f"merge must be nmm|nms and match ios|iou, got {merge!r}, {match!r}")


def check_device(device: str) -> None:
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


def load(source: str | Path, *, device: str = "cpu", **kwargs: Any) -> Predictor:
    """A :class:`Predictor` for ``source``: a run directory, a checkpoint file or an exported ``.onnx``
    file. ``kwargs`` are Predictor options (``score_thresh``, ``max_detections``, ``classes``...).

    >>> pred = load("runs/train", score_thresh=0.5)
    >>> inst = pred.predict("image.jpg")       # Instances: boxes, labels, scores, to_rles()
    """
    if Path(source).suffix.lower() == ".onnx":
        return Predictor.load(backend="onnxruntime", model=source, device=device, **kwargs)
    return Predictor.load(checkpoint=source, device=device, **kwargs)
