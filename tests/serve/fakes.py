"""Test doubles: a tiny 'detector' that finds saturated red blobs, with full-size or low-res masks."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import torch
from torch import Tensor

CLASS_NAMES = ["background", "blob", "other"]


def red_blobs(image: Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mask (H, W) bool, box XYXY) of each red connected component of a [3, H, W] image in [0, 1]."""
    arr = image.detach().cpu().numpy()
    red = (arr[0] > 0.6) & (arr[1] < 0.4) & (arr[2] < 0.4)
    n, comp = cv2.connectedComponents(red.astype(np.uint8))
    out = []
    for k in range(1, n):
        m = comp == k
        ys, xs = np.nonzero(m)
        out.append((m, np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)))
    out.sort(key=lambda mb: -int(mb[0].sum()))  # biggest first
    return out


class BlobModel:
    """A detector on the model contract's inference side: ``forward_lowres`` gives 28 x 28 box-relative
    masks (calling it gives full-size masks, as an eval-mode model does). Blob k gets score 0.9 - 0.2 k
    and label 1 + (k % 2)."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.started = threading.Event()
        self.calls = 0

    def _dets(self, image: Tensor) -> tuple[list, dict[str, Tensor]]:
        self.calls += 1
        self.started.set()
        if self.delay:
            time.sleep(self.delay)
        blobs = red_blobs(image)
        k = len(blobs)
        det = {
            "boxes": torch.tensor(np.stack([b for _, b in blobs]) if k else np.zeros((0, 4), np.float32)),
            "labels": torch.tensor([1 + (i % 2) for i in range(k)], dtype=torch.int64),
            "scores": torch.tensor([0.9 - 0.2 * i for i in range(k)], dtype=torch.float32),
        }
        return blobs, det

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        out = []
        for image in images:
            blobs, det = self._dets(image)
            h, w = image.shape[-2:]
            masks = np.stack([m for m, _ in blobs]) if blobs else np.zeros((0, h, w), bool)
            det["masks"] = torch.from_numpy(masks.astype(np.float32))[:, None]
            out.append(det)
        return out

    def forward_lowres(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        out = []
        for image in images:
            blobs, det = self._dets(image)
            low = []
            for m, (x1, y1, x2, y2) in blobs:
                crop = m[int(y1) : int(y2), int(x1) : int(x2)].astype(np.float32)
                low.append(cv2.resize(crop, (28, 28), interpolation=cv2.INTER_LINEAR))
            det["mask_lowres"] = torch.from_numpy(np.stack(low) if low else np.zeros((0, 28, 28), np.float32))
            out.append(det)
        return out


def blob_image(h: int = 120, w: int = 160, blobs: tuple = ((40, 50, 18), (115, 60, 12))) -> np.ndarray:
    """uint8 RGB grey noise with red disks (cx, cy, r); also returns nothing else."""
    rng = np.random.default_rng(0)
    img = rng.integers(90, 140, (h, w, 3)).astype(np.uint8)
    for cx, cy, r in blobs:
        cv2.circle(img, (int(cx), int(cy)), int(r), (220, 30, 30), -1)
    return img


def disk_mask(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (int(cx), int(cy)), int(r), 1, -1)
    return m.astype(bool)
