"""Instances: equal-length fields, indexing every field at once, concatenation, mask conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaseg.structures.instances import Instances
from instaseg.structures.masks import rle_decode, rle_encode
from instaseg.structures.paste import paste_masks_dense, paste_masks_to_rles


def _lowres(k: int = 3) -> Instances:
    boxes = torch.tensor([[2.0, 3.0, 20.0, 15.0], [10.0, 10.0, 30.0, 40.0], [0.0, 0.0, 8.0, 8.0]])[:k]
    low = torch.zeros(k, 14, 14)
    low[:, 3:11, 3:11] = 1.0  # a centred square in each box
    return Instances(
        (48, 40), boxes=boxes, labels=torch.arange(1, k + 1), scores=torch.tensor([0.9, 0.5, 0.2])[:k],
        mask_lowres=low, track_ids=torch.tensor([7, 8, 9])[:k],
    )


def test_fields_and_length() -> None:
    inst = _lowres()
    assert len(inst) == 3 and inst.image_size == (48, 40) and inst.mask_kind == "lowres"
    assert inst.boxes.dtype == torch.float32 and inst.labels.dtype == torch.int64
    assert "num_instances=3" in repr(inst)


@pytest.mark.parametrize(
    ("index", "kept"),
    [(1, [1]), (-1, [2]), (slice(0, 2), [0, 1]), (torch.tensor([True, False, True]), [0, 2]),
     (torch.tensor([2, 0]), [2, 0]), ([1, 1], [1, 1]), (np.array([2]), [2])],
)
def test_indexing_indexes_every_field(index, kept) -> None:
    inst = _lowres()
    sub = inst[index]
    assert len(sub) == len(kept)
    assert sub.labels.tolist() == [k + 1 for k in kept]
    assert torch.equal(sub.boxes, inst.boxes[kept]) and torch.equal(sub.scores, inst.scores[kept])
    assert torch.equal(sub.mask_lowres, inst.mask_lowres[kept])  # type: ignore[index]
    assert sub.track_ids.tolist() == [7 + k for k in kept]  # type: ignore[union-attr]
    rles = inst.to_rles()
    assert sub.to_rles() == [rles[k] for k in kept]


def test_score_filter_by_bool_mask() -> None:
    inst = _lowres()
    assert inst[inst.scores >= 0.5].labels.tolist() == [1, 2]
    assert len(inst[inst.scores >= 0.95]) == 0


def test_bad_fields_and_indices_raise() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        Instances((4, 4), boxes=torch.zeros(2, 4), labels=torch.zeros(3), scores=torch.zeros(2))
    with pytest.raises(ValueError, match="not both"):
        Instances((4, 4), boxes=torch.zeros(0, 4), labels=torch.zeros(0), scores=torch.zeros(0),
                  mask_lowres=torch.zeros(0, 2, 2), rles=[])
    with pytest.raises(IndexError, match="out of range"):
        _lowres()[3]
    with pytest.raises(IndexError, match="bool mask"):
        _lowres()[torch.tensor([True, False])]
    with pytest.raises(ValueError, match="no masks"):
        Instances((4, 4), boxes=torch.zeros(1, 4), labels=torch.ones(1), scores=torch.ones(1)).to_rles()


def test_masks_paste_inside_boxes_like_paste_module() -> None:
    inst = _lowres()
    low, boxes = inst.mask_lowres.numpy(), inst.boxes.numpy()  # type: ignore[union-attr]
    assert inst.to_rles(0.5) == paste_masks_to_rles(low, boxes, 48, 40, 0.5)
    dense = inst.to_dense_masks(0.5)
    np.testing.assert_array_equal(dense, paste_masks_dense(low, boxes, 48, 40, 0.5))
    assert dense.shape == (3, 48, 40) and dense[0].any()
    ys, xs = np.nonzero(dense[1])
    assert xs.min() >= 10 and xs.max() < 30 and ys.min() >= 10 and ys.max() < 40  # inside its box
    frozen = inst.with_rles(0.5)
    assert frozen.mask_kind == "rle" and frozen.to_rles() == inst.to_rles(0.5)
    np.testing.assert_array_equal(frozen.to_dense_masks(), dense)


def test_from_dense_keeps_rles_and_cat() -> None:
    masks = np.zeros((2, 1, 6, 5), np.float32)
    masks[0, 0, 1:3, 1:4] = 0.8
    masks[1, 0, 4:, :2] = 0.5  # exactly at the threshold: foreground (>=)
    inst = Instances.from_dense((6, 5), boxes=torch.zeros(2, 4), labels=torch.tensor([1, 2]),
                                scores=torch.tensor([0.7, 0.6]), masks=masks, mask_thresh=0.5)
    assert inst.mask_kind == "rle"
    assert inst.to_rles() == [rle_encode(masks[0, 0] >= 0.5), rle_encode(masks[1, 0] >= 0.5)]
    np.testing.assert_array_equal(rle_decode(inst.to_rles()[1]), masks[1, 0] >= 0.5)
    both = Instances.cat([inst, inst[0], Instances.empty((6, 5))])
    assert len(both) == 3 and both.labels.tolist() == [1, 2, 1] and both.to_rles()[2] == inst.to_rles()[0]
    with pytest.raises(ValueError, match="image sizes differ"):
        Instances.cat([inst, Instances.empty((7, 5))])
    with pytest.raises(ValueError, match="different forms"):
        lowres = Instances((6, 5), boxes=torch.zeros(0, 4), labels=torch.zeros(0), scores=torch.zeros(0),
                           mask_lowres=torch.zeros(0, 2, 2))
        Instances.cat([inst, lowres])
