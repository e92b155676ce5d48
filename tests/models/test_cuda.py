"""The model contract on a CUDA device: a training step and low-resolution inference per model family,
checked against the same model on the CPU. Runs only where torch sees a CUDA device."""

from __future__ import annotations

import math

import pytest
import torch

from instaseg.models import get_model
from instaseg.ops.lowres import lowres_inference
from tests.models.helpers import empty_target, make_sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FAMILIES = {
    "maskrcnn_r18_slim": {"min_size": 96, "max_size": 128},
    "simple_fpn": {"min_size": 96, "max_size": 128},
    "yolact_lite": {"input_size": 128},
    "solov2_lite": {"input_size": 128, "final_threshold": 0.0},
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_train_step_and_lowres_inference_on_cuda_match_cpu(name: str) -> None:
    torch.manual_seed(0)
    model = get_model(name, num_classes=3, **FAMILIES[name])
    cuda = torch.device("cuda")
    image, target = make_sample(96, 128, seed=1)
    model.cuda().train()
    targets = [{k: v.to(cuda) for k, v in t.items()} for t in (target, empty_target(80, 100))]
    losses = model([image.to(cuda), torch.rand(3, 80, 100, device=cuda)], targets)
    assert all(v.device.type == "cuda" and math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)

    model.eval()
    model.score_thresh = 0.0
    images = [torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(2)), torch.rand(3, 128, 70)]
    got = lowres_inference(model, [im.to(cuda) for im in images])
    want = lowres_inference(model.cpu(), images)
    for g, w in zip(got, want, strict=True):
        assert g["mask_lowres"].device.type == "cuda" and len(g["boxes"]) > 0
        assert not any(bool(torch.isnan(v.float()).any()) for v in g.values())
        assert g["mask_lowres"].shape[1:] == w["mask_lowres"].shape[1:]
        # the best detection is unambiguous: same score, box and mask on both devices
        assert abs(float(g["scores"][0]) - float(w["scores"][0])) < 1e-3
        assert float((g["boxes"][0].cpu() - w["boxes"][0]).abs().max()) < 0.5
        assert float((g["mask_lowres"][0].cpu() - w["mask_lowres"][0]).abs().mean()) < 1e-2
