"""Mask cropping/resampling and tensor-only resizing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from instaseg.ops.masks import crop_masks, downsample_masks, masks_in_boxes, paste_in_image
from instaseg.ops.resize import letterbox_image, letterbox_size, resize_shorter_side
from instaseg.structures.paste import paste_masks_dense


def test_crop_masks_zeroes_cells_outside_the_box() -> None:
    masks = torch.ones(1, 4, 4)
    out = crop_masks(masks, torch.tensor([[4.0, 0.0, 12.0, 8.0]]), stride=4.0)  # cells x 1..2, y 0..1
    expected = torch.zeros(4, 4)
    expected[0:2, 1:3] = 1
    assert torch.equal(out[0], expected)


def test_masks_in_boxes_pastes_back_to_the_map_mask() -> None:
    # a disc on a stride-4 map of a 128 px canvas, cut out of its box and pasted back
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    prob = torch.sigmoid(4 * (6 - ((yy - 14) ** 2 + (xx - 17) ** 2).sqrt()))[None]  # radius 6 cells
    box = torch.tensor([[40.0, 28.0, 100.0, 88.0]])  # the disc +- 1.5 cells, canvas px
    low = masks_in_boxes(prob, box, 4.0, 32)
    assert low.shape == (1, 32, 32)
    pasted = paste_masks_dense(low.numpy(), box.numpy(), 128, 128)[0]
    full = F.interpolate(prob[None], size=(128, 128), mode="bilinear", align_corners=False)[0, 0] >= 0.5
    inter = (torch.from_numpy(pasted) & full).sum()
    union = (torch.from_numpy(pasted) | full).sum()
    assert float(inter / union) >= 0.98


def test_downsample_masks_area_average() -> None:
    masks = torch.zeros(1, 4, 4)
    masks[0, :2, :2] = 1
    assert torch.equal(downsample_masks(masks, (2, 2))[0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert downsample_masks(torch.zeros(0, 4, 4), (2, 2)).shape == (0, 2, 2)


def test_letterbox_image_scales_longer_side_and_pads() -> None:
    image = torch.rand(3, 30, 60)
    canvas, scale = letterbox_image(image, 64)
    assert canvas.shape == (3, 64, 64) and scale.dtype == torch.float32
    assert float(scale) == float(torch.tensor(64 / 60, dtype=torch.float32))
    assert letterbox_size(30, 60, 64) == (32, 64, 64 / 60)
    assert float(canvas[:, 32:].abs().max()) == 0  # zero padding below the image
    same = F.interpolate(image[None], size=(32, 64), mode="bilinear", align_corners=False)[0]
    assert torch.equal(canvas[:, :32], same)


def test_resize_shorter_side_uses_double_precision_sizes() -> None:
    # 479 px long side with max 128: 479 * (128 / 479) is 127.99999999999999 in double (eager
    # torchvision: 127), 128.00000283 in float32
    out = resize_shorter_side(torch.rand(3, 445, 479), 128, 128)
    assert tuple(out.shape[-2:]) == (118, 127)
    assert tuple(resize_shorter_side(torch.rand(3, 100, 200), 50, 1000).shape) == (3, 50, 100)


def test_paste_in_image_samples_like_the_rle_paste() -> None:
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 28, 28, generator=g)
    boxes = torch.tensor([[3.2, 4.7, 40.1, 33.3], [0.0, 0.0, 80.0, 60.0], [70.5, 50.5, 95.0, 75.0],
                          [10.0, 10.0, 10.4, 12.0], [-5.0, -3.0, 20.0, 20.0]])
    full = paste_in_image(masks, boxes, 60, 80)
    assert full.shape == (5, 60, 80) and float(full.min()) >= 0 and float(full.max()) <= 1
    dense = torch.from_numpy(paste_masks_dense(masks.numpy(), boxes.numpy(), 60, 80))
    assert int(((full >= 0.5) != dense).sum()) <= 2  # float rounding at exactly 0.5 at most
    inside = torch.zeros(60, 80, dtype=torch.bool)
    inside[4:34, 3:41] = True
    assert not bool((full[0] > 0)[~inside].any())  # nothing outside the box's pixel window
    assert paste_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), 60, 80).shape == (0, 60, 80)
