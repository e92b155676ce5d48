"""VIA 2 projects -> COCO: shapes, class attributes, a single-class project, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.data.convert import write_conversion
from instaseg.data.via import via_to_coco
from instaseg.errors import DataError


def _png(path: Path, h: int = 60, w: int = 80) -> Path:
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)
    return path


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
