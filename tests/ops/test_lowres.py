"""The low-resolution mask path gives the same detections as the model's own forward."""

from __future__ import annotations

import pytest
import torch

from instaseg.models import get_model
from instaseg.ops.lowres import LowResDetector, lowres_inference
from instaseg.ops.masks import paste_in_image
from instaseg.structures.paste import paste_masks_dense, paste_masks_to_rles


def test_rcnn_lowres_matches_full_forward() -> None:
    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim", num_classes=3, score_thresh=0.0).eval()
    assert isinstance(model, LowResDetector)
    image = torch.rand(3, 90, 150)
    with torch.inference_mode():
        full = model([image])[0]
    low = lowres_inference(model, [image])[0]
    assert "mask_lowres" in low and low["mask_lowres"].shape[1:] == (28, 28)
    torch.testing.assert_close(low["boxes"], full["boxes"])
    torch.testing.assert_close(low["scores"], full["scores"])
    assert torch.equal(low["labels"], full["labels"])
    # forward(images) pastes exactly these low-res masks, as the predictor's RLEs do
    pasted = paste_in_image(low["mask_lowres"], low["boxes"], 90, 150)[:, None]
    torch.testing.assert_close(pasted, full["masks"])
    dense = paste_masks_dense(low["mask_lowres"].numpy(), low["boxes"].numpy(), 90, 150)
    assert (torch.from_numpy(dense) != (full["masks"][:, 0] >= 0.5)).float().mean() < 1e-4
    rles = paste_masks_to_rles(low["mask_lowres"].numpy(), low["boxes"].numpy(), 90, 150)
    assert len(rles) == len(full["boxes"]) and all(r["size"] == [90, 150] for r in rles)


def test_score_thresh_keeps_scores_at_or_above_it() -> None:
    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim", num_classes=3, score_thresh=0.0).eval()
    image = torch.rand(3, 64, 64)
    scores = lowres_inference(model, [image])[0]["scores"]
    assert len(scores) > 2
    model.score_thresh = float(scores[2])  # exactly the third score: it stays
    kept = lowres_inference(model, [image])[0]["scores"]
    assert float(kept.min()) == float(scores[2]) and len(kept) >= 3


def test_callables_without_the_contract_are_refused() -> None:
    def model(images):
        return [{"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 1, 5, 5)}]

    assert not isinstance(model, LowResDetector)
    with pytest.raises(TypeError, match="does not implement the instaseg model contract"):
        lowres_inference(model, [torch.zeros(3, 5, 5)])
