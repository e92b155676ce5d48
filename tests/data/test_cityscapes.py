"""Cityscapes instanceIds: things, crowd regions, splits and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.data.base import validate_sample
from instaseg.data.build import build_dataset
from instaseg.data.cityscapes import CityscapesDataset, instance_ids_to_masks
from instaseg.errors import DataError


def test_instance_ids_to_masks() -> None:
    ids = np.full((6, 8), 7, np.uint16)  # road (stuff)
    ids[0:2, 0:2] = 24000  # person #0
    ids[0:2, 4:6] = 24001  # person #1
    ids[3:5, 0:3] = 26  # a car group (crowd)
    ids[3:5, 5:8] = 33005  # bicycle #5
    ids[5, :] = 19000  # traffic light *1000 is not a thing class: ignored
    masks, labels, iscrowd = instance_ids_to_masks(ids)
    assert labels.tolist() == [1, 1, 8, 3]  # person, person, bicycle, then the car crowd
    assert iscrowd.tolist() == [0, 0, 0, 1]
    assert masks.sum((1, 2)).tolist() == [4, 4, 6, 6]
    masks, labels, _ = instance_ids_to_masks(np.full((3, 3), 7, np.uint16))
    assert masks.shape == (0, 3, 3) and labels.shape == (0,)


def _fake_root(tmp_path: Path, split: str = "train") -> Path:
    gt = tmp_path / "gtFine" / split / "aachen"
    img = tmp_path / "leftImg8bit" / split / "aachen"
    gt.mkdir(parents=True)
    img.mkdir(parents=True)
    ids = np.zeros((16, 32), np.uint16)
    ids[2:6, 2:6] = 25000
    Image.fromarray(ids).save(gt / "aachen_000000_000019_gtFine_instanceIds.png")
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(img / "aachen_000000_000019_leftImg8bit.png")
    return tmp_path


def test_fake_root_splits_and_errors(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    ds = build_dataset(f"cityscapes:{root}", split="train")
    rec = ds.load_record(0)
    assert rec.labels.tolist() == [2] and rec.masks[0].sum() == 16  # rider
    assert ds.class_names[2] == "rider" and ds.category_ids[2] == 25
    with pytest.raises(DataError, match=r"split 'val' not found \(available: \['train'\]\)"):
        build_dataset(f"cityscapes:{root}:val")
    with pytest.raises(DataError, match="folder not found"):
        CityscapesDataset(tmp_path / "nowhere")
    next(root.glob("leftImg8bit/train/aachen/*.png")).unlink()
    with pytest.raises(DataError, match="file not found"):
        ds.load_record(0)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
        root / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    )
    with pytest.raises(DataError, match="mask is 32x16"):
        ds.load_record(0)


def test_sample_has_4_persons_and_3_cars(shared_data: Path) -> None:
    root = shared_data / "cityscapes_sample"
    for ds in (build_dataset(f"cityscapes:{root}"), build_dataset(f"cityscapes:{root}:val")):
        assert len(ds) == 1
        rec = ds.load_record(0)
        names = [ds.class_names[k] for k, c in zip(rec.labels, rec.iscrowd, strict=True) if not c]
        assert names.count("person") == 4 and names.count("car") == 3 and len(names) == 7
        assert rec.image.shape == (128, 256, 3) and rec.masks.shape[1:] == (128, 256)
        assert rec.masks.any(axis=(1, 2)).all()
        assert ds.image_info(0)["height"] == 128
        validate_sample(*ds[0])
