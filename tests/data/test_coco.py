"""COCO JSON dataset: every segmentation kind, class mapping, errors, skip mode and COCO export."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from instaseg.data.base import validate_sample
from instaseg.data.build import build_dataset
from instaseg.data.coco import CocoDataset, dataset_to_coco, guess_image_dir
from instaseg.errors import DataError

H, W = 40, 60


def _square(x: int, y: int, s: int) -> list[float]:
    return [x, y, x + s, y, x + s, y + s, x, y + s]


def _make(tmp_path: Path, *, layout: str = "flat") -> Path:
    """A small COCO set: 3 images (one without annotations), categories 3/7/90 + unused background."""
    m = np.zeros((H, W), np.uint8)
    m[5:15, 30:50] = 1
    compressed = mask_utils.encode(np.asfortranarray(m))
    compressed["counts"] = compressed["counts"].decode("ascii")
    # uncompressed RLE: column-major run lengths starting with zeros
    flat = m.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    data = {
        "images": [
            {"id": 11, "file_name": "a.png", "height": H, "width": W},
            {"id": 5, "file_name": "b.png", "height": H, "width": W},
            {"id": 42, "file_name": "empty.png", "height": H, "width": W},
        ],
        "categories": [
            {"id": 0, "name": "_background_"},
            {"id": 90, "name": "toothbrush"},
            {"id": 3, "name": "car"},
            {"id": 7, "name": "train"},
        ],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 3, "iscrowd": 0,
             "segmentation": [_square(2, 2, 6), _square(20, 20, 5)]},  # two parts
            {"id": 2, "image_id": 11, "category_id": 90, "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": runs}},  # uncompressed RLE crowd
            {"id": 3, "image_id": 5, "category_id": 7, "iscrowd": 0, "segmentation": compressed},
        ],
    }
    if layout == "coco":
        ann = tmp_path / "annotations" / "instances_val2017.json"
        img_dir = tmp_path / "val2017"
    else:
        ann = tmp_path / "ann.json"
        img_dir = tmp_path
    ann.parent.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(data))
    for name in ("a.png", "b.png", "empty.png"):
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(img_dir / name)
    return ann


def test_segmentation_kinds_and_class_mapping(tmp_path: Path) -> None:
    ds = CocoDataset(_make(tmp_path))
    assert len(ds) == 3
    assert ds.class_names == ["background", "car", "train", "toothbrush"]
    assert ds.category_ids == [0, 3, 7, 90]
    rec = ds.load_record(0)
    assert rec.image_id == 11 and rec.image.shape == (H, W, 3)
    assert rec.labels.tolist() == [1, 3] and rec.iscrowd.tolist() == [0, 1]
    assert rec.masks[0].sum() == 36 + 25  # both polygon parts
    assert rec.masks[1].sum() == 200 and rec.masks[1][5:15, 30:50].all()
    rec = ds.load_record(1)
    assert rec.labels.tolist() == [2] and rec.masks[0].sum() == 200
    rec = ds.load_record(2)  # image without annotations is kept
    assert rec.masks.shape == (0, H, W) and rec.labels.shape == (0,)
    image, target = ds[2]
    validate_sample(image, target)
    assert ds.image_info(1) == {"id": 5, "file_name": "b.png", "height": H, "width": W}


def test_masks_match_pycocotools(tmp_path: Path) -> None:
    ann = _make(tmp_path)
    ds, ref = CocoDataset(ann), COCO(str(ann))
    for i in range(len(ds)):
        masks, _, _ = ds.load_annotations(i)
        refs = [ref.annToMask(a) for a in ref.loadAnns(ref.getAnnIds(imgIds=ds.images[i]["id"]))]
        assert len(refs) == len(masks)
        for a, b in zip(masks, refs, strict=True):
            assert np.array_equal(a, b.astype(bool))


def test_guess_image_dir_coco_layout(tmp_path: Path) -> None:
    ann = _make(tmp_path, layout="coco")
    assert guess_image_dir(ann, ["a.png"]) == tmp_path / "val2017"
    ds = build_dataset(f"coco:{ann}")
    assert ds.load_record(0).image.shape == (H, W, 3)
    ds = build_dataset(f"coco:{ann}:{tmp_path / 'val2017'}")
    assert ds.image_dir == tmp_path / "val2017"
    (tmp_path / "val2017").rename(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="image folder guessed as .*annotations; name it with"):
        build_dataset(f"coco:{ann}").load_record(0)
    with pytest.raises(DataError, match="image folder not found"):
        build_dataset(f"coco:{ann}:{tmp_path / 'val2017'}")


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.pop("images"), "has no 'images' key"),
        (lambda d: d["images"][1].pop("file_name"), "images[1] has no 'file_name' key"),
        (lambda d: d["annotations"][2].pop("segmentation"), "annotations[2] has no 'segmentation' key"),
        (lambda d: d["annotations"][0].pop("category_id"), "annotations[0] has no 'category_id' key"),
        (lambda d: d["annotations"][0].update(category_id=999), "category_id 999 is not in"),
        (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id 11"),
        (lambda d: d.update(images={}), "'images' must be a list"),
    ],
)
def test_bad_json_structure(tmp_path: Path, edit, words: str) -> None:
    ann = _make(tmp_path)
    data = json.loads(ann.read_text())
    edit(data)
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError) as info:
        CocoDataset(ann)
    assert str(ann) in str(info.value) and words in str(info.value)


def test_bad_rle_and_truncated_json(tmp_path: Path) -> None:
    ann = _make(tmp_path)
    data = json.loads(ann.read_text())
    data["annotations"][2]["segmentation"]["size"] = [10, 10]
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match="RLE size"):
        CocoDataset(ann).load_record(1)
    ann.write_text(json.dumps(data)[:100])
    with pytest.raises(DataError, match="malformed JSON.*truncated"):
        CocoDataset(ann)


def test_bad_image_raise_and_skip(tmp_path: Path, caplog) -> None:
    ann = _make(tmp_path)
    (tmp_path / "a.png").write_text("not an image")
    with pytest.raises(DataError) as info:
        CocoDataset(ann).load_record(0)
    assert "a.png" in str(info.value) and "text file" in str(info.value)
    ds = CocoDataset(ann, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="instaseg.data"):
        rec = ds.load_record(0)
    assert rec.image_id == 5  # the next image
    assert ds.skipped.count == 1 and "a.png" in caplog.text and "#1" in caplog.text
    # a size mismatch is a data error too
    Image.fromarray(np.zeros((H + 1, W, 3), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="but ann.json says"):
        ds.load_record(1) if ds.on_error == "raise" else CocoDataset(ann).load_record(1)


def test_export_roundtrip(tmp_path: Path) -> None:
    ds = CocoDataset(_make(tmp_path))
    out = dataset_to_coco(ds)
    assert [im["id"] for im in out["images"]] == [11, 5, 42]
    assert sorted(c["id"] for c in out["categories"]) == [3, 7, 90]
    assert [a["category_id"] for a in out["annotations"]] == [3, 90, 7]
    assert all(isinstance(a["segmentation"]["counts"], str) for a in out["annotations"])
    assert [a["area"] for a in out["annotations"]] == [61.0, 200.0, 200.0]
    assert out["annotations"][2]["bbox"] == [30.0, 5.0, 20.0, 10.0]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(out))
    coco = COCO(str(path))
    assert len(coco.getAnnIds()) == 3 and len(coco.getImgIds()) == 3
    again = CocoDataset(path, tmp_path)
    for i in range(3):
        a, b = ds.load_annotations(i), again.load_annotations(i)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])


def test_export_of_any_dataset_uses_original_ids() -> None:
    ds = build_dataset("shapes:3:64")
    out = dataset_to_coco(ds)
    assert len(out["images"]) == 3
    n = sum(len(ds.load_record(i).labels) for i in range(3))
    assert len(out["annotations"]) == n
    assert {c["name"] for c in out["categories"]} == {"circle", "square", "triangle"}


@pytest.mark.parametrize("split, count", [("train", 470), ("val", 382)])
def test_coco_tiny_counts_match_pycocotools(shared_data: Path, split: str, count: int) -> None:
    ann = shared_data / "coco_tiny" / "annotations" / f"instances_{split}2017.json"
    ref = COCO(str(ann))
    ds = build_dataset(f"coco:{ann}")
    assert ds.image_dir == shared_data / "coco_tiny" / f"{split}2017"
    per_image = [len(ds.load_annotations(i)[1]) for i in range(len(ds))]
    assert sum(per_image) == len(ref.getAnnIds()) == count
    assert per_image == [len(ref.getAnnIds(imgIds=i)) for i in ref.getImgIds()]
    assert ds.category_ids[1:] == sorted(ref.getCatIds()) and ds.num_classes == 81
    rec = ds.load_record(3)
    assert rec.image.shape[:2] == rec.masks.shape[1:] and rec.masks.any(axis=(1, 2)).all()
    # export and reload with pycocotools: same counts per image and category
    exported = dataset_to_coco(ds)
    path = Path(ann).name
    out = COCO()
    out.dataset = exported
    out.createIndex()
    assert len(out.getAnnIds()) == count, path
    for cid in ref.getCatIds():
        assert len(out.getAnnIds(catIds=[cid])) == len(ref.getAnnIds(catIds=[cid]))
    assert sum(a["iscrowd"] for a in exported["annotations"]) == sum(
        a["iscrowd"] for a in ref.dataset["annotations"]
    )


def test_coco_8020_split(shared_data: Path) -> None:
    ann = shared_data / "coco_tiny" / "annotations" / "instances_val2017.json"
    train = build_dataset(f"coco:{ann}", split="train")
    val = build_dataset(f"coco:{ann}", split="val")
    assert len(train) == 40 and len(val) == 10
    ids = {train.image_info(i)["id"] for i in range(40)} | {val.image_info(i)["id"] for i in range(10)}
    assert len(ids) == 50
    assert len(dataset_to_coco(val)["images"]) == 10


def test_labelme_coco_background_category_dropped(shared_data: Path) -> None:
    ds = build_dataset(f"coco:{shared_data / 'labelme_voc' / 'data_dataset_coco' / 'annotations.json'}")
    assert "_background_" not in ds.class_names and ds.category_ids[0] == 0
    assert sum(len(ds.load_record(i).labels) for i in range(len(ds))) == 12


def test_export_cityscapes_and_folder_samples(shared_data: Path) -> None:
    for spec, n_images in (
        (f"cityscapes:{shared_data / 'cityscapes_sample'}", 1),
        (f"folder:{shared_data / 'labelme_voc' / 'data_dataset_voc'}", 3),
    ):
        ds = build_dataset(spec)
        out = dataset_to_coco(ds)
        coco = COCO()
        coco.dataset = out
        coco.createIndex()
        assert len(coco.getImgIds()) == n_images
        expected = sum(len(ds.load_record(i).labels) for i in range(len(ds)))
        assert len(coco.getAnnIds()) == expected
        used = {a["category_id"] for a in out["annotations"]}
        assert used <= set(ds.category_ids[1:])


def test_boxes_as_masks_fills_the_box_of_box_only_annotations(tmp_path: Path) -> None:
    ann = _make(tmp_path)
    data = json.loads(ann.read_text())
    data["annotations"].append({"id": 4, "image_id": 5, "category_id": 3, "bbox": [10, 20, 8, 6]})
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match="annotations\\[3\\] has no 'segmentation' key .*supervision=boxes"):
        CocoDataset(ann)
    ds = CocoDataset(ann, boxes_as_masks=True)
    masks, labels, _ = ds.load_annotations(ds.images.index(next(i for i in ds.images if i["id"] == 5)))
    box_only = masks[-1]
    ys, xs = np.nonzero(box_only)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 17, 20, 25) and box_only.sum() == 8 * 6
    data["annotations"][-1]["bbox"] = [10, 20, 0, 6]
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match="annotations\\[3\\]: bbox .* has no area"):
        CocoDataset(ann, boxes_as_masks=True)
