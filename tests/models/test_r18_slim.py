"""The CPU default model: builds small, trains and predicts with the detection contract."""

from __future__ import annotations

import math

import torch

from instaseg.models import get_model, list_models
from tests.models.helpers import empty_target, make_sample


def test_r18_slim_registered_and_forward() -> None:
    assert "maskrcnn_r18_slim" in list_models()
    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim", num_classes=3)
    images, targets = zip(*[make_sample(96, 128, seed=s) for s in range(2)], strict=True)
    model.train()
    losses = model(list(images), [*targets[:1], empty_target(96, 128)])
    expected = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert expected <= set(losses)
    assert all(math.isfinite(v.item()) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(list(images))
    assert len(out) == 2
    assert out[0]["masks"].shape[1:] == (1, 96, 128)
