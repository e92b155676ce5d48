"""Folder layouts: images/+masks/, Penn-Fudan, VOC SegmentationObject, per-instance binary masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.data.base import validate_sample
from instaseg.data.build import build_dataset
from instaseg.data.folder import FolderDataset
from instaseg.errors import DataError


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _id_layout(root: Path) -> None:
    ids = np.zeros((20, 30), np.uint8)
    ids[2:6, 2:6] = 1
    ids[10:15, 10:20] = 3  # ids need not be contiguous
    _save(root / "images" / "a.jpg", np.full((20, 30, 3), 90, np.uint8))
    _save(root / "masks" / "a_mask.png", ids)
    _save(root / "images" / "b.png", np.full((20, 30, 3), 30, np.uint8))
    _save(root / "masks" / "b.png", np.zeros((20, 30), np.uint8))  # no objects


def test_images_and_id_masks(tmp_path: Path) -> None:
    _id_layout(tmp_path)
    ds = build_dataset(f"folder:{tmp_path}")
    assert ds.layout == "id_masks" and len(ds) == 2
    assert ds.class_names == ["background", "object"]
    rec = ds.load_record(0)
    assert rec.masks.shape == (2, 20, 30) and rec.masks.sum((1, 2)).tolist() == [16, 50]
    assert rec.labels.tolist() == [1, 1] and rec.iscrowd.tolist() == [0, 0]
    assert ds.image_info(0) == {"id": 0, "file_name": "images/a.jpg", "height": 20, "width": 30}
    assert ds.load_record(1).masks.shape == (0, 20, 30)
    validate_sample(*ds[0])
    (tmp_path / "classes.txt").write_text("\nwidget\n")
    assert FolderDataset(tmp_path).class_names == ["background", "widget"]
    assert FolderDataset(tmp_path, class_name="gear").class_names == ["background", "gear"]


def test_missing_mask_and_size_mismatch(tmp_path: Path) -> None:
    _id_layout(tmp_path)
    _save(tmp_path / "images" / "c.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(DataError, match=r"1 image\(s\) have no mask \(first: c.png\)"):
        FolderDataset(tmp_path)
    (tmp_path / "images" / "c.png").unlink()
    _save(tmp_path / "masks" / "b.png", np.zeros((21, 30), np.uint8))
    with pytest.raises(DataError, match="mask is 30x21 but the image b.png is 30x20"):
        FolderDataset(tmp_path).load_record(1)
    with pytest.raises(DataError, match="unrecognised folder layout"):
        FolderDataset(tmp_path / "images")
    with pytest.raises(DataError, match="dataset folder not found"):
        FolderDataset(tmp_path / "nope")


def test_skip_bad_image(tmp_path: Path) -> None:
    _id_layout(tmp_path)
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    ds = FolderDataset(tmp_path, on_error="skip")
    assert ds.load_record(0).file_name.endswith("b.png") and ds.skipped.count == 1


def test_per_instance_layout_with_overlap(tmp_path: Path) -> None:
    for name, boxes in (("s1", [(0, 0, 5, 5), (3, 3, 8, 8)]), ("s2", [])):
        _save(tmp_path / name / "images" / f"{name}.png", np.zeros((12, 12, 4), np.uint8))  # RGBA
        for k, (y0, x0, y1, x1) in enumerate(boxes):
            m = np.zeros((12, 12), np.uint8)
            m[y0:y1, x0:x1] = 255
            _save(tmp_path / name / "masks" / f"m{k}.png", m)
    ds = FolderDataset(tmp_path)
    assert ds.layout == "per_instance" and len(ds) == 2
    rec = ds.load_record(0)
    assert rec.image.shape == (12, 12, 3) and rec.masks.sum((1, 2)).tolist() == [25, 25]
    assert (rec.masks[0] & rec.masks[1]).sum() == 4  # overlapping instances are kept as they are
    assert ds.load_record(1).masks.shape == (0, 12, 12)
    _save(tmp_path / "s1" / "masks" / "m9.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError, match="m9.png: mask is"):
        FolderDataset(tmp_path).load_record(0)


def test_pennfudan_423_instances_in_170_images(shared_data: Path) -> None:
    ds = build_dataset(f"folder:{shared_data / 'pennfudan'}")
    assert len(ds) == 170 and ds.class_names == ["background", "person"]
    assert sum(len(ds.load_annotations(i)[1]) for i in range(len(ds))) == 423
    rec = ds.load_record(5)
    assert rec.image.shape[:2] == rec.masks.shape[1:] and rec.masks.any(axis=(1, 2)).all()
    train, val = build_dataset(f"folder:{shared_data / 'pennfudan'}", split="train"), build_dataset(
        f"folder:{shared_data / 'pennfudan'}", split="val"
    )
    assert len(train) == 136 and len(val) == 34


def test_nuclei_per_instance_masks(shared_data: Path) -> None:
    root = shared_data / "nuclei"
    ds = build_dataset(f"folder:{root}")
    assert len(ds) == len([p for p in root.iterdir() if p.is_dir()])
    for i in (0, 7):
        rec = ds.load_record(i)
        folder = Path(rec.file_name).parent.parent
        assert len(rec.labels) == len(list((folder / "masks").glob("*.png")))
        assert rec.image.shape == (*rec.masks.shape[1:], 3)


def test_voc_layout_matches_labelme_coco(shared_data: Path) -> None:
    voc = build_dataset(f"folder:{shared_data / 'labelme_voc' / 'data_dataset_voc'}")
    coco = build_dataset(f"coco:{shared_data / 'labelme_voc' / 'data_dataset_coco' / 'annotations.json'}")
    assert voc.layout == "voc" and voc.class_names == coco.class_names
    coco_index = {Path(coco.image_info(i)["file_name"]).stem: i for i in range(len(coco))}
    assert len(voc) == len(coco) == 3
    for i in range(len(voc)):
        j = coco_index[Path(voc.image_info(i)["file_name"]).stem]
        a, b = voc.load_annotations(i)[1], coco.load_annotations(j)[1]
        assert sorted(a.tolist()) == sorted(b.tolist())
