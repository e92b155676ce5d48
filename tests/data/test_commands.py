"""``instaseg data check|stats|convert`` through the CLI entry point, with exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from instaseg.cli import main


def test_stats_json_and_preview(tmp_path: Path, capsys) -> None:
    preview = tmp_path / "p.png"
    assert main(["data", "stats", "shapes:5:64", "--json", "--preview", str(preview)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["images"] == 5 and stats["preview"] == str(preview)
    assert preview.is_file()


def test_check_clean_and_broken(tmp_path: Path, capsys) -> None:
    assert main(["data", "check", "shapes:4:32"]) == 0
    assert "no problems found" in capsys.readouterr().out
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": [[1, 1, 2, 2]]}],
        "categories": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    assert main(["data", "check", f"coco:{tmp_path / 'ann.json'}:{tmp_path}", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert set(report["problems"]) == {"unknown_category", "degenerate_polygon"}


def test_unusable_input_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "cut.json").write_text('{"images": [')
    assert main(["data", "check", f"coco:{tmp_path / 'cut.json'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("instaseg: error:") and "cut.json" in err[0]
    assert main(["data", "stats", "nosuchformat:abc"]) == 2
    assert "unknown dataset format" in capsys.readouterr().err
    assert main(["data", "stats", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_convert_labelme_then_check(shared_data: Path, tmp_path: Path, capsys) -> None:
    src = shared_data / "labelme_voc" / "data_annotated"
    out = tmp_path / "lm.json"
    labels = shared_data / "labelme_voc" / "labels.txt"
    assert main(["data", "convert", str(src), str(out), "--labels", str(labels)]) == 0
    assert "12 instances" in capsys.readouterr().out
    assert len(json.loads(out.read_text())["annotations"]) == 12
    # Refuses to overwrite without --overwrite, and the file stays as it was.
    before = out.read_bytes()
    assert main(["data", "convert", str(src), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["data", "convert", str(src), str(out), "--overwrite"]) == 0
    assert main(["data", "check", f"coco:{out}"]) == 0
    # Pointing stats at the labelme folder itself explains what to do.
    assert main(["data", "stats", str(src)]) == 2
    assert "labelme" in capsys.readouterr().err


def test_convert_spec_and_bad_from(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.json"
    assert main(["data", "convert", "shapes:3:32", str(out)]) == 0
    assert main(["data", "stats", f"coco:{out}", "--json"]) == 0
    lines = capsys.readouterr().out
    assert '"images": 3' in lines
    assert main(["data", "convert", "shapes:3:32", str(tmp_path / "t.json"), "--from", "xml"]) == 2


def test_convert_detects_via(tmp_path: Path, capsys) -> None:
    from tests.data.test_via import _via_project

    project = _via_project(tmp_path)
    out = tmp_path / "out" / "via.json"
    assert main(["data", "convert", str(project), str(out)]) == 0
    assert "(via)" in capsys.readouterr().out
    assert main(["data", "check", f"coco:{out}"]) == 0
    (tmp_path / "other.json").write_text('{"hello": 1}')
    assert main(["data", "convert", str(tmp_path / "other.json"), str(tmp_path / "x.json")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    # A single-class project: the user names the class.
    data = json.loads(project.read_text())
    for entry in data["_via_img_metadata"].values():
        for region in entry["regions"]:
            region["region_attributes"] = {}
    project.write_text(json.dumps(data))
    named = tmp_path / "out" / "named.json"
    assert main(["data", "convert", str(project), str(named), "--class-name", "pedestrian"]) == 0
    assert [c["name"] for c in json.loads(named.read_text())["categories"]] == ["pedestrian"]
