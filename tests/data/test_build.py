"""build_dataset spec parsing, splits and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instaseg.data.build import build_dataset, coco_args, list_formats, parse_spec, split_8020
from instaseg.errors import ConfigError, DataError


def test_list_formats() -> None:
    assert set(list_formats()) >= {"coco", "cityscapes", "folder", "shapes"}


def test_shapes_specs_and_splits() -> None:
    ds = build_dataset("shapes")
    assert len(ds) == 1000 and ds.image_info(0)["height"] == 128
    ds = build_dataset("shapes:50:64", split="train")
    assert len(ds) == 50 and ds.load_record(0).image.shape == (64, 64, 3)
    val = build_dataset("shapes:50:64", split="val")
    assert len(val) == 10
    assert not np.array_equal(val.load_record(0).image, ds.load_record(0).image)
    seeded = build_dataset("shapes:50:64", seed=5)
    assert not np.array_equal(seeded.load_record(0).image, ds.load_record(0).image)


def test_transform_is_applied() -> None:
    calls = []

    def transform(rec):
        calls.append(rec.image_id)
        return "sample"

    assert build_dataset("shapes:4:64", transform=transform)[3] == "sample"
    assert calls == [3]


@pytest.mark.parametrize(
    "spec, error, words",
    [
        ("nope:foo", ConfigError, "unknown dataset format 'nope'"),
        ("shapes:abc", ConfigError, "N must be an integer"),
        ("shapes:10:20:30", ConfigError, "shapes[:N[:SIZE]]"),
        ("coco", ConfigError, "needs a path"),
        ("", ConfigError, "empty dataset spec"),
        ("/no/such/dir", DataError, "no such file"),
    ],
)
def test_bad_specs(spec: str, error: type, words: str) -> None:
    with pytest.raises(error) as info:
        build_dataset(spec)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_split() -> None:
    with pytest.raises(ConfigError, match="unknown split"):
        build_dataset("shapes:10", split="holdout")


def test_split_8020_partitions() -> None:
    train, val = split_8020(23, "train"), split_8020(23, "val")
    assert sorted(train + val) == list(range(23))
    assert len(val) == 4 and not set(train) & set(val)


def test_detects_format_of_existing_paths(tmp_path) -> None:
    (tmp_path / "ann.json").write_text("{}")
    assert parse_spec(str(tmp_path / "ann.json"))[0] == "coco"
    (tmp_path / "city" / "leftImg8bit").mkdir(parents=True)
    (tmp_path / "city" / "gtFine").mkdir()
    assert parse_spec(str(tmp_path / "city"))[0] == "cityscapes"
    assert parse_spec(str(tmp_path))[0] == "folder"
    assert parse_spec("COCO:" + str(tmp_path / "ann.json")) == ("coco", str(tmp_path / "ann.json"))


def test_datasets_pickle_for_dataloader_workers(tmp_path) -> None:
    import pickle

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    from PIL import Image

    for k in range(5):
        Image.fromarray(np.full((8, 8, 3), k, np.uint8)).save(tmp_path / "images" / f"{k}.png")
        Image.fromarray(np.eye(8, dtype=np.uint8)).save(tmp_path / "masks" / f"{k}.png")
    for spec in ("shapes:10:64", f"folder:{tmp_path}"):
        ds = build_dataset(spec, split="val")
        again = pickle.loads(pickle.dumps(ds))
        assert len(again) == len(ds) and np.array_equal(again.load_record(0).image, ds.load_record(0).image)
    val = build_dataset(f"folder:{tmp_path}", split="val")
    assert len(val) == 1 and val.image_info(0)["id"] == 4  # ids are the full dataset's indices


def test_coco_args() -> None:
    assert coco_args("a/ann.json") == ("a/ann.json", None)
    assert coco_args("a/ann.json:imgs/x") == ("a/ann.json", "imgs/x")
    assert coco_args("a/ann.JSON:") == ("a/ann.JSON", None)


def test_folder_with_own_split_folders(tmp_path) -> None:
    from PIL import Image

    for split, n in (("train", 3), ("val", 2)):
        for k in range(n):
            for sub, arr in (("images", np.zeros((8, 8, 3), np.uint8)), ("masks", np.eye(8, dtype=np.uint8))):
                (tmp_path / split / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(tmp_path / split / sub / f"{k}.png")
    assert len(build_dataset(f"folder:{tmp_path}", split="train")) == 3
    assert len(build_dataset(f"folder:{tmp_path}", split="val")) == 2


def test_detects_a_bare_coco_panoptic_json(tmp_path: Path, shared_data: Path) -> None:
    """A COCO panoptic JSON named without ``coco_panoptic:`` is read as panoptic, not as instances."""
    sample = shared_data / "coco_panoptic_sample"
    spec = str(sample / "panoptic_examples.json")
    assert parse_spec(spec) == ("coco_panoptic", spec)
    ds = build_dataset(spec)  # PNG folder: the JSON path without .json
    assert len(ds) == 2 and len(ds.panoptic_categories) == 133
    assert sorted(len(ds.load_panoptic(i).segments) for i in range(2)) == [18, 32]
    # the instances JSON beside it stays COCO, also when its "segmentation" key is far from the start
    assert parse_spec(str(sample / "panoptic_coco_detection_format.json"))[0] == "coco"
    padded = {"info": "x" * 3_000_000, "annotations": [{"id": 1, "segments_info": []}]}
    (tmp_path / "pan.json").write_text(json.dumps(padded))
    assert parse_spec(str(tmp_path / "pan.json"))[0] == "coco_panoptic"
    padded["annotations"] = [{"id": 1, "segmentation": [[0, 0, 1, 1, 0, 1]]}]
    (tmp_path / "inst.json").write_text(json.dumps(padded))
    assert parse_spec(str(tmp_path / "inst.json"))[0] == "coco"
