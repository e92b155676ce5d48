"""``instaseg data check`` / ``stats`` on panoptic sets: every problem a counted finding (exit 1, no
traceback), the real samples clean."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.cli import main
from instaseg.data.base import Record
from instaseg.data.check import CheckReport, check_panoptic_record
from instaseg.data.coco_panoptic import read_panoptic_png
from instaseg.structures.panoptic import PanopticResult, PanopticSegment, id_to_rgb

DATA = os.environ.get("INSTASEG_DATA")
needs_data = pytest.mark.skipif(not DATA, reason="INSTASEG_DATA (the shared real data) is not set")


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    src = Path(DATA) / "coco_panoptic_sample"
    shutil.copy(src / "panoptic_examples.json", tmp_path / "pan.json")
    shutil.copytree(src / "panoptic_examples", tmp_path / "pan")
    return tmp_path / "pan.json", tmp_path / "pan"


def _edit_json(js: Path, fn) -> None:
    data = json.loads(js.read_text())
    fn(data)
    js.write_text(json.dumps(data))


def _edit_png(png: Path, fn) -> None:
    Image.fromarray(id_to_rgb(fn(read_panoptic_png(png)))).save(png)


def _paint_void(ids: np.ndarray) -> np.ndarray:
    """16 VOID pixels get an id nobody lists (no listed segment changes its area)."""
    ys, xs = np.nonzero(ids == 0)
    ids[ys[:16], xs[:16]] = 99
    return ids


def _segments(image: int):
    return lambda data: data["annotations"][image]["segments_info"]


def _absent(js: Path, d: Path) -> None:
    _edit_json(js, lambda data: _segments(0)(data).append({"id": 12345, "category_id": 1, "area": 10}))


def _duplicate(js: Path, d: Path) -> None:
    _edit_json(js, lambda data: _segments(0)(data).append(dict(_segments(0)(data)[0])))


CASES = {
    "missing_png": lambda js, d: (d / "000000142238.png").unlink(),
    "unreadable_png": lambda js, d: (d / "000000142238.png").write_text("not a png"),
    "png_size_mismatch": lambda js, d: _edit_png(d / "000000142238.png", lambda ids: ids[:200]),
    "unlisted_segment_id": lambda js, d: _edit_png(d / "000000142238.png", _paint_void),
    "absent_segment": _absent,
    "duplicate_segment_id": _duplicate,
    "unknown_category": lambda js, d: _edit_json(js, lambda data: _segments(1)(data)[0].update(
        category_id=999)),
    "segment_area_mismatch": lambda js, d: _edit_json(js, lambda data: _segments(1)(data)[0].update(area=1)),
    "duplicate_image_id": lambda js, d: _edit_json(js, lambda data: data["annotations"].append(
        dict(data["annotations"][0]))),
}


@needs_data
@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_panoptic_problem_is_one_finding(tmp_path: Path, capsys, kind: str) -> None:
    js, pngs = _copy(tmp_path)
    CASES[kind](js, pngs)
    images = Path(DATA) / "coco_panoptic_sample" / "input_images"
    code = main(["data", "check", f"coco_panoptic:{js}:{pngs}:{images}", "--json"])
    out = capsys.readouterr()
    assert code == 1 and "Traceback" not in out.err
    problems = json.loads(out.out)["problems"]
    assert list(problems) == [kind], problems
    assert problems[kind]["count"] == 1


@needs_data
def test_real_panoptic_samples_are_clean_and_counted(tmp_path: Path, capsys) -> None:
    src = Path(DATA) / "coco_panoptic_sample"
    spec = f"coco_panoptic:{src}/panoptic_examples.json:{src}/panoptic_examples:{src}/input_images"
    assert main(["data", "check", spec]) == 0
    assert main(["data", "check", f"cityscapes_panoptic:{Path(DATA) / 'cityscapes_sample'}"]) == 0
    capsys.readouterr()
    assert main(["data", "stats", spec, "--json"]) == 0
    pan = json.loads(capsys.readouterr().out)["panoptic"]
    assert pan["segments"] == 50 and pan["segments_per_image"] == {"min": 18, "mean": 25.0, "max": 32}
    assert pan["segment_kinds"] == {"thing": 40, "stuff": 7, "crowd": 3}
    assert abs(sum(pan["pixel_share"].values()) - 1) < 1e-3 and pan["pixel_share"]["void"] > 0
    assert pan["per_class"]["person"]["segments"] == 28
    assert main(["data", "stats", spec, "--preview", str(tmp_path / "p.png"), "--num-preview", "1"]) == 0
    preview = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    grass = next(c for c in json.loads((Path(DATA) / "coco_panoptic_sample" / "panoptic_examples.json")
                                       .read_text())["categories"] if c["name"] == "grass-merged")
    # stuff is drawn: grass blended 55% over the image leaves its hue; instance-only previews have none
    tint = np.abs(preview.astype(int) - np.array(grass["color"])).sum(-1) < 120
    assert tint.mean() > 0.05


def test_record_panoptic_findings() -> None:
    ids = np.zeros((4, 4), np.int32)
    ids[:2] = 3
    ids[2:] = 5  # not listed
    pan = PanopticResult(ids, [PanopticSegment(3, 1, True), PanopticSegment(8, 2, False)])  # 8 absent
    rec = Record(np.zeros((4, 5, 3), np.uint8), np.zeros((0, 4, 5), bool), np.zeros(0, np.int64),
                 np.zeros(0, np.int64), 0, extra={"panoptic": pan})
    report = CheckReport("x")
    check_panoptic_record(rec, "#0", report)
    assert report.counts == {"png_size_mismatch": 1, "unlisted_segment_id": 1, "absent_segment": 1}
