"""COCO panoptic and Cityscapes panoptic data on the real samples, writing, and bad input."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.data.build import build_dataset
from instaseg.data.cityscapes_panoptic import CityscapesPanopticDataset, instance_ids_to_panoptic
from instaseg.data.coco_panoptic import read_coco_panoptic, read_panoptic_png, write_coco_panoptic
from instaseg.errors import ConfigError, DataError
from instaseg.structures.panoptic import SEM_IGNORE, id_to_rgb

DATA = os.environ.get("INSTASEG_DATA")
needs_data = pytest.mark.skipif(not DATA, reason="INSTASEG_DATA (the shared real data) is not set")


def _coco_sample() -> Path:
    return Path(DATA) / "coco_panoptic_sample"


def _copy_sample(tmp_path: Path) -> tuple[Path, Path]:
    src = _coco_sample()
    shutil.copy(src / "panoptic_examples.json", tmp_path / "pan.json")
    shutil.copytree(src / "panoptic_examples", tmp_path / "pan")
    return tmp_path / "pan.json", tmp_path / "pan"


@needs_data
def test_reads_the_real_coco_panoptic_sample() -> None:
    src = _coco_sample()
    cats, items = read_coco_panoptic(src / "panoptic_examples.json", src / "panoptic_examples")
    assert len(cats) == 133 and sum(c["isthing"] for c in cats) == 80
    assert sorted(len(r.segments) for _, r in items) == [18, 32]
    raw = json.loads((src / "panoptic_examples.json").read_text())
    for (info, res), ann in zip(items, raw["annotations"], strict=True):
        assert info["id"] == ann["image_id"] and res.validate() == []
        areas = res.areas()
        assert all(areas[s["id"]] == s["area"] for s in ann["segments_info"])  # decoding R + 256G + 256^2B


@needs_data
def test_coco_panoptic_dataset_targets_and_split() -> None:
    src = _coco_sample()
    spec = f"coco_panoptic:{src}/panoptic_examples.json:{src}/panoptic_examples:{src}/input_images"
    ds = build_dataset(spec)
    assert len(ds) == 2 and ds.num_classes == 81 and len(ds.stuff_category_ids) == 53
    assert ds.thing_category_ids == ds.category_ids[1:]
    rec = ds.load_record(1)
    pan = rec.extra["panoptic"]
    things = [s for s in pan.segments if s.isthing]
    assert len(rec.masks) == len(things) and rec.iscrowd.sum() == sum(s.iscrowd for s in things) == 2
    sem = rec.extra["sem_seg"]
    thing_px = np.isin(pan.id_map, [s.id for s in things if not s.iscrowd])
    assert (sem[thing_px] == 0).all() and (sem[pan.id_map == 0] == SEM_IGNORE).all()
    stuff = next(s for s in pan.segments if not s.isthing)
    assert (sem[pan.id_map == stuff.id] == ds.stuff_category_ids.index(stuff.category_id) + 1).all()
    _, target = ds[1]
    assert target["sem_seg"].shape == target["masks"].shape[1:]
    val = build_dataset(spec, split="train")  # a SplitDataset keeps the panoptic attributes
    assert val.stuff_category_ids == ds.stuff_category_ids
    assert val.panoptic_categories == ds.panoptic_categories
    assert val.load_panoptic(0).segments == ds.load_panoptic(0).segments
    again = pickle.loads(pickle.dumps(val))
    assert again.thing_category_ids == ds.thing_category_ids


@needs_data
def test_cityscapes_panoptic_matches_label_and_instance_ids() -> None:
    root = Path(DATA) / "cityscapes_sample"
    ds = build_dataset(f"cityscapes_panoptic:{root}:val")
    assert isinstance(ds, CityscapesPanopticDataset)
    assert len(ds.thing_category_ids) == 8 and len(ds.stuff_category_ids) == 11
    pan = ds.load_panoptic(0)
    things = sorted(s.id for s in pan.segments if s.isthing)
    assert things == [24000, 24001, 24002, 24003, 26000, 26001, 26002]
    labels = np.array(Image.open(next(root.glob("gtFine/val/*/*_labelIds.png"))))
    evaluated = set(ds.thing_category_ids) | set(ds.stuff_category_ids)
    assert np.array_equal(pan.id_map == 0, ~np.isin(labels, list(evaluated)))  # VOID = not evaluated
    rec = ds.load_record(0)
    assert len(rec.masks) == 7 and sorted(set(rec.labels.tolist())) == [1, 3]


def test_cityscapes_crowd_and_void() -> None:
    ids = np.array([[0, 7, 24], [24001, 24001, 1]], np.int32)  # 0 and 1 (ego vehicle) are VOID
    pan = instance_ids_to_panoptic(ids)
    assert [(s.id, s.category_id, s.isthing, s.iscrowd) for s in pan.segments] == [
        (7, 7, False, False), (24, 24, True, True), (24001, 24, True, False)
    ]
    assert pan.id_map.tolist() == [[0, 7, 24], [24001, 24001, 0]]


@needs_data
def test_write_round_trip_and_no_silent_overwrite(tmp_path: Path) -> None:
    src = _coco_sample()
    cats, items = read_coco_panoptic(src / "panoptic_examples.json", src / "panoptic_examples")
    out = write_coco_panoptic(items, cats, tmp_path / "pred.json")
    cats2, items2 = read_coco_panoptic(out, tmp_path / "pred")
    assert cats2 == cats
    for (i1, r1), (i2, r2) in zip(items, items2, strict=True):
        assert i1["id"] == i2["id"] and np.array_equal(r1.id_map, r2.id_map)
        assert [(s.id, s.category_id, s.iscrowd, s.area) for s in r1.segments] == [
            (s.id, s.category_id, s.iscrowd, s.area) for s in r2.segments]
    with pytest.raises(ConfigError, match="already exists"):
        write_coco_panoptic(items, cats, tmp_path / "pred.json")
    write_coco_panoptic(items, cats, tmp_path / "pred.json", overwrite=True)
    assert not list(tmp_path.glob("**/*.tmp"))


@needs_data
def test_bad_input_missing_png(tmp_path: Path) -> None:
    js, png_dir = _copy_sample(tmp_path)
    (png_dir / "000000142238.png").unlink()
    with pytest.raises(DataError, match=r"000000142238\.png: file not found"):
        read_coco_panoptic(js, png_dir)


@needs_data
def test_bad_input_ids_not_in_json(tmp_path: Path) -> None:
    js, png_dir = _copy_sample(tmp_path)
    png = png_dir / "000000142238.png"
    ids = read_panoptic_png(png)
    ids[:3, :3] = 77  # an id segments_info does not list
    Image.fromarray(id_to_rgb(ids)).save(png)
    with pytest.raises(DataError, match=r"000000142238\.png: ids \[77\] in the PNG are not in segments_info"):
        read_coco_panoptic(js, png_dir)


@needs_data
def test_bad_input_wrong_size(tmp_path: Path) -> None:
    js, png_dir = _copy_sample(tmp_path)
    png = png_dir / "000000142238.png"
    Image.fromarray(id_to_rgb(read_panoptic_png(png)[:100])).save(png)
    msg = r"000000142238\.png: PNG is 640x100 but pan\.json says image 142238 is 640x427"
    with pytest.raises(DataError, match=msg):
        read_coco_panoptic(js, png_dir)


@needs_data
def test_bad_input_unknown_category(tmp_path: Path) -> None:
    js, png_dir = _copy_sample(tmp_path)
    data = json.loads(js.read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 9999
    js.write_text(json.dumps(data))
    msg = r"pan\.json: annotations\[0\] \(image_id 142238\): segment \d+ has unknown category_id 9999"
    with pytest.raises(DataError, match=msg):
        build_dataset(f"coco_panoptic:{js}:{png_dir}:{_coco_sample() / 'input_images'}")


BREAKERS = {
    "missing_png": (lambda js, d: (d / "000000142238.png").unlink(), "000000142238.png: file not found"),
    "ids_not_in_json": (lambda js, d: Image.fromarray(id_to_rgb(np.full((427, 640), 77, np.int32))).save(
        d / "000000142238.png"), "000000142238.png: ids [77] in the PNG are not in segments_info"),
    "wrong_size": (lambda js, d: Image.fromarray(id_to_rgb(np.zeros((10, 10), np.int32))).save(
        d / "000000142238.png"), "000000142238.png: PNG is 10x10 but pan.json says image 142238 is 640x427"),
    "unknown_category": (
        lambda js, d: js.write_text(js.read_text().replace('"category_id": 1,', '"category_id": 999,', 1)),
        "pan.json: annotations[0] (image_id 142238): segment 3937500 has unknown category_id 999",
    ),
}


@needs_data
@pytest.mark.parametrize("case", sorted(BREAKERS))
@pytest.mark.parametrize("command", ["stats", "evaluate"])
def test_cli_bad_panoptic_input_is_one_line_naming_the_file(
    tmp_path: Path, capsys, case: str, command: str
) -> None:
    from instaseg.cli import main

    js, png_dir = _copy_sample(tmp_path)
    good = f"{_coco_sample()}/panoptic_examples.json:{_coco_sample()}/panoptic_examples"
    breaker, message = BREAKERS[case]
    breaker(js, png_dir)
    if command == "stats":  # loads the set as training does
        args = ["data", "stats", f"coco_panoptic:{js}:{png_dir}:{_coco_sample() / 'input_images'}"]
    else:  # a broken ground truth given to evaluate
        args = ["evaluate", "--panoptic-gt", f"{js}:{png_dir}", "--panoptic-pred", good]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_write_leaves_out_empty_segments_and_refuses_unlisted_ids(tmp_path: Path) -> None:
    from instaseg.structures.panoptic import PanopticResult, PanopticSegment

    ids = np.zeros((8, 8), np.int32)
    ids[:4] = 3
    cats = [{"id": 1, "name": "a", "isthing": 1}]
    res = PanopticResult(ids, [PanopticSegment(3, 1, True), PanopticSegment(4, 1, True)])  # 4 has no pixels
    write_coco_panoptic([({"id": 1, "file_name": "x.jpg"}, res)], cats, tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    assert [s["id"] for s in data["annotations"][0]["segments_info"]] == [3]
    assert data["annotations"][0]["segments_info"][0]["area"] == 32 and (tmp_path / "p" / "x.png").is_file()
    ids[5, 5] = 9
    with pytest.raises(ValueError, match=r"ids \[9\] in the map are not in its segments"):
        write_coco_panoptic([({"id": 1, "file_name": "y.jpg"}, res)], cats, tmp_path / "q.json")
