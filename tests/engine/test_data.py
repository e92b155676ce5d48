"""Resumable seeded sampling, per-sample seeding, bad-sample skipping and batch resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaseg.data.base import InstanceDataset, Record
from instaseg.engine.data import (
    ResumableBatchSampler,
    SafeDataset,
    Skipped,
    collate_skipping,
    draw_scale,
    make_loader,
    resize_batch,
)
from instaseg.errors import DataError


class RandomDataset(InstanceDataset):
    """Each sample's image is random noise drawn from numpy's global RNG (stands for augmentation);
    index ``bad`` raises DataError like a corrupt file would."""

    def __init__(self, n: int = 10, bad: int = -1) -> None:
        super().__init__(None)
        self.n, self.bad = n, bad
        self.class_names = ["background", "thing"]
        self.category_ids = [0, 1]

    def __len__(self) -> int:
        return self.n

    def load_record(self, index: int) -> Record:
        if index == self.bad:
            raise DataError(f"/data/img_{index}.png", "cannot decode image")
        image = (np.random.rand(8, 8, 3) * 255).astype(np.uint8)
        masks = np.zeros((1, 8, 8), bool)
        masks[0, 2:5, 2:6] = True
        return Record(image, masks, np.array([1]), np.array([0]), index, f"/data/img_{index}.png")


def _flatten(loader) -> list[tuple[int, torch.Tensor]]:
    return [(t["image_id"], im) for b in loader for im, t in zip(b.images, b.targets, strict=True)]


def test_sampler_resumes_mid_epoch_and_shards() -> None:
    full = ResumableBatchSampler(11, batch_size=3, seed=5, epoch=2)
    rest = ResumableBatchSampler(11, batch_size=3, seed=5, epoch=2, start_batch=2)
    assert list(full)[2:] == list(rest) and len(rest) == 2
    assert sorted(full.indices()) == list(range(11))
    assert full.indices() != ResumableBatchSampler(11, batch_size=3, seed=5, epoch=3).indices()
    shards = [ResumableBatchSampler(11, batch_size=3, seed=5, rank=r, world_size=2).indices() for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 6 and set(shards[0]) | set(shards[1]) == set(range(11))


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_do_not_depend_on_workers_or_resume(workers: int) -> None:
    ds = SafeDataset(RandomDataset(10))
    ref = _flatten(make_loader(ds, batch_size=3, seed=1, epoch=0))
    got = _flatten(make_loader(ds, batch_size=3, seed=1, epoch=0, start_batch=1, num_workers=workers))
    assert [i for i, _ in got] == [i for i, _ in ref[3:]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, ref[3:], strict=True))
    # Loading leaves the global RNGs untouched.
    state = torch.get_rng_state()
    _flatten(make_loader(ds, batch_size=3, seed=1, epoch=1))
    assert torch.equal(state, torch.get_rng_state())


def test_bad_sample_is_skipped_and_named() -> None:
    ds = SafeDataset(RandomDataset(6, bad=3))
    batches = list(make_loader(ds, batch_size=6, seed=0, epoch=0))
    assert len(batches[0]) == 5
    assert [s.index for s in batches[0].skipped] == [3] and "/data/img_3.png" in batches[0].skipped[0].message
    with pytest.raises(DataError, match="img_3"):
        SafeDataset(RandomDataset(6, bad=3), on_error="raise")[(3, 0)]
    assert len(collate_skipping([Skipped(1, "x")])) == 0


def test_draw_scale_is_seeded() -> None:
    draws = [draw_scale([64, 96, 128], seed=0, iteration=i) for i in range(40)]
    assert set(draws) == {64, 96, 128}
    assert draws == [draw_scale([64, 96, 128], seed=0, iteration=i) for i in range(40)]
    assert draw_scale([], seed=0, iteration=3) is None


def test_resize_batch_moves_masks_and_boxes_together() -> None:
    image = torch.rand(3, 20, 40)
    masks = torch.zeros(1, 20, 40, dtype=torch.bool)
    masks[0, 4:10, 8:20] = True
    target = {
        "masks": masks,
        "boxes": torch.tensor([[8.0, 4.0, 20.0, 10.0]]),
        "labels": torch.tensor([1]),
        "area": torch.tensor([72.0]),
        "image_id": 0,
        "iscrowd": torch.tensor([0]),
    }
    (im,), (t,) = resize_batch([image], [target], 10)
    assert im.shape == (3, 10, 20) and t["masks"].shape == (1, 10, 20)
    assert torch.allclose(t["boxes"], torch.tensor([[4.0, 2.0, 10.0, 5.0]]))
    ys, xs = torch.nonzero(t["masks"][0], as_tuple=True)
    assert (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) == (4, 2, 10, 5)
    assert float(t["area"][0]) == 18.0
