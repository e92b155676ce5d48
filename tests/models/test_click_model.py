"""The click model: crop geometry, the simulated-click training step, and its ONNX export."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from instaseg.errors import ConfigError
from instaseg.models import get_model, model_task
from instaseg.models.click import (
    click_disks,
    crop_image,
    crop_matrix,
    paste_crop,
    square_around,
    to_crop_points,
    whole_image_box,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # Two threads on a busy 2-core machine spin against each other (seconds per conv); one is steady.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_registered_as_an_interactive_model():
    assert model_task("click_lite0") == "interactive"
    with pytest.raises(ConfigError, match="crop_size"):
        get_model("click_lite0", crop_size=100)


def test_crop_and_paste_back_round_trip():
    mask = np.zeros((90, 120), np.float32)
    mask[30:60, 40:100] = 1.0
    box = square_around(40, 30, 100, 60, expand=1.5)
    assert box[2] == pytest.approx(90.0)
    crop = crop_image(mask, box, 64)
    back = paste_crop(crop, box, 90, 120) > 0.5
    inter, union = (back & (mask > 0)).sum(), (back | (mask > 0)).sum()
    assert inter / union > 0.95
    # crop_matrix maps a crop pixel to the image point to_crop_points maps back
    pts = np.array([[50.0, 40.0], [99.0, 59.0]])
    c = to_crop_points(pts, box, 64)
    m = crop_matrix(box, 64)
    assert np.allclose(c @ m[:, :2].T + m[:, 2], pts)
    # the whole-image box is a centred square; outside the image the crop is zero
    x0, y0, side = whole_image_box(90, 120)
    assert (x0, y0, side) == (0.0, -15.0, 120.0)
    assert crop_image(np.ones((90, 120), np.float32), (x0, y0, side), 60)[0].max() == 0.0


def test_click_disks_positive_and_negative_channels():
    maps = click_disks(np.array([[10.0, 10.0], [30.0, 5.0], [-50.0, 3.0]]), np.array([1, 0, 1]), 40, 3)
    assert maps.shape == (2, 40, 40)
    assert maps[0, 10, 10] == 1 and maps[1, 5, 30] == 1 and maps[0, 5, 30] == 0
    assert maps[0].sum() == pytest.approx(np.pi * 9, rel=0.25)  # the off-crop click draws nothing


def test_training_step_simulates_clicks_and_backpropagates():
    torch.manual_seed(0)
    random.seed(0)
    model = get_model("click_lite0", crop_size=64, max_train_clicks=2, objects_per_image=3, sim_p=1.0).train()
    image = torch.rand(3, 80, 100)
    masks = torch.zeros(2, 80, 100, dtype=torch.bool)
    masks[0, 10:40, 20:60] = True
    masks[1, 50:52, 0:3] = True  # too small (6 px): never chosen
    target = {"masks": masks, "boxes": torch.tensor([[20.0, 10, 60, 40], [0, 50, 3, 52]]),
              "labels": torch.tensor([1, 1]), "iscrowd": torch.tensor([0, 0])}
    losses = model([image, image], [target, target])
    assert set(losses) == {"loss_mask", "loss_iou"}
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    # 3 crops per image (the one usable instance drawn again), each with a simulated session
    samples = [s for _ in range(4) for s in model._sample(image, target)]
    assert len(samples) == 12 and all(s.crop.shape == (3, 64, 64) for s in samples)
    assert any(s.refine and len(s.clicks) > 1 and s.prev.any() for s in samples)
    # whole-image crops (a session's first click) get one click and no previous mask
    assert all(len(s.clicks) == 1 and not s.prev.any() for s in samples if not s.refine)
    assert model.maps_in[2].weight.grad is not None and model.maps_in[2].weight.grad.abs().sum() > 0
    # a batch without any usable instance still gives a (zero) loss connected to the parameters
    empty = {**target, "masks": torch.zeros(0, 80, 100, dtype=torch.bool), "iscrowd": torch.zeros(0)}
    zero = model([image], [empty])
    assert float(sum(zero.values()).detach()) == 0.0
    with pytest.raises(ValueError, match="training path"):
        model([image])


def test_frozen_batchnorm_is_fused_without_changing_its_output():
    from torchvision.ops import FrozenBatchNorm2d

    from instaseg.models.click import _FusedFrozenBN

    model = get_model("click_lite0", crop_size=64, backbone_weights="imagenet")  # pretrained: frozen BN
    kinds = [type(m) for m in model.modules()]
    assert FrozenBatchNorm2d not in kinds and kinds.count(_FusedFrozenBN) > 10
    bn = FrozenBatchNorm2d(8)
    for name in ("weight", "bias", "running_mean"):
        getattr(bn, name).uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    fused = FrozenBatchNorm2d(8)
    fused.load_state_dict(bn.state_dict())
    fused.__class__ = _FusedFrozenBN
    x = torch.randn(2, 8, 5, 5)
    assert torch.allclose(fused(x), bn(x), atol=1e-5)


def test_onnx_export_matches_pytorch(tmp_path):
    from instaseg.export.click_onnx import export_click_onnx

    model = get_model("click_lite0", crop_size=64).eval()
    result = export_click_onnx(model, tmp_path / "click.onnx")
    assert result.path.is_file() and result.metadata["instaseg.task"] == "interactive"
    assert [c["batch"] for c in result.checks] == [1, 2]
    assert all(c["ok"] and c["max_abs_diff"] < 1e-4 for c in result.checks)
    with pytest.raises(ConfigError, match="exists"):
        export_click_onnx(model, tmp_path / "click.onnx")
