"""Checks shared by the export tests."""

from __future__ import annotations

from typing import Any

import torch


def assert_empty_detections(out: dict[str, Any], height: int, width: int) -> None:
    """``out`` (one image's result of an exported model) is empty and well-formed: typed, shaped
    tensors with zero rows and full-size masks ``(0, 1, height, width)``."""
    assert out["boxes"].shape == (0, 4) and out["boxes"].dtype == torch.float32
    assert out["scores"].shape == (0,) and out["labels"].shape == (0,) and out["labels"].dtype == torch.int64
    assert out["masks"].shape == (0, 1, height, width)
