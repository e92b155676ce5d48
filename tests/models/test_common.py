"""Shared input checks: clear ValueErrors, crowd instances dropped from training targets."""

from __future__ import annotations

import pytest
import torch

from instaseg.models.common import drop_crowd, validate_images, validate_targets
from tests.models.helpers import make_sample


def test_validate_images_rejects_wrong_inputs() -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        validate_images([])
    with pytest.raises(ValueError, match=r"image 1: expected Tensor\[3, H, W\]"):
        validate_images([torch.rand(3, 8, 8), torch.rand(8, 8)])
    with pytest.raises(ValueError, match="float"):
        validate_images([torch.zeros(3, 8, 8, dtype=torch.uint8)])


def test_validate_targets_names_image_and_field() -> None:
    image, target = make_sample(32, 32, seed=0)
    validate_targets([image], [target], 3)
    with pytest.raises(ValueError, match="one target dict per image"):
        validate_targets([image, image], [target], 3)
    with pytest.raises(ValueError, match="target 0: missing tensor 'masks'"):
        validate_targets([image], [{k: v for k, v in target.items() if k != "masks"}], 3)
    with pytest.raises(ValueError, match="NaN"):
        validate_targets([image], [{**target, "boxes": target["boxes"] * float("nan")}], 3)
    with pytest.raises(ValueError, match="labels must be integer"):
        validate_targets([image], [{**target, "labels": target["labels"].float()}], 3)


def test_drop_crowd_removes_only_crowd_instances() -> None:
    _, target = make_sample(32, 32, n=2, seed=0)
    target["iscrowd"] = torch.tensor([1, 0])
    (out,) = drop_crowd([target])
    assert out["labels"].tolist() == target["labels"][1:].tolist()
    assert out["masks"].shape[0] == 1 and out["boxes"].shape == (1, 4)
    assert drop_crowd([{**target, "iscrowd": torch.tensor([0, 0])}])[0]["boxes"].shape == (2, 4)
