"""labelme / VIA / dataset-spec -> COCO conversion, checked by loading the result back."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from instaseg.data.convert import labelme_to_coco, read_labels_file, spec_to_coco, write_conversion
from instaseg.errors import DataError


def _png(path: Path, h: int = 60, w: int = 80) -> Path:
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)
    return path


def test_labelme_sample_matches_labelme_own_coco_export(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "labelme_voc" / "data_annotated"
    labels = read_labels_file(shared_data / "labelme_voc" / "labels.txt")
    conv = labelme_to_coco(src, output_dir=tmp_path, labels=labels)
    ref = json.loads((shared_data / "labelme_voc" / "data_dataset_coco" / "annotations.json").read_text())
    assert len(conv.coco["annotations"]) == len(ref["annotations"]) == 12
    assert len(conv.coco["images"]) == 3
    # Same classes per instance (ids follow labels.txt like labelme's exporter), same part counts.
    got = sorted((a["category_id"], len(a["segmentation"])) for a in conv.coco["annotations"])
    want = sorted((a["category_id"], len(a["segmentation"])) for a in ref["annotations"])
    assert got == want
    ref_area = sorted(a["area"] for a in ref["annotations"])
    got_area = sorted(a["area"] for a in conv.coco["annotations"])
    assert np.allclose(got_area, ref_area, rtol=0.1)  # rasterisers differ only on the boundary
    assert conv.warnings["shapes labelled '__ignore__' ignored"] == 2

    out = write_conversion(conv, tmp_path / "coco.json")
    from instaseg.data.build import build_dataset

    ds = build_dataset(f"coco:{out}")
    assert sum(len(ds.load_record(i).labels) for i in range(len(ds))) == 12


def _labelme(tmp_path: Path, shapes: list[dict], embed: bool = False) -> Path:
    folder = tmp_path / "lm"
    folder.mkdir(exist_ok=True)
    img = _png(folder / "a.png")
    data = {"version": "5.0.1", "shapes": shapes, "imagePath": "a.png", "imageHeight": 60, "imageWidth": 80}
    if embed:
        data["imageData"] = base64.b64encode(img.read_bytes()).decode()
        data["imagePath"] = "gone.png"
        img.unlink()
    (folder / "a.json").write_text(json.dumps(data))
    return folder


def _shape(label, points, kind="polygon", group_id=None) -> dict:
    return {"label": label, "points": points, "shape_type": kind, "group_id": group_id, "flags": {}}


def test_labelme_groups_shapes_and_embedded_images(tmp_path: Path) -> None:
    shapes = [
        _shape("cat", [[1, 1], [20, 1], [20, 20]], group_id=3),
        _shape("cat", [[30, 30], [40, 30], [40, 40], [30, 40]], group_id=3),  # same instance
        _shape("dog", [[50, 10], [70, 30]], kind="rectangle"),
        _shape("dog", [[20, 45], [28, 45]], kind="circle"),
        _shape("dog", [[1, 1], [5, 5]], kind="line"),  # no area: skipped
        _shape("dog", [[1, 1], [5, 5]]),  # 2-point polygon: skipped
    ]
    folder = _labelme(tmp_path, shapes, embed=True)
    out_dir = tmp_path / "out"
    conv = labelme_to_coco(folder, output_dir=out_dir)
    anns = conv.coco["annotations"]
    assert [c["name"] for c in conv.coco["categories"]] == ["cat", "dog"]
    assert [a["category_id"] for a in anns] == [1, 2, 2]
    assert len(anns[0]["segmentation"]) == 2  # two parts, one instance
    assert anns[1]["bbox"] == [50.0, 10.0, 20.0, 20.0]
    assert anns[2]["area"] == pytest.approx(np.pi * 64, rel=0.15)
    assert sum(conv.warnings.values()) == 2
    out = write_conversion(conv, out_dir / "coco.json")
    assert (out_dir / "images" / "a.png").is_file()  # embedded image extracted beside the JSON
    coco = COCO(str(out))
    assert len(coco.getAnnIds()) == 3
    assert coco.annToMask(coco.loadAnns([1])[0]).sum() > 0


def test_labelme_errors_name_the_file(tmp_path: Path) -> None:
    folder = _labelme(tmp_path, [_shape("cat", [[1, 1], [20, 1], [20, 20]])])
    with pytest.raises(DataError, match="not in the labels file"):
        labelme_to_coco(folder, output_dir=tmp_path, labels=["dog"])
    (folder / "a.png").unlink()
    with pytest.raises(DataError, match=r"a\.json.*not found and no imageData"):
        labelme_to_coco(folder, output_dir=tmp_path)
    (folder / "a.json").write_text('{"shapes": [')
    with pytest.raises(DataError, match=r"a\.json"):
        labelme_to_coco(folder, output_dir=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no labelme .json files"):
        labelme_to_coco(empty, output_dir=tmp_path)


def test_shapes_spec_to_coco_writes_images_and_round_trips(tmp_path: Path) -> None:
    conv = spec_to_coco("shapes:4:64", output_dir=tmp_path)
    out = write_conversion(conv, tmp_path / "shapes.json")
    from instaseg.data.build import build_dataset

    src = build_dataset("shapes:4:64")
    back = build_dataset(f"coco:{out}")
    assert len(back) == 4
    for i in range(4):
        a, b = src.load_record(i), back.load_record(i)
        assert np.array_equal(a.image, b.image)  # PNG is lossless
        assert np.array_equal(a.masks, b.masks)
        assert [src.class_names[k] for k in a.labels] == [back.class_names[k] for k in b.labels]


def test_write_is_atomic_and_refuses_to_overwrite(tmp_path: Path) -> None:
    conv = spec_to_coco("shapes:2:32", output_dir=tmp_path)
    out = write_conversion(conv, tmp_path / "a.json")
    before = out.read_bytes()
    with pytest.raises(DataError, match="already exists"):
        write_conversion(conv, out)
    assert out.read_bytes() == before
    write_conversion(conv, out, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(DataError, match=".json"):
        write_conversion(conv, tmp_path / "a.txt")


def test_labels_file(shared_data: Path, tmp_path: Path) -> None:
    names = read_labels_file(shared_data / "labelme_voc" / "labels.txt")
    assert names[0] == "aeroplane" and "__ignore__" not in names and len(names) == 20
    (tmp_path / "l.txt").write_text("a\nb\na\n")
    with pytest.raises(DataError, match="repeats"):
        read_labels_file(tmp_path / "l.txt")
    with pytest.raises(DataError, match="not found"):
        read_labels_file(tmp_path / "missing.txt")
