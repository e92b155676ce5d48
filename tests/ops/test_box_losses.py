"""Box-supervised mask losses: low for the object's mask, high for an empty or wrong one."""

from __future__ import annotations

import torch

from instaseg.ops.box_losses import (
    box_supervised_losses,
    boxes_to_masks,
    color_similarity,
    inside_loss,
    pairwise_loss,
    projection_loss,
    rgb_to_lab,
)


def _scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A clean image (1, 3, 32, 32): grey background, a red disc; the disc's mask and tight box mask."""
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    disc = ((yy - 16) ** 2 + (xx - 15) ** 2) <= 8**2
    image = torch.full((1, 3, 32, 32), 0.5)
    image[0, :, disc] = torch.tensor([0.9, 0.1, 0.1])[:, None]
    ys, xs = torch.nonzero(disc, as_tuple=True)
    box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
    return image, disc[None].float(), boxes_to_masks(box, 32, 32)


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return (mask * 2 - 1) * 8.0  # confident: sigmoid(+-8) = 0.9997 / 0.0003


def test_boxes_to_masks_rasterises_pixel_centres() -> None:
    m = boxes_to_masks(torch.tensor([[1.0, 2.0, 4.0, 3.0], [5.2, 5.2, 5.4, 5.4]]), 8, 8)
    assert m.shape == (2, 8, 8) and m[0].sum() == 3 and m[0, 2, 1:4].all()
    assert m[1].sum() == 1 and m[1, 5, 5] == 1  # a sub-pixel box still covers its pixel


def test_projection_loss_zero_for_the_object_high_for_empty() -> None:
    _, disc, box = _scene()
    obj = projection_loss(_logits(disc), box)
    assert obj.shape == (1,) and obj.item() < 0.01
    assert projection_loss(_logits(box), box).item() < 0.01  # the box itself projects the same
    assert projection_loss(_logits(torch.zeros_like(disc)), box).item() > 1.9  # two dice losses of ~1
    half = disc.clone()
    half[:, :, 16:] = 0
    assert projection_loss(_logits(half), box).item() > 0.1


def test_projection_loss_still_pulls_a_saturated_all_ones_mask() -> None:
    # a mask head driven to "everything is object" (logits +12) must still be pushed back outside the
    # box; BoxInst's dice alone has no gradient left there (it goes through a saturated sigmoid)
    _, _, box = _scene()
    grads = {}
    for weight in (0.0, 1.0):
        logits = (12.0 + 0.01 * torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0)))
        logits.requires_grad_(True)
        projection_loss(logits, box, bce_weight=weight).sum().backward()
        grads[weight] = logits.grad.abs().max().item()
    assert grads[0.0] < 1e-4 < 0.01 < grads[1.0]


def test_similarity_given_once_equals_images() -> None:
    image, disc, box = _scene()
    logits = _logits(disc)
    a = box_supervised_losses(logits, box, image)
    b = box_supervised_losses(logits, box, None, similarity=color_similarity(image))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pairwise_loss_prefers_the_object_over_the_box() -> None:
    image, disc, box = _scene()
    sim = color_similarity(image)
    assert sim.shape == (1, 8, 32, 32) and 0 < sim.min() and sim.max() <= 1
    obj = pairwise_loss(_logits(disc), sim, box)
    filled = pairwise_loss(_logits(box), sim, box)  # cuts similar-colour edges at the box border
    noisy = disc.clone()
    noisy[0, 10:14, 12:18] = 0  # a hole in the object
    hole = pairwise_loss(_logits(noisy), sim, box)
    assert obj.item() < 0.01 < filled.item() and obj.item() < hole.item()


def test_box_supervised_losses_rank_masks_and_handle_no_instances() -> None:
    image, disc, box = _scene()
    def total(mask: torch.Tensor) -> float:
        return sum(v.item() for v in box_supervised_losses(_logits(mask), box, image).values())
    assert total(disc) < 0.05 < total(box) < total(torch.zeros_like(disc))
    empty = torch.zeros(0, 8, 8, requires_grad=True)
    losses = box_supervised_losses(empty, torch.zeros(0, 8, 8), torch.zeros(0, 3, 8, 8))
    sum(losses.values()).backward()
    assert empty.grad is not None and all(v.item() == 0 for v in losses.values())


def test_inside_loss_is_a_weak_pull_towards_the_box() -> None:
    image, disc, box = _scene()
    assert inside_loss(_logits(box), box).item() < 0.01
    # only pixels inside the box count: the disc leaves the box's corners as background at logit
    # -8, each costing ~8
    corners = 1 - disc.sum() / box.sum()
    assert abs(inside_loss(_logits(disc), box).item() - 8 * corners.item()) < 0.01
    outside = _logits(disc) + 20.0 * (1 - box)
    assert torch.allclose(inside_loss(outside, box), inside_loss(_logits(disc), box))
    # at the weight Mask R-CNN uses (0.1) the colour-aware terms still prefer the object to its box
    def total(mask: torch.Tensor) -> float:
        losses = box_supervised_losses(_logits(mask), box, image, inside_weight=0.1)
        return sum(v.item() for v in losses.values())
    assert total(disc) < total(box) < total(torch.zeros_like(disc))
    # and an undecided head (all logits 0) is pulled up inside the box, not outside it
    logits = torch.zeros(1, 32, 32, requires_grad=True)
    box_supervised_losses(logits, box, image, inside_weight=0.1)["loss_mask_inside"].backward()
    assert (logits.grad[box > 0] < 0).all() and (logits.grad[box == 0] == 0).all()


def test_rgb_to_lab_reference_colours() -> None:
    lab = rgb_to_lab(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])[:, :, None, None])
    lab = lab[..., 0, 0]
    assert torch.allclose(lab[0], torch.tensor([100.0, 0.0, 0.0]), atol=0.1)  # white
    assert torch.allclose(lab[1], torch.zeros(3), atol=0.1)  # black
    assert torch.allclose(lab[2], torch.tensor([53.24, 80.09, 67.20]), atol=0.3)  # sRGB red (CIE D65)
