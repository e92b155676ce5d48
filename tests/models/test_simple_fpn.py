"""simple_fpn: learns (overfits a few synthetic images) and produces real, separate instances."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from instaseg.models import get_model
from instaseg.models.simple_fpn import SimpleFPN
from tests.models.helpers import (
    make_sample,
    one_thread,  # noqa: F401  (fixture, used by pytestmark)
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_assignment_gives_every_object_a_location_and_prefers_smaller() -> None:
    model = get_model("simple_fpn", num_classes=3, fpn_channels=32)
    assert isinstance(model, SimpleFPN)
    points = torch.tensor([[x + 2.0, y + 2.0] for y in range(0, 64, 4) for x in range(0, 64, 4)])
    tiny = torch.tensor([[30.0, 30.0, 32.0, 32.0]])  # smaller than one stride: still gets its cell
    big = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    assigned = model._assign(points, torch.cat([big, tiny]))
    assert int((assigned == 1).sum()) >= 1
    assert int((assigned == 0).sum()) >= 4  # the centre region of the big box
    assert bool((assigned == -1).any())  # far corners are background
    assert bool((model._assign(points, torch.zeros(0, 4)) == -1).all())


@pytest.mark.slow
def test_overfits_a_few_images() -> None:
    torch.manual_seed(0)
    model = get_model("simple_fpn", num_classes=3, min_size=64, max_size=64, fpn_channels=64)
    images, targets = zip(*[make_sample(64, 64, seed=s) for s in range(2)], strict=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    history = []
    for _ in range(40):
        losses = model(list(images), list(targets))
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    first, last = sum(history[0].values()), sum(history[-1].values())
    assert last < 0.35 * first, (history[0], history[-1])
    assert history[-1]["loss_mask"] < 0.5 * history[0]["loss_mask"]
    model.eval()
    with torch.no_grad():
        outputs = model(list(images))
    for out, target in zip(outputs, targets, strict=True):
        n = len(target["labels"])
        top = out["scores"].argsort(descending=True)[:n]
        assert len(top) == n and float(out["scores"][top].min()) > 0.3
        iou = box_iou(out["boxes"][top], target["boxes"])
        assert float(iou.max(1).values.min()) > 0.5  # every confident box sits on an object
        # Each ground-truth object is found with its class and a mask that overlaps it well.
        for g in range(n):
            best = int(iou[:, g].argmax())
            assert int(out["labels"][top][best]) == int(target["labels"][g])
            pred = out["masks"][top][best, 0] > 0.5
            gt = target["masks"][g]
            assert float((pred & gt).sum() / (pred | gt).sum()) > 0.6


def test_inference_caps_candidates_at_top_k_and_handles_no_detections() -> None:
    torch.manual_seed(0)
    model = get_model("simple_fpn", num_classes=3, fpn_channels=32, min_size=64, max_size=96,
                      pre_nms_top_k=5).eval()
    with torch.no_grad():
        model.cls_logits.bias.zero_()
        model.cls_logits.weight.normal_(std=0.05)  # scores spread over 0..1
    images = [torch.rand(3, 64, 80), torch.rand(3, 90, 60)]
    model.score_thresh = 0.0
    with torch.no_grad():
        outs = model(images)  # a batch of two sizes
        first = model(images[:1])[0]  # alone: padded as in the candidates below
        batch, _ = model.transform(images[:1])
        logits = model._heads(model.backbone(batch.tensors)["0"])[0]
    all_scores = logits.sigmoid().flatten().sort(descending=True).values
    assert len(all_scores) > 5
    assert 0 < len(first["scores"]) <= 5  # NMS ran on the 5 best candidates only
    assert float(first["scores"].min()) >= float(all_scores[4]) - 1e-6
    for image, out in zip(images, outs, strict=True):
        assert out["masks"].shape == (len(out["boxes"]), 1, *image.shape[-2:])
        assert float(out["masks"].min()) >= 0 and float(out["masks"].max()) <= 1
        assert bool((out["boxes"][:, 2:] <= torch.tensor([image.shape[2], image.shape[1]]) + 1e-4).all())
    model.score_thresh = 1.0
    with torch.no_grad():
        empty = model(images[:1])[0]
    assert empty["boxes"].shape == (0, 4) and empty["scores"].shape == (0,)
    assert empty["labels"].shape == (0,) and empty["labels"].dtype == torch.int64
    assert empty["masks"].shape == (0, 1, 64, 80)
