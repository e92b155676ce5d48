import numpy as np

from instaseg.data.base import record_to_sample
from instaseg.data.build import build_dataset
from instaseg.data.transforms import build_transforms
from instaseg.structures.panoptic import SEM_IGNORE, stuff_index_map


def test_records_are_consistent_panoptic_gt():
    ds = build_dataset("shapes_panoptic:20:96", split="train")
    assert type(ds).__name__ == "ShapesPanopticDataset" and len(ds) == 20
    assert ds.thing_category_ids == [1, 2, 3] and ds.stuff_category_ids == [4, 5, 6]
    cats = {c["id"]: c["isthing"] for c in ds.panoptic_categories}
    assert cats == {1: 1, 2: 1, 3: 1, 4: 0, 5: 0, 6: 0}
    stuff_seen = set()
    for i in range(20):
        rec = ds.load_record(i)
        pan = rec.extra["panoptic"]
        assert pan.validate() == []
        sem = rec.extra["sem_seg"]
        # sem_seg is exactly the GT's semantic map, things are the records' masks
        assert np.array_equal(pan.semantic_map(stuff_index_map(ds.stuff_category_ids)), sem)
        assert np.array_equal(rec.masks.any(0), sem == 0)
        stuff = [s for s in pan.segments if not s.isthing]
        assert 1 <= len(stuff) <= 3
        stuff_seen.update(s.category_id for s in stuff)
        assert (sem == SEM_IGNORE).sum() < 0.1 * sem.size
    assert stuff_seen == {4, 5, 6}


def test_deterministic_and_splits_differ():
    a = build_dataset("shapes_panoptic:10:64", split="train").load_record(3)
    b = build_dataset("shapes_panoptic:10:64", split="train").load_record(3)
    c = build_dataset("shapes_panoptic:50:64", split="val").load_record(3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.extra["sem_seg"], b.extra["sem_seg"])
    assert not np.array_equal(a.image, c.image)


def test_sem_seg_reaches_the_target_through_augmentation():
    ds = build_dataset("shapes_panoptic:4:64", split="train")
    image, target = record_to_sample(ds.load_record(0))
    assert target["sem_seg"].shape == image.shape[1:]
    tf = build_transforms(True, image_size=64, crop_p=0.0, affine_p=0.0, noise_p=0.0, distortion_p=0.0)
    ds_aug = build_dataset("shapes_panoptic:4:64", split="train", transform=tf)
    image, target = ds_aug[0]
    sem = target["sem_seg"]
    assert sem.shape == image.shape[1:]
    assert set(sem.unique().tolist()) <= {0, 1, 2, 3, SEM_IGNORE}
    # thing pixels in sem_seg are exactly the union of the (augmented) instance masks
    assert bool(((sem == 0) == target["masks"].any(0)).all())
