"""Copy-paste augmentation (occlusion bookkeeping) and few-shot subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instaseg.data.base import Record
from instaseg.data.build import build_dataset
from instaseg.data.copy_paste import CopyPasteDataset, copy_paste, few_shot_indices, few_shot_subset
from instaseg.data.transforms import build_transforms
from instaseg.errors import ConfigError


def _record(h: int, w: int, boxes: list[tuple[int, int, int, int]], colour: int, labels: list[int]) -> Record:
    image = np.zeros((h, w, 3), np.uint8)
    masks = np.zeros((len(boxes), h, w), bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, y1:y2, x1:x2] = True
        image[masks[k]] = colour
    return Record(image, masks, np.array(labels, np.int64), np.zeros(len(boxes), np.int64), 1, "dst.png")


def test_paste_covering_everything_drops_the_occluded() -> None:
    dst = _record(20, 20, [(2, 2, 8, 8), (12, 12, 18, 18)], 50, [1, 1])
    src = _record(20, 20, [(0, 0, 20, 20)], 200, [2])  # one instance filling the whole image
    out = copy_paste(dst, src, np.random.default_rng(0), scale=(1.0, 1.0))
    # the placement is random: whatever the pasted instance covers is taken from dst's instances
    cover = out.masks[-1]
    assert out.labels[-1] == 2 and (out.image[cover] == 200).all()
    for mask in out.masks[:-1]:
        assert not (mask & cover).any()  # no pixel is in two instances
    assert len(out.masks) == 1 + sum(int((m & ~cover).sum() >= 8) for m in dst.masks)
    assert dst.masks.sum() == 72  # the input record is not modified


def test_partial_occlusion_updates_mask_and_box() -> None:
    dst = _record(32, 32, [(4, 4, 28, 28)], 50, [1])
    src = _record(32, 32, [(0, 0, 16, 32)], 200, [1])
    rng = np.random.default_rng(3)
    out = copy_paste(dst, src, rng, scale=(0.5, 0.5))
    tf = build_transforms(True, image_size=32, crop_p=0, hflip_p=0, affine_p=0, noise_p=0, distortion_p=0)
    _, target = tf(out)
    visible = dst.masks[0] & ~out.masks[-1]
    assert target["masks"][0].sum() == visible.sum() < dst.masks[0].sum()
    ys, xs = np.nonzero(visible)
    assert target["boxes"][0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_copy_paste_dataset_is_seeded_and_checks_options() -> None:
    base = build_dataset("shapes:6:64", split="train")
    ds = CopyPasteDataset(base, p=1.0, scale=(0.8, 1.2))
    np.random.seed(5)
    a = ds.load_record(0)
    np.random.seed(5)
    b = ds.load_record(0)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    plain = base.load_record(0)
    assert len(a.masks) > len(plain.masks) or not np.array_equal(a.image, plain.image)
    with pytest.raises(ConfigError, match="copy_paste_p"):
        CopyPasteDataset(base, p=1.5)
    with pytest.raises(ConfigError, match="copy_paste_sclae"):
        CopyPasteDataset.from_options(base, {"copy_paste_sclae": [1, 2]})


def test_few_shot_is_k_per_class_and_fixed_by_seed() -> None:
    ds = build_dataset("shapes:40:32", split="train")
    idx = few_shot_indices(ds, 2, seed=0)
    assert idx == few_shot_indices(ds, 2, seed=0) and idx != few_shot_indices(ds, 2, seed=1)
    from instaseg.data._split import load_annotations

    for cls in range(1, ds.num_classes):
        assert sum(cls in load_annotations(ds, i)[1] for i in idx) >= 2
    assert len(idx) <= 2 * (ds.num_classes - 1)
    sub = few_shot_subset(ds, 2)
    assert len(sub) == len(idx) and sub.class_names == ds.class_names
    with pytest.raises(ConfigError):
        few_shot_indices(ds, 0)


def test_few_shot_pennfudan(shared_data: Path) -> None:
    ds = build_dataset(f"folder:{shared_data / 'pennfudan'}", split="train")
    assert few_shot_indices(ds, 5, seed=0) == few_shot_indices(ds, 5, seed=0)
    assert len(few_shot_indices(ds, 5, seed=0)) == 5  # one class: exactly K images
