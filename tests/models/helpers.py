"""Tiny synthetic inputs for model tests: rectangles and discs with exact masks, boxes and labels."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor


def make_sample(h: int = 64, w: int = 64, n: int = 2, seed: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
    """An image with ``n`` flat-coloured objects (label 1 = rectangle, 2 = disc) on a dark background."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, h, w, generator=g) * 0.1
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    labels = torch.zeros(n, dtype=torch.int64)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for i in range(n):
        size = int(torch.randint(h // 6, h // 3, (1,), generator=g))
        cy = int(torch.randint(size, h - size, (1,), generator=g))
        cx = int(torch.randint(size, w - size, (1,), generator=g))
        label = 1 + i % 2
        if label == 1:
            m = (yy - cy).abs().le(size) & (xx - cx).abs().le(size * 2 // 3)
        else:
            m = ((yy - cy) ** 2 + (xx - cx) ** 2) <= size**2
        m &= ~masks[:i].any(0)  # later objects are occluded by earlier ones
        masks[i] = m
        labels[i] = label
        colour = [0.9, 0.2, 0.2] if label == 1 else [0.2, 0.3, 0.9]
        image[:, m] = torch.tensor(colour)[:, None]
    keep = masks.flatten(1).any(1)
    masks, labels = masks[keep], labels[keep]
    return image, target_from_masks(masks, labels)


def target_from_masks(masks: Tensor, labels: Tensor) -> dict[str, Tensor]:
    boxes = torch.zeros(len(masks), 4)
    for i, m in enumerate(masks):
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    return {"boxes": boxes, "labels": labels, "masks": masks, "iscrowd": torch.zeros_like(labels)}


def empty_target(h: int, w: int) -> dict[str, Tensor]:
    return {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, h, w, dtype=torch.bool),
        "iscrowd": torch.zeros(0, dtype=torch.int64),
    }


@pytest.fixture()
def one_thread():
    """Run a test on one intra-op thread: these tensors are tiny, and on a shared 2-core machine
    extra OpenMP threads only spin (measured: a 40-step overfit went from ~6 s of CPU to minutes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
