"""Test-time flips: the mirror's detections map back exactly, masks resample onto other boxes, and
the two views fuse by the documented rule; through the Predictor, an exact detector gives the same
detection with and without flips (so the mapping back is right)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instaseg.errors import ConfigError
from instaseg.ops.tta import fuse_detections, hflip_detections, resample_masks
from instaseg.predict.predictor import Predictor


def _det(boxes, labels, scores, masks) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores), "mask_lowres": torch.as_tensor(masks, dtype=torch.float32)}


def test_hflip_maps_boxes_and_mirrors_masks() -> None:
    m = torch.zeros(1, 4, 4)
    m[0, :, 0] = 1.0  # left column
    det = hflip_detections(_det([[10, 5, 30, 25]], [1], [0.9], m), width=100)
    assert det["boxes"].tolist() == [[70, 5, 90, 25]]
    assert det["mask_lowres"][0, :, 3].tolist() == [1, 1, 1, 1] and det["mask_lowres"][0, :, :3].sum() == 0
    back = hflip_detections(det, width=100)
    assert torch.equal(back["boxes"], torch.tensor([[10.0, 5, 30, 25]]))
    assert torch.equal(back["mask_lowres"], m)


def test_resample_onto_the_same_box_is_exact_and_a_shift_moves_the_mask() -> None:
    masks = torch.rand(3, 8, 8)
    boxes = torch.tensor([[0.0, 0, 16, 16], [3, 4, 11, 20], [5, 5, 6, 6]])
    torch.testing.assert_close(resample_masks(masks, boxes, boxes), masks)
    half = torch.zeros(1, 8, 8)
    half[0, :, 4:] = 1.0  # right half of box [0, 16]
    out = resample_masks(half, torch.tensor([[0.0, 0, 16, 16]]), torch.tensor([[8.0, 0, 24, 16]]))
    assert out[0, :, :4].min() == 1.0 and out[0, :, 4:].max() == 0.0  # now the left half, outside is 0


def test_fuse_matches_same_class_pairs_and_halves_lone_scores() -> None:
    ones, zeros = torch.ones(1, 4, 4), torch.zeros(1, 4, 4)
    a = _det([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1], [0.8, 0.6], torch.cat([ones, ones]))
    b = _det([[1, 0, 11, 10], [50, 50, 60, 60]], [1, 2], [0.6, 0.9], torch.cat([zeros, zeros]))
    f = fuse_detections(a, b)
    assert f["scores"].tolist() == pytest.approx([0.7, 0.45, 0.3])  # pair; b's class-2 alone; a's alone
    assert f["boxes"][0].tolist() == [0.5, 0, 10.5, 10] and f["labels"].tolist() == [1, 2, 1]
    assert 0.3 < f["mask_lowres"][0].mean() < 0.6  # the mean of an all-1 and an all-0 mask
    assert torch.equal(f["mask_lowres"][2], ones[0])  # a lone detection keeps its own mask
    empty = _det(np.zeros((0, 4)), [], [], np.zeros((0, 4, 4)))
    assert fuse_detections(empty, empty)["boxes"].shape == (0, 4)
    assert fuse_detections(a, empty)["scores"].tolist() == pytest.approx([0.4, 0.3])


class _Exact(torch.nn.Module):
    """Finds the bright pixels of each image exactly: their box and their mask on that box."""

    def forward_lowres(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for img in images:
            fg = img[0] > 0.5
            ys, xs = torch.nonzero(fg, as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            crop = fg[ys.min():ys.max() + 1, xs.min():xs.max() + 1].float()
            mask = F.interpolate(crop[None, None], size=(28, 28), mode="bilinear", align_corners=False)[0]
            out.append({"boxes": box, "labels": torch.tensor([1]), "scores": torch.tensor([0.9]),
                        "mask_lowres": mask})
        return out


def test_predictor_flips_give_the_exact_detection_back() -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    image[5:30, 8:20] = 255
    image[5:12, 20:44] = 255  # an L: not symmetric, so a wrong mapping back would not match
    plain = Predictor(_Exact(), ["background", "thing"], score_thresh=0.0).predict(image)
    flips = Predictor(_Exact(), ["background", "thing"], score_thresh=0.0, tta=True).predict(image)
    assert len(flips) == 1 and flips.scores.tolist() == pytest.approx([0.9])  # the views agreed
    torch.testing.assert_close(flips.boxes, plain.boxes)
    assert np.array_equal(flips.to_dense_masks(), plain.to_dense_masks())


def test_flips_need_box_relative_masks() -> None:
    class Dense(torch.nn.Module):
        def forward_lowres(self, images):
            return [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                     "scores": torch.zeros(0), "masks": torch.zeros(0, 1, 8, 8)} for _ in images]

    with pytest.raises(ConfigError, match="box-relative masks"):
        Predictor(Dense(), ["background", "thing"], tta=True).predict(np.zeros((8, 8, 3), np.uint8))
