"""The data linter finds every kind of problem, counts it right, and passes clean data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.data.base import InstanceDataset, Record
from instaseg.data.check import PROBLEMS, check_coco_json, check_dataset, check_spec
from instaseg.errors import DataError


def _ann(aid, image_id=1, cat=1, seg=None, bbox=None) -> dict:
    seg = [[10, 10, 30, 10, 30, 30, 10, 30]] if seg is None else seg
    return {
        "id": aid,
        "image_id": image_id,
        "category_id": cat,
        "segmentation": seg,
        "bbox": bbox or [10, 10, 20, 20],
        "area": 400,
        "iscrowd": 0,
    }


def _broken_coco(tmp_path: Path) -> Path:
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(img_dir / "ok.png")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(img_dir / "small.png")
    (img_dir / "text.jpg").write_text("this is not an image")
    images = [
        {"id": 1, "file_name": "ok.png", "height": 40, "width": 50},
        {"id": 2, "file_name": "small.png", "height": 60, "width": 50},  # size mismatch
        {"id": 3, "file_name": "gone.png", "height": 40, "width": 50},  # missing
        {"id": 4, "file_name": "text.jpg", "height": 40, "width": 50},  # unreadable
        {"id": 1, "file_name": "ok.png", "height": 40, "width": 50},  # duplicate image id
    ]
    anns = [
        _ann(1),  # clean
        _ann(2, seg=[]),  # empty segmentation
        _ann(3, seg=[[1, 1, 5, 5]]),  # 2-point polygon
        _ann(4, seg=[[1, 1, 5, 5], [20, 20, 30, 20]]),  # two degenerate parts
        _ann(5, seg=[[5, 5, 5, 5, 5, 5]]),  # zero-area polygon
        _ann(6, bbox=[40, 30, 20, 20]),  # box leaves the 50x40 image
        _ann(6),  # duplicate annotation id
        _ann(8, cat=99),  # unknown category
        _ann(9, image_id=77),  # points at a missing image
        _ann(10, seg={"size": [10, 10], "counts": "PP1"}),  # RLE of the wrong size
        {"id": 11, "image_id": 1},  # missing keys
    ]
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_broken_coco_reports_each_problem_with_its_count(tmp_path: Path) -> None:
    report = check_coco_json(_broken_coco(tmp_path))
    expected = {
        "size_mismatch": 1,
        "missing_image": 1,
        "unreadable_image": 1,
        "duplicate_image_id": 1,
        "empty_segmentation": 1,
        "degenerate_polygon": 3,
        "zero_area_mask": 1,
        "box_outside_image": 1,
        "duplicate_annotation_id": 1,
        "unknown_category": 1,
        "missing_image_ref": 1,
        "segmentation_size_mismatch": 1,
        "malformed_annotation": 1,
    }
    assert report.counts == expected
    assert not report.ok and report.images == 5 and report.annotations == 11
    assert any("gone.png" in e for e in report.examples["missing_image"])
    assert "text.jpg" in report.examples["unreadable_image"][0]
    text = report.format()
    for kind, n in expected.items():
        assert f"{kind}: {n}" in text
    as_dict = report.to_dict()
    assert as_dict["problems"]["degenerate_polygon"]["count"] == 3
    json.dumps(as_dict)


def test_examples_are_capped(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    anns = [_ann(k, seg=[]) for k in range(20)]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    report = check_coco_json(tmp_path / "a.json", tmp_path, max_examples=3)
    assert report.counts["empty_segmentation"] == 20 and len(report.examples["empty_segmentation"]) == 3


def test_unusable_input_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        check_coco_json(tmp_path / "missing.json")
    (tmp_path / "cut.json").write_text('{"images": [')
    with pytest.raises(DataError, match=r"cut\.json"):
        check_coco_json(tmp_path / "cut.json")
    (tmp_path / "nokey.json").write_text('{"images": []}')
    with pytest.raises(DataError, match="no 'annotations' key"):
        check_coco_json(tmp_path / "nokey.json")


def test_clean_real_samples(shared_data: Path) -> None:
    coco = shared_data / "coco_tiny" / "annotations" / "instances_val2017.json"
    report = check_spec(f"coco:{coco}")
    assert report.ok, report.format()
    assert report.images == 50 and report.annotations == 382
    lm = shared_data / "labelme_voc" / "data_dataset_coco" / "annotations.json"
    assert check_spec(f"coco:{lm}").ok


def test_shapes_is_clean() -> None:
    report = check_spec("shapes:10:64")
    assert report.ok and report.images == 10 and report.annotations > 0


class _Flaky(InstanceDataset):
    class_names = ["background", "a"]
    category_ids = [0, 1]

    def __len__(self) -> int:
        return 3

    def load_record(self, index: int) -> Record:
        if index == 0:
            raise DataError("x.png", "corrupt or truncated image")
        masks = np.zeros((2, 8, 8), bool)
        masks[0, 2:4, 2:4] = True  # masks[1] stays empty
        labels = np.array([1, 5 if index == 2 else 1])
        return Record(
            np.zeros((8, 8, 3), np.uint8), masks, labels, np.zeros(2, np.int64), index, f"{index}.png"
        )


def test_other_formats_are_checked_by_loading() -> None:
    report = check_dataset(_Flaky(), "flaky")
    assert report.counts == {"unloadable_sample": 1, "zero_area_mask": 2, "unknown_category": 1}
    assert "x.png" in report.examples["unloadable_sample"][0]
    assert set(report.counts) <= set(PROBLEMS)
