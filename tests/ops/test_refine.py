"""Mask refinement at paste time: the guided filter, edge snapping, maskness rescoring, the Predictor path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instaseg.ops.refine import (
    MaskRefinement,
    guide_image,
    guided_filter,
    pixel_radius,
    refine_instances,
    refine_mask,
)
from instaseg.predict.predictor import Predictor
from instaseg.structures.instances import Instances
from instaseg.structures.masks import rle_decode
from instaseg.structures.paste import paste_mask_crop, paste_mask_probs


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_colour_guidance_follows_an_edge_of_equal_brightness() -> None:
    # Red left half, green right half, both of intensity 0.5: only the colour guide sees the edge.
    rgb = np.zeros((32, 32, 3), np.float32)
    rgb[:, :16, 0] = 0.5
    rgb[:, 16:, 1] = 0.5
    truth = np.zeros((32, 32), bool)
    truth[:, 16:] = True
    shifted = np.zeros((32, 32), np.float32)
    shifted[:, 14:] = 1.0  # a blurred mask two pixels off the edge
    soft = cv2.GaussianBlur(shifted, (0, 0), 2.0)

    def wrong(x: np.ndarray) -> int:
        return int(((x >= 0.45) != truth).sum())

    assert wrong(guided_filter(rgb, soft, radius=3, eps=1e-4)) < wrong(soft)  # moved toward the edge
    assert wrong(guided_filter(rgb.sum(-1), soft, radius=3, eps=1e-4)) == wrong(soft)  # grey: no edge


def test_guided_filter_keeps_an_edge_the_guide_has_and_blurs_one_it_lacks() -> None:
    step = np.zeros((32, 32), np.float32)
    step[:, 16:] = 1.0
    same = guided_filter(step, step, radius=3, eps=1e-4)
    assert np.abs(same - step).max() < 0.01  # the guide has the edge: kept sharp
    flat = guided_filter(np.full((32, 32), 0.5, np.float32), step, radius=3, eps=1e-4)
    assert 0.3 < flat[16, 15] < 0.7 and 0.3 < flat[16, 16] < 0.7  # no edge in the guide: a box blur
    const = guided_filter(step, np.full((32, 32), 0.25, np.float32), radius=2, eps=1e-3)
    np.testing.assert_allclose(const, 0.25, atol=1e-5)


def test_paste_probs_over_a_larger_window_matches_the_box_crop_and_is_zero_outside() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((14, 14)).astype(np.float32)
    box = np.array([10.3, 5.7, 40.2, 33.9])
    crop, (x0, y0, x1, y1) = paste_mask_crop(mask, box, 60, 60, threshold=0.5)
    big = paste_mask_probs(mask, box, (x0 - 5, y0 - 5, x1 + 5, y1 + 5))
    assert np.array_equal(big[5:-5, 5:-5] >= 0.5, crop)
    assert big[:4].max() == 0.0 and big[:, :4].max() == 0.0  # beyond the box: the zero padding


def test_a_coarse_mask_snaps_to_the_object_edge() -> None:
    h = w = 120
    truth = _disk(h, w, 60, 60, 40)
    image = np.where(truth, 0.8, 0.2).astype(np.float32)
    # The object seen through a 7 x 7 grid on a slightly loose box: a blocky, blurred outline.
    box = np.array([17.0, 18.0, 103.0, 102.0])
    coarse = _disk(7, 7, 3.5, 3.5, 3.2).astype(np.float32)
    lowres = F.interpolate(torch.from_numpy(coarse)[None, None], size=(28, 28), mode="bilinear")[0, 0].numpy()
    plain = np.zeros((h, w), bool)
    crop, (x0, y0, x1, y1) = paste_mask_crop(lowres, box, h, w)
    plain[y0:y1, x0:x1] = crop
    rle, quality = refine_mask(lowres, box, image, MaskRefinement(radius=2.0))
    refined = rle_decode(rle).astype(bool)
    assert refined.shape == (h, w)
    assert _iou(refined, truth) > _iou(plain, truth) + 0.02
    assert _iou(refined, truth) > 0.93
    assert 0.5 < quality <= 1.0


def test_pixel_radius_is_counted_in_mask_cells() -> None:
    p = MaskRefinement(radius=1.0)
    assert pixel_radius(np.array([0, 0, 280, 280]), 28, p) == 10
    assert pixel_radius(np.array([0, 0, 280, 280]), 28, MaskRefinement(radius=1.5)) == 15
    assert pixel_radius(np.array([0, 0, 5, 5]), 28, p) == 1  # at least one pixel
    assert pixel_radius(np.array([0, 0, 2800, 2800]), 28, p) == p.max_radius
    with pytest.raises(ValueError, match="threshold"):
        MaskRefinement(threshold=1.5)


def test_refine_instances_rescores_by_mask_quality_and_resorts() -> None:
    h = w = 64
    image = np.zeros((h, w), np.float32)
    image[8:40, 8:40] = 1.0
    crisp = np.zeros((28, 28), np.float32)
    crisp[2:26, 2:26] = 1.0
    hesitant = np.full((28, 28), 0.55, np.float32)  # barely above the threshold everywhere
    inst = Instances((h, w), boxes=torch.tensor([[8.0, 8, 40, 40], [8.0, 8, 40, 40]]),
                     labels=torch.tensor([1, 1]), scores=torch.tensor([0.9, 0.8]),
                     mask_lowres=torch.from_numpy(np.stack([hesitant, crisp])))
    out = refine_instances(inst, image, MaskRefinement())
    assert out.mask_kind == "rle" and len(out) == 2
    # The crisp mask now ranks first: 0.8 x ~1 beats 0.9 x ~0.55.
    assert out.scores[0] > out.scores[1]
    assert 0.7 < out.scores[0] <= 0.8 and out.scores[1] < 0.6
    plain = refine_instances(inst, image, MaskRefinement(rescore=False))
    assert plain.scores.tolist() == pytest.approx([0.9, 0.8])
    assert refine_instances(inst[:0], image, MaskRefinement()).mask_kind == "lowres"  # nothing to do
    with pytest.raises(ValueError, match="guide"):
        refine_instances(inst, image[:10], MaskRefinement())


def test_guide_image_accepts_both_layouts() -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 1] = 255
    a = guide_image(rgb)
    b = guide_image(rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)
    assert a.shape == b.shape == (4, 5, 3) and a[0, 0].tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_allclose(a, b, atol=1e-2)
    with pytest.raises(ValueError, match="expected"):
        guide_image(np.zeros((4, 5), np.float32))


class _Blurry(torch.nn.Module):
    """Finds the bright square of each image on a loose box with a soft, low-resolution mask."""

    def forward_lowres(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        mask = torch.zeros(28, 28)
        mask[4:24, 4:24] = 1.0
        mask = F.avg_pool2d(mask[None, None], 5, stride=1, padding=2)[0]
        return [{"boxes": torch.tensor([[6.0, 6.0, 46.0, 46.0]]), "labels": torch.tensor([1]),
                 "scores": torch.tensor([0.9]), "mask_lowres": mask} for _ in images]


def test_predictor_refines_masks_and_keeps_its_score_filter() -> None:
    image = np.zeros((52, 52, 3), np.uint8)
    image[12:40, 12:40] = 200
    truth = image[..., 0] > 0
    plain = Predictor(_Blurry(), ["background", "thing"], score_thresh=0.0).predict(image)
    refined = Predictor(_Blurry(), ["background", "thing"], score_thresh=0.0,
                        refine=MaskRefinement()).predict(image)
    assert refined.mask_kind == "rle"
    assert _iou(refined.to_dense_masks()[0], truth) > _iou(plain.to_dense_masks()[0], truth)
    assert refined.scores[0] < plain.scores[0]  # rescaled by the mask's mean probability
    strict = Predictor(_Blurry(), ["background", "thing"], score_thresh=0.89, refine=MaskRefinement())
    assert len(strict.predict(image)) == 0  # 0.9 x maskness falls below the threshold
