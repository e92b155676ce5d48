"""Augmentation: albumentations 2.x pipelines that map a :class:`Record` to ``(image, target)``.

The train pipeline is RandomResizedCrop -> HorizontalFlip -> Affine (shift/scale/rotate) ->
one of Gauss/ISO/multiplicative noise -> one of elastic/grid/optical distortion; the eval pipeline
only resizes. Masks travel through albumentations as an ``(N, H, W)`` stack with nearest-neighbour
interpolation; afterwards boxes and areas are recomputed from the transformed masks and instances
whose mask vanished (or fell under ``min_area`` pixels) are dropped with their labels and iscrowd,
so the target always satisfies :func:`instaseg.data.base.validate_sample`.

Normalisation is off by default: every instaseg model normalises with ImageNet mean/std inside its
forward (like torchvision's ``GeneralizedRCNNTransform``), so the pipeline, the predictor and the
exported models all see the same raw RGB in [0, 1]. ``normalize=True`` applies albumentations'
``Normalize`` here instead, for models that do not normalise themselves; do not combine both.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from instaseg.data.base import Record
from instaseg.errors import ConfigError
from instaseg.structures.panoptic import SEM_IGNORE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

EvalResize = Literal["longest", "fixed", "none"]


@dataclass
class TransformOptions:
    """Every knob of the train/eval pipelines (the engine's ``data.augment`` config maps onto it).

    Probabilities are per sample; ``*_p = 0`` switches a step off. ``crop_scale`` is the fraction of
    the image area RandomResizedCrop keeps; ``affine_translate`` is a fraction of the image size and
    ``affine_rotate`` is in degrees. ``eval_resize``: ``"longest"`` scales the longest side to
    ``image_size`` (aspect kept), ``"fixed"`` resizes to ``image_size x image_size``, ``"none"`` keeps
    the image as is. ``min_area``: instances with fewer mask pixels after the transform are dropped.
    ``seed``: makes the pipeline reproducible in the main process (DataLoader workers reseed from
    torch's per-worker seed so that workers never repeat each other's augmentations).
    ``pack_masks``: send masks through albumentations bit-packed, 8 per uint8 plane (exact, since
    every geometric op uses nearest interpolation; ``False`` only to cross-check).
    """

    image_size: int = 512
    crop_p: float = 1.0
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    affine_p: float = 0.5
    affine_scale: tuple[float, float] = (0.9, 1.1)
    affine_translate: float = 0.0625
    affine_rotate: float = 15.0
    noise_p: float = 0.2
    distortion_p: float = 0.2
    eval_resize: EvalResize = "longest"
    normalize: bool = False
    min_area: float = 1.0
    seed: int | None = None
    pack_masks: bool = True

    def __post_init__(self) -> None:
        self.crop_scale = tuple(self.crop_scale)  # YAML gives lists
        self.crop_ratio = tuple(self.crop_ratio)
        self.affine_scale = tuple(self.affine_scale)
        if int(self.image_size) < 8:
            raise ConfigError(f"augment.image_size must be >= 8, got {self.image_size}")
        for f in fields(self):
            if f.name.endswith("_p") and not 0.0 <= float(getattr(self, f.name)) <= 1.0:
                raise ConfigError(f"augment.{f.name} must be in [0, 1], got {getattr(self, f.name)}")
        if self.eval_resize not in ("longest", "fixed", "none"):
            raise ConfigError(f"augment.eval_resize must be longest|fixed|none, got {self.eval_resize!r}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"augment.crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")


def _train_ops(o: TransformOptions) -> list[Any]:
    import albumentations as A
    import cv2

    size = int(o.image_size)
    nearest = cv2.INTER_NEAREST
    ops: list[Any] = []
    if o.crop_p > 0:
        ops.append(
            A.RandomResizedCrop(
                size=(size, size),
                scale=o.crop_scale,
                ratio=o.crop_ratio,
                mask_interpolation=nearest,
                p=o.crop_p,
            )
        )
    # Images the crop skipped still have to reach image_size so batches have bounded size.
    ops.append(A.LongestMaxSize(max_size=size, mask_interpolation=nearest))
    if o.hflip_p > 0:
        ops.append(A.HorizontalFlip(p=o.hflip_p))
    if o.affine_p > 0:
        ops.append(
            A.Affine(
                scale=o.affine_scale,
                translate_percent=(-o.affine_translate, o.affine_translate),
                rotate=(-o.affine_rotate, o.affine_rotate),
                mask_interpolation=nearest,
                border_mode=cv2.BORDER_CONSTANT,
                p=o.affine_p,
            )
        )
    if o.noise_p > 0:
        ops.append(
            A.OneOf(
                [
                    A.GaussNoise(std_range=(0.02, 0.08), p=1.0),
                    A.ISONoise(p=1.0),
                    A.MultiplicativeNoise(multiplier=(0.9, 1.1), p=1.0),
                ],
                p=o.noise_p,
            )
        )
    if o.distortion_p > 0:
        ops.append(
            A.OneOf(
                [
                    # approximate=True: a fast separable blur of the displacement field.
                    A.ElasticTransform(
                        alpha=30, sigma=6, approximate=True, mask_interpolation=nearest, p=1.0
                    ),
                    A.GridDistortion(distort_limit=(-0.2, 0.2), mask_interpolation=nearest, p=1.0),
                    A.OpticalDistortion(distort_limit=(-0.1, 0.1), mask_interpolation=nearest, p=1.0),
                ],
                p=o.distortion_p,
            )
        )
    return ops


def _eval_ops(o: TransformOptions) -> list[Any]:
    import albumentations as A
    import cv2

    size = int(o.image_size)
    if o.eval_resize == "longest":
        return [A.LongestMaxSize(max_size=size, mask_interpolation=cv2.INTER_NEAREST)]
    if o.eval_resize == "fixed":
        return [A.Resize(height=size, width=size, mask_interpolation=cv2.INTER_NEAREST)]
    return []


class InstanceTransform:
    """Callable ``Record -> (image, target)`` wrapping an albumentations ``Compose``.

    Picklable (the compose is rebuilt from the options after unpickling). Inside a DataLoader
    worker the random state is reseeded from ``torch.utils.data.get_worker_info().seed`` the first
    time the worker calls it, so workers (and epochs) draw different augmentations.
    """

    def __init__(self, train: bool, options: TransformOptions) -> None:
        self.train = train
        self.options = options
        self._build()

    def _build(self) -> None:
        import albumentations as A

        ops = _train_ops(self.options) if self.train else _eval_ops(self.options)
        if self.options.normalize:
            ops.append(A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0))
        self.compose = A.Compose(ops, seed=self.options.seed) if ops else None
        self._seeded_for: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"train": self.train, "options": asdict(self.options)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.train = state["train"]
        self.options = TransformOptions(**state["options"])
        self._build()

    def __repr__(self) -> str:
        return f"InstanceTransform(train={self.train}, options={self.options})"

    def set_random_seed(self, seed: int) -> None:
        """Reseed the augmentation RNGs now (e.g. per sample, so that results do not depend on the
        number of loader workers); the automatic per-worker reseed will not override it."""
        if self.compose is not None:
            self.compose.set_random_seed(int(seed) % (2**32))
        info = torch.utils.data.get_worker_info()
        if info is not None:
            self._seeded_for = (os.getpid(), int(info.seed))

    def _maybe_reseed(self) -> None:
        info = torch.utils.data.get_worker_info()
        if info is None or self.compose is None:
            return
        key = (os.getpid(), int(info.seed))
        if key != self._seeded_for:
            self.compose.set_random_seed(int(info.seed) % (2**32))
            self._seeded_for = key

    def __call__(self, rec: Record) -> tuple[Tensor, dict[str, Any]]:
        image = np.ascontiguousarray(rec.image)
        h, w = image.shape[:2]
        masks = np.asarray(rec.masks).reshape(-1, h, w)
        labels = np.asarray(rec.labels, dtype=np.int64).reshape(-1)
        iscrowd = np.asarray(rec.iscrowd, dtype=np.int64).reshape(-1)
        n = masks.shape[0]
        if labels.shape[0] != n or iscrowd.shape[0] != n:
            raise ValueError(
                f"{rec.file_name}: record has {n} masks, {labels.shape[0]} labels, {iscrowd.shape[0]} iscrowd"
            )
        sem_seg = rec.extra.get("sem_seg")
        if self.compose is not None:
            self._maybe_reseed()
            extra = {} if sem_seg is None else {"mask": encode_sem_seg(sem_seg, rec.file_name)}
            if n and self.options.pack_masks:
                # 8 masks per uint8 plane: nearest interpolation and zero fill copy pixel values
                # unchanged, so the bits survive every geometric op exactly, at 1/8 of the cost.
                out = self.compose(image=image, masks=pack_masks(masks), **extra)
                image = out["image"]
                masks = unpack_masks(np.asarray(out["masks"]).reshape(-1, *image.shape[:2]), n)
            elif n:
                out = self.compose(image=image, masks=masks.astype(np.uint8, copy=False), **extra)
                image = out["image"]
                masks = np.asarray(out["masks"]).reshape(n, *image.shape[:2])
            else:
                out = self.compose(image=image, **extra)
                image = out["image"]
                masks = np.zeros((0, *image.shape[:2]), dtype=bool)
            if sem_seg is not None:
                sem_seg = decode_sem_seg(np.asarray(out["mask"]))
        masks = masks.astype(bool, copy=False)
        boxes, area = boxes_and_areas(masks)
        # Drop instances the geometry removed (cropped away, flipped out, shrunk to nothing).
        keep = area >= max(float(self.options.min_area), 1.0)
        if not keep.all():
            masks, labels, iscrowd = masks[keep], labels[keep], iscrowd[keep]
            boxes, area = boxes[keep], area[keep]
        target = {
            "masks": torch.from_numpy(np.ascontiguousarray(masks)),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(np.ascontiguousarray(labels)),
            "image_id": int(rec.image_id),
            "area": torch.from_numpy(area),
            "iscrowd": torch.from_numpy(np.ascontiguousarray(iscrowd)),
        }
        if sem_seg is not None:
            target["sem_seg"] = torch.from_numpy(np.ascontiguousarray(sem_seg, dtype=np.int64))
        return _to_tensor(image), target


def encode_sem_seg(sem_seg: np.ndarray, file_name: str = "") -> np.ndarray:
    """int (H, W) ``sem_seg`` (0 = things, 1..S stuff, 255 = VOID) -> uint8 with VOID as 0 and every
    class shifted by one, so that the zero fill of padding, rotation and crops lands on VOID."""
    sem = np.asarray(sem_seg)
    valid = sem != SEM_IGNORE
    if valid.any() and (int(sem[valid].min()) < 0 or int(sem[valid].max()) > 253):
        raise ValueError(f"{file_name}: sem_seg values must lie in 0..253 or be {SEM_IGNORE} (VOID)")
    return np.where(valid, sem + 1, 0).astype(np.uint8)


def decode_sem_seg(encoded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_sem_seg`: uint8 (H, W) -> int64 (H, W) with VOID = 255."""
    enc = np.asarray(encoded).astype(np.int64)
    return np.where(enc == 0, SEM_IGNORE, enc - 1)


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """Pack bool ``masks`` (N, H, W) into uint8 planes (ceil(N/8), H, W): mask i is bit i % 8 of
    plane i // 8. Per-plane OpenCV adds, ~10x faster than ``np.packbits`` along axis 0; masks
    decoded by pycocotools are column-major planes, packed in that layout to avoid a transposing copy.
    """
    import cv2

    n, h, w = masks.shape
    column_major = n > 0 and not masks[0].flags.c_contiguous and masks[0].T.flags.c_contiguous
    src = masks.transpose(0, 2, 1) if column_major else np.ascontiguousarray(masks)
    bits = src.astype(bool, copy=False).view(np.uint8)
    packed = np.zeros(((n + 7) // 8, *src.shape[1:]), dtype=np.uint8)
    for i in range(n):
        plane = packed[i >> 3]
        # plane + bit * 2^k: exact, as the bits of one plane never collide (no saturation).
        cv2.addWeighted(plane, 1.0, bits[i], float(1 << (i & 7)), 0.0, dst=plane)
    return np.ascontiguousarray(packed.transpose(0, 2, 1)) if column_major else packed


def unpack_masks(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack_masks`: uint8 planes (G, H, W) -> bool masks (n, H, W)."""
    out = np.empty((n, *packed.shape[1:]), dtype=np.uint8)
    for i in range(n):
        np.right_shift(packed[i >> 3], i & 7, out=out[i])
        np.bitwise_and(out[i], 1, out=out[i])
    return out.view(bool)


def boxes_and_areas(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tight XYXY boxes (N, 4) float32 and pixel areas (N,) float32 of bool ``masks`` (N, H, W).

    Same convention as :func:`instaseg.structures.masks_to_boxes` (whole pixels: x2 = last column
    + 1; empty masks give zeros) and :func:`instaseg.structures.mask_area`, computed with OpenCV's
    per-mask kernels: on a 20-instance 512px sample they take ~1 ms where the torch reductions take
    ~50 ms, which matters in data-loader workers.
    """
    import cv2

    n = masks.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    area = np.zeros(n, dtype=np.float32)
    u8 = masks.view(np.uint8) if masks.dtype == bool else (masks != 0).view(np.uint8)
    for i in range(n):
        count = cv2.countNonZero(u8[i])
        if count:
            x, y, w, h = cv2.boundingRect(u8[i])
            boxes[i] = (x, y, x + w, y + h)
            area[i] = count
    return boxes, area


def _to_tensor(image: np.ndarray) -> Tensor:
    """HWC uint8 (or already-normalised float) -> float32 Tensor[3, H, W]; uint8 is scaled to [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    return t.float().contiguous()


def build_transforms(train: bool, *, image_size: int, **options: Any) -> InstanceTransform:
    """The train (augmenting) or eval (resize only) pipeline, as a picklable ``Record -> sample``.

    ``options`` are the fields of :class:`TransformOptions` (e.g. ``hflip_p=0``, ``normalize=True``,
    ``eval_resize="fixed"``, ``seed=0``); unknown names raise :class:`ConfigError`.
    """
    known = {f.name for f in fields(TransformOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        valid = sorted(known - {"image_size"})
        raise ConfigError(f"unknown augmentation option(s) {unknown}; known: {valid}")
    return InstanceTransform(bool(train), TransformOptions(image_size=int(image_size), **options))
