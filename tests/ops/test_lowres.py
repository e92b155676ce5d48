"""The low-resolution mask path gives the same detections as the model's own forward."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from instaseg.models import get_model
from instaseg.ops.lowres import lowres_inference, supports_lowres
from instaseg.ops.paste import paste_masks_to_rles


def test_rcnn_lowres_matches_full_forward() -> None:
    import instaseg.models.zoo  # noqa: F401  (registers the builders)

    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim", num_classes=3, score_thresh=0.0).eval()
    assert supports_lowres(model)
    image = torch.rand(3, 90, 150)
    with torch.inference_mode():
        full = model([image])[0]
    low = lowres_inference(model, [image])[0]
    assert "mask_lowres" in low and low["mask_lowres"].shape[1:] == (28, 28)
    torch.testing.assert_close(low["boxes"], full["boxes"])
    torch.testing.assert_close(low["scores"], full["scores"])
    assert torch.equal(low["labels"], full["labels"])
    # The low-res masks are exactly what torchvision would have pasted at full size.
    pasted = paste_masks_in_image(low["mask_lowres"][:, None], low["boxes"], (90, 150))
    torch.testing.assert_close(pasted, full["masks"])
    rles = paste_masks_to_rles(low["mask_lowres"].numpy(), low["boxes"].numpy(), 90, 150)
    assert len(rles) == len(full["boxes"]) and all(r["size"] == [90, 150] for r in rles)


def test_plain_callables_fall_back_to_their_forward() -> None:
    calls = []

    def model(images):
        calls.append(len(images))
        return [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0),
                 "masks": torch.zeros(0, 1, 5, 5)}]

    assert not supports_lowres(model)
    out = lowres_inference(model, [torch.zeros(3, 5, 5)])
    assert calls == [1] and "masks" in out[0]
    assert np.asarray(out[0]["masks"]).shape == (0, 1, 5, 5)
