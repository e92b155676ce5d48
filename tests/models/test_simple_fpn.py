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
