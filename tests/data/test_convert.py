"""labelme / VIA / dataset-spec -> COCO conversion, checked by loading the result back."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from instaseg.data.convert import (
    labelme_to_coco,
    read_labels_file,
    spec_to_coco,
    via_to_coco,
    write_conversion,
)
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


def _via_project(tmp_path: Path, attr: str = "class") -> Path:
    _png(tmp_path / "img1.png")
    _png(tmp_path / "img2.png", 40, 50)
    regions1 = [
        {
            "shape_attributes": {
                "name": "polygon",
                "all_points_x": [5, 30, 30, 5],
                "all_points_y": [5, 5, 25, 25],
            },
            "region_attributes": {attr: "leaf"},
        },
        {
            "shape_attributes": {"name": "rect", "x": 40, "y": 10, "width": 20, "height": 10},
            "region_attributes": {attr: {"bug": True, "leaf": False}},
        },
        {
            "shape_attributes": {"name": "ellipse", "cx": 60, "cy": 45, "rx": 10, "ry": 5, "theta": 0.3},
            "region_attributes": {attr: "bug"},
        },
        {"shape_attributes": {"name": "point", "cx": 3, "cy": 3}, "region_attributes": {attr: "bug"}},
    ]
    regions2 = [
        {
            "shape_attributes": {"name": "circle", "cx": 20, "cy": 20, "r": 8},
            "region_attributes": {attr: "leaf"},
        }
    ]
    meta = {
        "img1.png123": {"filename": "img1.png", "size": 123, "regions": regions1, "file_attributes": {}},
        "img2.png45": {"filename": "img2.png", "size": 45, "regions": regions2, "file_attributes": {}},
    }
    path = tmp_path / "via_project.json"
    path.write_text(json.dumps({"_via_settings": {}, "_via_img_metadata": meta, "_via_attributes": {}}))
    return path


def test_via_project_to_coco(tmp_path: Path) -> None:
    path = _via_project(tmp_path)
    conv = via_to_coco(path, output_dir=tmp_path)
    c = conv.coco
    assert [i["height"] for i in c["images"]] == [60, 40]
    assert [cat["name"] for cat in c["categories"]] == ["bug", "leaf"]
    assert [(a["image_id"], a["category_id"]) for a in c["annotations"]] == [(1, 2), (1, 1), (1, 1), (2, 2)]
    assert c["annotations"][1]["bbox"] == [40.0, 10.0, 20.0, 10.0]
    assert c["annotations"][2]["area"] == pytest.approx(np.pi * 50, rel=0.15)
    assert conv.warnings["'point' regions skipped (no area)"] == 1
    out = write_conversion(conv, tmp_path / "coco.json")
    from instaseg.data.build import build_dataset

    ds = build_dataset(f"coco:{out}")
    assert [len(ds.load_record(i).labels) for i in range(len(ds))] == [3, 1]

    # The same regions exported (not a project) with another attribute name.
    other = _via_project(tmp_path, attr="species")
    export = json.loads(other.read_text())["_via_img_metadata"]
    (tmp_path / "export.json").write_text(json.dumps(export))
    conv2 = via_to_coco(tmp_path / "export.json", output_dir=tmp_path, class_attribute="species")
    assert len(conv2.coco["annotations"]) == 4
    with pytest.raises(DataError, match="no region attribute 'class'.*species"):
        via_to_coco(tmp_path / "export.json", output_dir=tmp_path)


def test_via_missing_image_and_wrong_json(tmp_path: Path) -> None:
    path = _via_project(tmp_path)
    (tmp_path / "img2.png").unlink()
    with pytest.raises(DataError, match=r"img2\.png"):
        via_to_coco(path, output_dir=tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"a": {"b": 1}}))
    with pytest.raises(DataError, match="not a VIA 2 JSON"):
        via_to_coco(tmp_path / "bad.json", output_dir=tmp_path)


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


def test_via_single_class_project(tmp_path: Path) -> None:
    """A VIA project whose regions carry no attributes: one class, named by --class-name or the folder."""
    folder = tmp_path / "balloon"
    folder.mkdir()
    project = json.loads(_via_project(folder).read_text())
    for entry in project["_via_img_metadata"].values():
        for region in entry["regions"]:
            region["region_attributes"] = {}
    path = folder / "via_region_data.json"
    path.write_text(json.dumps(project))

    conv = via_to_coco(path, output_dir=tmp_path)
    assert [c["name"] for c in conv.coco["categories"]] == ["balloon"]
    assert len(conv.coco["annotations"]) == 4
    assert any("single-class project" in kind for kind in conv.warnings)

    named = via_to_coco(path, output_dir=tmp_path, class_name="ball")
    assert [c["name"] for c in named.coco["categories"]] == ["ball"]
    assert {a["category_id"] for a in named.coco["annotations"]} == {1}
    with pytest.raises(DataError, match="no region attribute 'kind'.*--class-name"):
        via_to_coco(path, output_dir=tmp_path, class_attribute="kind")
