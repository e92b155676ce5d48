"""The synthetic shapes dataset: determinism, disjoint splits, exact visible masks, schema."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instaseg.data.base import validate_sample
from instaseg.data.shapes import ShapesDataset, render_shapes
from instaseg.errors import ConfigError


def test_deterministic_per_index() -> None:
    a = ShapesDataset(20, 64).load_record(7)
    b = ShapesDataset(20, 64).load_record(7)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.labels, b.labels)
    c = ShapesDataset(20, 64, seed=1).load_record(7)
    assert not np.array_equal(a.image, c.image)


def test_val_differs_from_train() -> None:
    train = ShapesDataset(30, 64, split="train")
    val = ShapesDataset(30, 64, split="val")
    train_imgs = {train.load_record(i).image.tobytes() for i in range(30)}
    assert not any(val.load_record(i).image.tobytes() in train_imgs for i in range(30))


def test_masks_are_disjoint_visible_parts_and_match_pixels() -> None:
    ds = ShapesDataset(40, 96, min_visible=40)
    total = 0
    for i in range(40):
        rec = ds.load_record(i)
        n = len(rec.labels)
        total += n
        assert rec.image.shape == (96, 96, 3) and rec.image.dtype == np.uint8
        assert rec.masks.shape == (n, 96, 96) and rec.masks.dtype == bool
        assert set(rec.labels.tolist()) <= {1, 2, 3}
        # later shapes occlude earlier ones: visible parts never overlap
        assert (rec.masks.sum(0) <= 1).all()
        assert (rec.masks.sum((1, 2)) >= 40).all()
        # each instance is one flat colour (plus +-8 noise), so its pixels are tightly clustered
        for m in rec.masks:
            pix = rec.image[m].astype(np.float32)
            assert pix.std(0).max() < 8
    assert total >= 40  # at least one object per image


def test_dropped_shapes_vanish_from_image() -> None:
    # With a huge min_visible everything but the unoccluded shapes is removed, and what remains in the
    # image outside the masks must be background texture, not leftover flat shape colour.
    rng = np.random.default_rng(3)
    image, masks, labels = render_shapes(rng, 64, max_objects=6, min_visible=10**6)
    assert masks.shape == (0, 64, 64) and labels.shape == (0,)
    assert image.shape == (64, 64, 3)


def test_sample_schema_and_classes() -> None:
    ds = ShapesDataset(5, 64)
    assert ds.class_names == ["background", "circle", "square", "triangle"]
    assert ds.category_ids == [0, 1, 2, 3] and ds.num_classes == 4
    image, target = ds[2]
    validate_sample(image, target)
    assert ds.image_info(2) == {"id": 2, "file_name": "shapes_train_000002.png", "height": 64, "width": 64}
    assert target["image_id"] == 2


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="split"):
        ShapesDataset(5, 64, split="holdout")
    with pytest.raises(ConfigError, match="image_size"):
        ShapesDataset(5, 8)
    with pytest.raises(IndexError):
        ShapesDataset(5, 64).load_record(5)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    index=st.integers(0, 10_000),
    size=st.sampled_from([48, 64, 128]),
    split=st.sampled_from(["train", "val"]),
)
def test_invariants_on_random_samples(seed: int, index: int, size: int, split: str) -> None:
    ds = ShapesDataset(index + 1, size, split=split, seed=seed, min_visible=30)
    rec = ds.load_record(index)
    n = len(rec.labels)
    assert rec.image.shape == (size, size, 3) and rec.masks.shape == (n, size, size)
    assert ((rec.labels >= 1) & (rec.labels <= 3)).all() and (rec.iscrowd == 0).all()
    assert (rec.masks.sum(0) <= 1).all() and (rec.masks.sum((1, 2)) >= 30).all()
    for m in rec.masks:  # one flat colour +- 8 of noise inside every visible part
        pix = rec.image[m].astype(np.int16)
        assert (pix.max(0) - pix.min(0)).max() <= 16 + 2
